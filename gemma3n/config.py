"""A Gemma 3n config.json, read once into frozen, typed values, with no torch and no transformers import.

A checkpoint is either multimodal (`model_type: gemma3n`, the decoder under `text_config`, plus audio and
vision towers) or text-only (`model_type: gemma3n_text`). `load_config` checks which, fills what a
hand-written config may omit from the E4B defaults transformers uses, checks the per-layer lists, and
returns a `ModelConfig`; everything downstream reads its fields. The raw JSON is kept only so that a
child's config.json carries every field MatSlice does not interpret, unchanged (`ModelConfig.to_json`).

The one structural question the stages keep asking is answered here too: which layers own a KV cache,
which store it for others, and which reuse it (`TextConfig.kv_roles`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from gemma3n.errors import UserError

KvRole = Literal["own", "store", "reuse"]

MULTIMODAL = "gemma3n"
TEXT_ONLY = "gemma3n_text"
MULTIMODAL_CLASS = "Gemma3nForConditionalGeneration"
TEXT_ONLY_CLASS = "Gemma3nForCausalLM"


@cache
def _builtin() -> dict[str, Any]:
    return json.loads(resources.files("gemma3n.data").joinpath("gemma3n-e4b-config.json").read_text())


def e4b_json() -> dict[str, Any]:
    """The full-size Gemma 3n E4B config.json (transformers' defaults), as a fresh dict."""
    return copy.deepcopy(_builtin())


@dataclass(frozen=True)
class TextConfig:
    """The decoder's numbers, every per-layer list present and as long as the layer count."""

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: tuple[int, ...]
    layer_types: tuple[str, ...]
    activation_sparsity_pattern: tuple[float, ...]
    num_kv_shared_layers: int
    vocab_size: int
    vocab_size_per_layer_input: int
    hidden_size_per_layer_input: int
    head_dim: int
    num_attention_heads: int
    num_key_value_heads: int
    altup_num_inputs: int
    laurel_rank: int
    sliding_window: int
    max_position_embeddings: int

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], where: str) -> TextConfig:
        text = {**_builtin()["text_config"], **raw}
        layers = int(text["num_hidden_layers"])
        types = raw.get("layer_types") or [
            "full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(layers)
        ]
        sparsity = raw.get("activation_sparsity_pattern")
        if sparsity is None:
            sparse = 10 if layers > 10 else 0
            sparsity = [0.95] * sparse + [0.0] * (layers - sparse)
        elif isinstance(sparsity, int | float):
            sparsity = [float(sparsity)] * layers
        widths = raw.get("intermediate_size", 16_384)
        if isinstance(widths, int):
            widths = [widths] * layers
        lists = {"intermediate_size": widths, "layer_types": types, "activation_sparsity_pattern": sparsity}
        for key, values in lists.items():
            if len(values) != layers:
                raise UserError(f"{where}: {key} has {len(values)} entries for {layers} layers: fix config.json")
        scalars = {f.name: int(text[f.name]) for f in fields(cls) if f.name not in lists}
        config = cls(**scalars, intermediate_size=tuple(int(w) for w in widths), layer_types=tuple(types),
                     activation_sparsity_pattern=tuple(float(s) for s in sparsity))
        config.kv_roles  # noqa: B018 (validates KV sharing at the boundary)
        return config

    def json(self) -> dict[str, Any]:
        """The fields as config.json writes them (lists, not tuples)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @property
    def first_shared(self) -> int:
        """The first layer that reuses another layer's KV cache (= the number of layers that own one)."""
        return self.num_hidden_layers - self.num_kv_shared_layers

    @cached_property
    def kv_roles(self) -> tuple[KvRole, ...]:
        """Each layer's part in KV sharing, as transformers >= 5 assigns it.

        Layers at or after `first_shared` reuse the KV cache of the last earlier layer of their own
        attention type (the "store" layer); all other layers own theirs.
        """
        first = self.first_shared
        roles: list[KvRole] = ["own" if i < first else "reuse" for i in range(self.num_hidden_layers)]
        if self.num_kv_shared_layers == 0:
            return tuple(roles)
        for kind in sorted(set(self.layer_types[first:]) - set(self.layer_types[:first])):
            raise UserError(
                f"no layer before the KV-shared ones is {kind}, so shared {kind} layers have no cache "
                f"to reuse: keep at least one {kind} layer before layer {first}"
            )
        for kind in set(self.layer_types[:first]):  # transformers marks every type's last owner
            roles[max(i for i in range(first) if self.layer_types[i] == kind)] = "store"
        return tuple(roles)

    def store_of(self, layer: int) -> int | None:
        """The index of the layer whose KV cache `layer` reads, or None if it owns one."""
        if layer < self.first_shared:
            return None
        return max(i for i in range(self.first_shared) if self.layer_types[i] == self.layer_types[layer])


@dataclass(frozen=True)
class AudioConfig:
    """The conformer audio encoder's numbers. Its feed-forward width is 4H, fixed by transformers."""

    hidden_size: int
    conf_num_hidden_layers: int
    conf_num_attention_heads: int
    conf_conv_kernel_size: int
    input_feat_size: int
    sscp_conv_channel_size: tuple[int, int]
    sscp_conv_kernel_size: tuple[tuple[int, int], ...]
    sscp_conv_stride_size: tuple[tuple[int, int], ...]
    vocab_size: int
    vocab_offset: int

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AudioConfig:
        audio = {**_builtin()["audio_config"], **raw}
        pairs = ("sscp_conv_kernel_size", "sscp_conv_stride_size")
        values = {f.name: int(audio[f.name]) for f in fields(cls) if f.name != "sscp_conv_channel_size"
                  and f.name not in pairs}
        return cls(**values, sscp_conv_channel_size=tuple(audio["sscp_conv_channel_size"]),
                   **{key: tuple(tuple(pair) for pair in audio[key]) for key in pairs})

    @property
    def ffn_width(self) -> int:
        return 4 * self.hidden_size


@dataclass(frozen=True)
class VisionConfig:
    """What MatSlice reads of the vision tower: its soft-token vocabulary and whether it is the stock timm net."""

    hidden_size: int
    vocab_size: int
    vocab_offset: int
    architecture: str
    customized: bool  # model_args given: the tower's size is known only from the checkpoint's own tensors

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> VisionConfig:
        vision = {**_builtin()["vision_config"], **raw}
        return cls(int(vision["hidden_size"]), int(vision["vocab_size"]), int(vision["vocab_offset"]),
                   str(vision["architecture"]), bool(vision.get("model_args")))


@dataclass(frozen=True)
class ModelConfig:
    """One checkpoint's config: the decoder, the towers it has, and the config.json it was read from."""

    source: Mapping[str, Any]  # the JSON as read: written back for every field not modelled here
    text: TextConfig
    audio: AudioConfig | None = None
    vision: VisionConfig | None = None

    @property
    def multimodal(self) -> bool:
        return self.audio is not None

    @property
    def model_type(self) -> str:
        return MULTIMODAL if self.multimodal else TEXT_ONLY

    @property
    def modalities(self) -> tuple[str, ...]:
        return ("text", "audio", "vision") if self.multimodal else ("text",)

    @property
    def text_prefix(self) -> str:
        """Where the decoder's tensors live in the checkpoint."""
        return "model.language_model." if self.multimodal else "model."

    @property
    def record(self) -> Mapping[str, Any]:
        """The slice a MatSlice child was made by (`matslice` in config.json), or {} for a parent."""
        return self.source.get("matslice") or {}

    @property
    def live_audio_ffn(self) -> int | None:
        """The audio feed-forward units a slice kept (the rest are zero), or None when all are live."""
        return (self.record.get("audio") or {}).get("ffn_dim")

    @property
    def weight_dtype(self) -> str:
        return str(self.source.get("dtype") or self.source.get("torch_dtype") or "bfloat16")

    def to_json(self) -> dict[str, Any]:
        """The config.json of this config: the source with every modelled field written over it."""
        out = copy.deepcopy(dict(self.source))
        if not self.multimodal:
            return out | self.text.json()
        out["text_config"] = {**out.get("text_config", {}), **self.text.json()}
        audio = asdict(self.audio)
        for key in ("sscp_conv_kernel_size", "sscp_conv_stride_size"):
            audio[key] = [list(pair) for pair in audio[key]]
        audio["sscp_conv_channel_size"] = list(audio["sscp_conv_channel_size"])
        out["audio_config"] = {**out.get("audio_config", {}), **audio}
        out["vision_config"] = {**out.get("vision_config", {}), "vocab_size": self.vision.vocab_size,
                                "vocab_offset": self.vision.vocab_offset}
        return out


def parse_config(raw: Mapping[str, Any], where: str) -> ModelConfig:
    """Check that `raw` is a Gemma 3n config and read it (`where` names it in error messages)."""
    model_type = raw.get("model_type")
    if model_type not in (MULTIMODAL, TEXT_ONLY):
        raise UserError(f"{where} has model_type {model_type!r}, not a Gemma 3n model: "
                        f"MatSlice reads 'gemma3n' and 'gemma3n_text' checkpoints only")
    if model_type == TEXT_ONLY:
        return ModelConfig(raw, TextConfig.from_json(raw, where))
    return ModelConfig(raw, TextConfig.from_json(raw.get("text_config", {}), where),
                       AudioConfig.from_json(raw.get("audio_config", {})),
                       VisionConfig.from_json(raw.get("vision_config", {})))


def load_config(model: Path) -> ModelConfig:
    """Read `model/config.json` (or a config file itself) and check that it is Gemma 3n."""
    path = model / "config.json" if model.is_dir() else model
    if not path.is_file():
        raise UserError(f"{model} has no config.json: pass a Gemma 3n checkpoint folder (or its config.json)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}): restore the file") from None
    return parse_config(raw, str(path))


def e4b_config() -> ModelConfig:
    """The full-size Gemma 3n E4B config, for `plan` with no model at hand."""
    return parse_config(e4b_json(), "the built-in E4B config")
