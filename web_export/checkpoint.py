"""Load a Gemma 3n checkpoint and expose the parts the web sessions are cut from.

Export and parity both need the same view of a checkpoint, whether it is the multimodal
`Gemma3nForConditionalGeneration` (model_type gemma3n) or the text-only `Gemma3nForCausalLM`
(model_type gemma3n_text): the text model, the LM head, and the two multimodal embedders when present.
The loader forces fp32 and eager attention so that the traced graph is the plain matmul/softmax path
that onnxruntime reproduces, and never touches the network. The image size is read from the
checkpoint's processor files because it is what transformers.js resizes to, and the vision graph is
exported for exactly that size.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from transformers import (
    Gemma3nConfig,
    Gemma3nForCausalLM,
    Gemma3nForConditionalGeneration,
    Gemma3nTextConfig,
)
from transformers.models.gemma3n.modeling_gemma3n import Gemma3nTextMLP

from gemma3n.config import load_config
from gemma3n.errors import UserError
from gemma3n.safetensors import read_tensors
from web_export.weights import CheckpointTensor

DEFAULT_IMAGE_SIZE = (768, 768)  # Gemma 3n's published image processor


@dataclass(frozen=True)
class Gemma3nParts:
    """The modules of one loaded checkpoint that the sessions wrap."""

    model: nn.Module
    text_model: nn.Module
    lm_head: nn.Linear
    text_config: Gemma3nTextConfig
    config: Gemma3nConfig | Gemma3nTextConfig
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
    # For a skeleton (`load_skeleton`): id(placeholder parameter) -> the checkpoint tensor it stands for.
    sources: dict[int, CheckpointTensor] = field(default_factory=dict)

    @property
    def is_multimodal(self) -> bool:
        return isinstance(self.model, Gemma3nForConditionalGeneration)


def load_parts(model_dir: Path) -> Gemma3nParts:
    """Load the checkpoint at `model_dir` and name its parts (zeroed audio FFN units physically dropped)."""
    model = load_model(model_dir)
    drop_dead_audio_units(model, load_config(Path(model_dir)).live_audio_ffn)
    return split_parts(model, read_image_size(model_dir))


def load_skeleton(model_dir: Path) -> Gemma3nParts:
    """The checkpoint's modules with every parameter a zero-memory placeholder of its shape, for tracing.

    Tracing needs shapes, never values, so nothing is read but the config: each parameter becomes a
    stride-0 view of one zero (full shape, 4 bytes), and `sources` says which checkpoint tensor it stands
    for, so the variant writers read the real values row block by row block. Buffers are computed by the
    modules' own constructors, as from_pretrained does. Tied weights stay one parameter (one source).
    """
    model_dir = Path(model_dir)
    cls = model_class(model_dir)
    config = cls.config_class.from_pretrained(model_dir, local_files_only=True)
    config._attn_implementation = "eager"
    with parameters_on_meta():
        model = cls(config)
    if getattr(config, "tie_word_embeddings", True):
        model.tie_weights()
    tensors = read_tensors(model_dir)
    placeholders: dict[int, nn.Parameter] = {}
    sources: dict[int, CheckpointTensor] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) not in placeholders:  # the first name of a tied parameter is the one the checkpoint stores
            if name not in tensors:
                raise UserError(f"{model_dir} has no tensor {name!r}: not a complete {config.model_type} checkpoint; "
                                "re-download or re-slice it")
            source = CheckpointTensor(tensors[name])
            if source.stored_shape != tuple(param.shape):
                raise UserError(f"{model_dir}: tensor {name!r} is {list(source.stored_shape)} but config.json "
                                f"implies {list(param.shape)}; the config does not belong to these weights")
            placeholder = _placeholder(param.shape)
            placeholders[id(param)], sources[id(placeholder)] = placeholder, source
        module_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(module_name), leaf, placeholders[id(param)])
    drop_dead_audio_units(model, load_config(model_dir).live_audio_ffn, sources)
    return replace(split_parts(model.eval(), read_image_size(model_dir)), sources=sources)


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create parameters on the meta device (no memory, no init) while buffers are computed for real."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _placeholder(shape: torch.Size) -> nn.Parameter:
    return nn.Parameter(torch.zeros((), dtype=torch.float32).expand(shape), requires_grad=False)


def drop_dead_audio_units(model: nn.Module, live: int | None,
                          sources: dict[int, CheckpointTensor] | None = None) -> int:
    """Narrow every conformer feed-forward to the live width a slice recorded (`matslice.audio.ffn_dim`).

    Transformers hard-codes the 4H width, so `matslice slice --audio-ffn-dim N` keeps the full tensors with
    the kept units first and the rest zero; the exported graph carries only the first N. Returns N or 0.
    In a skeleton the narrowed placeholders read only the kept rows/columns of their checkpoint tensors.
    """
    if not live or not isinstance(model, Gemma3nForConditionalGeneration):
        return 0
    for block in model.model.audio_tower.conformer:
        for ffw in (block.ffw_layer_start, block.ffw_layer_end):
            if ffw.ffw_layer_1.out_features == live:
                continue
            ffw.ffw_layer_1 = _narrowed(ffw.ffw_layer_1, sources, rows=live)
            ffw.ffw_layer_2 = _narrowed(ffw.ffw_layer_2, sources, cols=live)
    return live


def _narrowed(
    linear: nn.Linear, sources: dict[int, CheckpointTensor] | None, rows: int | None = None, cols: int | None = None
) -> nn.Linear:
    weight = linear.weight.data[:rows] if rows else linear.weight.data[:, :cols]
    narrow = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    source = (sources or {}).pop(id(linear.weight), None)
    if source is None:
        narrow.weight = nn.Parameter(weight.clone(), requires_grad=False)
    else:
        narrow.weight = _placeholder(weight.shape)
        sources[id(narrow.weight)] = source.narrowed(rows, cols)
    return narrow


def read_image_size(model_dir: Path) -> tuple[int, int]:
    """(height, width) the image processor resizes to: preprocessor_config.json, as transformers.js reads it,
    else the nested copy in processor_config.json, else Gemma 3n's default."""
    model_dir = Path(model_dir)
    for name, keys in (("preprocessor_config.json", ()), ("processor_config.json", ("image_processor",))):
        path = model_dir / name
        if not path.is_file():
            continue
        config = json.loads(path.read_text())
        for key in keys:
            config = config.get(key, {})
        if "height" in config.get("size", {}):
            return config["size"]["height"], config["size"]["width"]
    return DEFAULT_IMAGE_SIZE


def model_class(model_dir: Path) -> type[Gemma3nForConditionalGeneration | Gemma3nForCausalLM]:
    """The transformers class of a checkpoint folder (its config.json checked to be Gemma 3n)."""
    return Gemma3nForConditionalGeneration if load_config(Path(model_dir)).multimodal else Gemma3nForCausalLM


def load_model(model_dir: Path) -> nn.Module:
    """A fresh fp32, eager-attention, eval-mode copy of the checkpoint, loaded from disk only."""
    model = model_class(model_dir).from_pretrained(
        Path(model_dir), dtype=torch.float32, attn_implementation="eager", local_files_only=True
    )
    return model.eval()


def split_parts(model: nn.Module, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> Gemma3nParts:
    """Name the modules the sessions need, for either checkpoint class."""
    if isinstance(model, Gemma3nForConditionalGeneration):
        text_model = model.model.language_model
        text_config = model.config.text_config
    elif isinstance(model, Gemma3nForCausalLM):
        text_model = model.model
        text_config = model.config
    else:
        raise TypeError(f"unsupported model class {type(model).__name__}")
    return Gemma3nParts(model, text_model, model.lm_head, text_config, model.config, tuple(image_size))


def freeze_sparsity_cutoffs(text_model: nn.Module) -> int:
    """Replace the per-call Normal.icdf of activation sparsity by its value computed once in eager.

    The dynamo exporter cannot lower `prims.erf_inv` (web_export/TRAPS.md). The icdf depends only on
    the configured sparsity, so a float32 constant computed here by the very same call gives bit-identical
    outputs. Returns how many MLPs were patched.
    """
    patched = 0
    for module in text_model.modules():
        if isinstance(module, Gemma3nTextMLP) and module.activation_sparsity > 0.0:
            target = torch.tensor(module.activation_sparsity, dtype=torch.float32)
            multiplier = torch.distributions.normal.Normal(0, 1).icdf(target)
            module.register_buffer("sparsity_std_multiplier", multiplier, persistent=False)
            module._gaussian_topk = _frozen_gaussian_topk.__get__(module)
            patched += 1
    return patched


def _frozen_gaussian_topk(self: Gemma3nTextMLP, inputs: torch.Tensor) -> torch.Tensor:
    """`Gemma3nTextMLP._gaussian_topk` with the icdf read from a precomputed buffer."""
    std_multiplier = self.sparsity_std_multiplier.type(inputs.dtype)
    inputs_mean = torch.mean(inputs, dim=-1, keepdim=True)
    inputs_std = torch.std(inputs, dim=-1, keepdim=True, unbiased=False)
    cutoff_x = inputs_mean + inputs_std * std_multiplier
    return nn.functional.relu(inputs - cutoff_x)
