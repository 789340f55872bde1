"""fp32 parity of the exported sessions against the PyTorch model, driven the way transformers.js drives them.

The reference is the unmodified checkpoint run by transformers (eager attention, a config-less
DynamicCache, greedy decoding). The ONNX side repeats what `Gemma3nForConditionalGeneration.forward`
and `decoder_forward` do in transformers.js 4.x: embed_tokens on every step, encoder features scattered
over the placeholder rows on the prefill step, empty [B, kv_heads, 0, head_dim] pasts on the first
step, position_ids = cumsum(attention_mask) - 1, presents fed back as pasts, and only the inputs the
graph declares. Each side decodes greedily on its own, so diverging ids show up as diverging logits.
The decode runs well past the sliding window so the mask-based window over a full-history cache is
exercised on both the KV-owning and the KV-sharing layers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from transformers import DynamicCache

from slicer.errors import SliceError
from web_export.checkpoint import Gemma3nParts, load_parts
from web_export.encoders import AudioEncoderSession, VisionEncoderSession
from web_export.export import ONNX_SUBDIR
from web_export.sessions import BATCH, MODALITY_SESSIONS, wanted_modalities

SESSION_NAMES = ("embed_tokens", "decoder_model_merged", *MODALITY_SESSIONS.values())
AUDIO_FRAMES = 100
AUDIO_VALID_FRAMES = 80  # the rest is padding, so the mask polarity matters


@dataclass
class ParityInputs:
    """One fixed prompt, with the modality tensors its placeholder tokens stand for."""

    input_ids: torch.Tensor
    pixel_values: torch.Tensor | None = None
    input_features: torch.Tensor | None = None
    input_features_mask: torch.Tensor | None = None


@dataclass
class ParityReport:
    """Per-step max |logits diff| (step 0: all prompt positions) and both greedy id sequences."""

    logits_max_diff: list[float]
    torch_ids: list[int]
    onnx_ids: list[int]
    encoder_max_diff: dict[str, float] = field(default_factory=dict)

    @property
    def max_logits_diff(self) -> float:
        return max(self.logits_max_diff)


def check_parity(
    model_dir: Path, out_dir: Path, steps: int = 24, modalities: set[str] | None = None, suffix: str = "",
    dequantized: bool = False,
) -> ParityReport:
    """Compare `out_dir/onnx/<session><suffix>.onnx` with the checkpoint on a fixed prompt and `steps`
    cached decode steps. `modalities` picks which encoders feed the prompt (None: all the checkpoint has).
    With `dequantized`, PyTorch first takes the sessions' own (dequantized) weights: the exact check for
    weight-only quantization (web_export/dequantized.py).
    """
    parts = load_parts(Path(model_dir))
    inputs = fixed_inputs(parts, modalities)
    runner = OnnxGemma3n.from_export(Path(out_dir) / ONNX_SUBDIR, parts, suffix)
    if dequantized:
        from web_export.dequantized import load_dequantized

        onnx_dir = Path(out_dir) / ONNX_SUBDIR
        load_dequantized(parts.model, [onnx_dir / f"{name}{suffix}.onnx" for name in runner.sessions])
    torch_logits, torch_ids = torch_greedy(parts, inputs, steps)
    onnx_logits, onnx_ids = runner.greedy(inputs, steps)
    diffs = [float(np.abs(a - b).max()) for a, b in zip(torch_logits, onnx_logits, strict=True)]
    return ParityReport(diffs, torch_ids, onnx_ids, encoder_diffs(parts, runner, inputs))


def fixed_inputs(parts: Gemma3nParts, modalities: set[str] | None = None) -> ParityInputs:
    """A short text prompt; on multimodal checkpoints, an image and a partly padded audio clip inside it."""
    wanted = wanted_modalities(parts, modalities)
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(
        3, min(parts.text_config.vocab_size_per_layer_input, 250), (12,), generator=generator
    )
    ids = [parts.text_config.bos_token_id, *text[:6].tolist()]
    inputs = ParityInputs(input_ids=torch.empty(0))
    cfg = parts.config
    if "vision" in wanted:
        ids += [cfg.boi_token_id, *[cfg.image_token_id] * cfg.vision_soft_tokens_per_image, cfg.eoi_token_id]
        inputs.pixel_values = torch.rand(1, 3, *parts.image_size, generator=generator)
    if "audio" in wanted:
        ids += [cfg.boa_token_id, *[cfg.audio_token_id] * cfg.audio_soft_tokens_per_image, cfg.eoa_token_id]
        feature_size = cfg.audio_config.input_feat_size
        inputs.input_features = torch.randn(1, AUDIO_FRAMES, feature_size, generator=generator)
        inputs.input_features_mask = torch.arange(AUDIO_FRAMES)[None, :] < AUDIO_VALID_FRAMES
    inputs.input_ids = torch.tensor([ids + text[6:].tolist()], dtype=torch.long)
    return inputs


@torch.no_grad()
def torch_greedy(parts: Gemma3nParts, inputs: ParityInputs, steps: int) -> tuple[list[np.ndarray], list[int]]:
    """Prefill plus `steps` cached greedy steps of the stock transformers model."""
    cache = DynamicCache()
    attention_mask = torch.ones_like(inputs.input_ids)
    multimodal = {
        k: v
        for k in ("pixel_values", "input_features", "input_features_mask")
        if (v := getattr(inputs, k)) is not None
    }
    out = parts.model(
        input_ids=inputs.input_ids, attention_mask=attention_mask, cache=cache, use_cache=True, **multimodal
    )
    all_logits, ids = [out.logits[0].numpy()], [int(out.logits[0, -1].argmax())]
    for _ in range(steps):
        attention_mask = torch.cat([attention_mask, torch.ones(1, 1, dtype=torch.long)], dim=1)
        token = torch.tensor([[ids[-1]]])
        out = parts.model(input_ids=token, attention_mask=attention_mask, cache=cache, use_cache=True)
        all_logits.append(out.logits[0].numpy())
        ids.append(int(out.logits[0, -1].argmax()))
    return all_logits, ids


class OnnxGemma3n:
    """The exported sessions in onnxruntime, called with transformers.js's feeds."""

    def __init__(self, paths: dict[str, Path], image_token_id: int | None, audio_token_id: int | None) -> None:
        self.sessions = {
            name: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) for name, path in paths.items()
        }
        self.image_token_id = image_token_id
        self.audio_token_id = audio_token_id

    @classmethod
    def from_export(cls, onnx_dir: Path, parts: Gemma3nParts, suffix: str = "") -> OnnxGemma3n:
        """`<session><suffix>.onnx` for each session present in `onnx_dir` ("" is fp32, "_q4" ...)."""
        paths = {name: Path(onnx_dir) / f"{name}{suffix}.onnx" for name in SESSION_NAMES}
        return cls({n: p for n, p in paths.items() if p.is_file()},
                   getattr(parts.config, "image_token_id", None), getattr(parts.config, "audio_token_id", None))

    @classmethod
    def from_bundle(cls, bundle: Path, dtype: str | None = None, only: Iterable[str] | None = None) -> OnnxGemma3n:
        """One dtype's sessions of a bundle, as its manifest lists them (default: the bundle's default dtype)."""
        manifest = json.loads((Path(bundle) / "manifest.json").read_text())
        config = json.loads((Path(bundle) / "config.json").read_text())
        dtype = dtype or manifest["default_dtype"]
        paths = {name: Path(bundle) / files[dtype]["file"] for name, files in manifest["sessions"].items()
                 if dtype in files and (only is None or name in only)}
        if "decoder_model_merged" not in paths:
            raise SliceError(f"{bundle} has no {dtype} decoder: export it with `matslice export --dtype {dtype}`")
        return cls(paths, config.get("image_token_id"), config.get("audio_token_id"))

    def run(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one session with the feeds it declares (like transformers.js's `pick`)."""
        session = self.sessions[name]
        declared = [i.name for i in session.get_inputs()]
        outputs = session.run(None, {k: feeds[k] for k in declared})
        return dict(zip([o.name for o in session.get_outputs()], outputs, strict=True))

    def embed(self, inputs: ParityInputs, prefill: bool) -> tuple[np.ndarray, np.ndarray]:
        """embed_tokens, then on the prefill step the encoder features over their placeholder rows."""
        input_ids = inputs.input_ids.numpy()
        out = self.run("embed_tokens", {"input_ids": input_ids})
        embeds, per_layer = out["inputs_embeds"], out["per_layer_inputs"]
        if prefill and inputs.pixel_values is not None:
            features = self.run("vision_encoder", {"pixel_values": inputs.pixel_values.numpy()})
            scatter_rows(embeds, input_ids == self.image_token_id, features["image_features"])
        if prefill and inputs.input_features is not None:
            feeds = {
                "input_features": inputs.input_features.numpy(),
                "input_features_mask": inputs.input_features_mask.numpy(),
            }
            scatter_rows(
                embeds, input_ids == self.audio_token_id, self.run("audio_encoder", feeds)["audio_features"]
            )
        return embeds, per_layer

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        """Zero-length pasts from the declared shapes: batch_size -> batch, other symbols -> 0."""
        past = {}
        for meta in self.sessions["decoder_model_merged"].get_inputs():
            if meta.name.startswith("past_key_values."):
                shape = [d if isinstance(d, int) else (batch if d == BATCH else 0) for d in meta.shape]
                past[meta.name] = np.zeros(shape, dtype=np.float32)
        return past

    def greedy(self, inputs: ParityInputs, steps: int) -> tuple[list[np.ndarray], list[int]]:
        """Prefill (all logits kept) plus `steps` cached greedy steps (one logit row kept)."""
        attention_mask = np.ones(inputs.input_ids.shape, dtype=np.int64)
        embeds, per_layer = self.embed(inputs, prefill=True)
        past = self.empty_past(batch=attention_mask.shape[0])
        all_logits, ids = [], []
        for step in range(steps + 1):
            if step:
                token = ParityInputs(input_ids=torch.tensor([[ids[-1]]]))
                embeds, per_layer = self.embed(token, prefill=False)
                attention_mask = np.concatenate([attention_mask, np.ones((1, 1), dtype=np.int64)], axis=1)
            feeds = {
                "inputs_embeds": embeds,
                "per_layer_inputs": per_layer,
                "attention_mask": attention_mask,
                "position_ids": position_ids(attention_mask, embeds.shape[1]),
                "num_logits_to_keep": np.array(1 if step else 0, dtype=np.int64),
                **past,
            }
            out = self.run("decoder_model_merged", feeds)
            past = {
                k.replace("present", "past_key_values"): v for k, v in out.items() if k.startswith("present")
            }
            all_logits.append(out["logits"][0])
            ids.append(int(out["logits"][0, -1].argmax()))
        return all_logits, ids


def position_ids(attention_mask: np.ndarray, query_length: int) -> np.ndarray:
    """transformers.js `create_position_ids`: cumsum(mask) - 1, 1 on padding, last `query_length` kept."""
    positions = np.cumsum(attention_mask, axis=1) - 1
    positions[attention_mask == 0] = 1
    return positions[:, -query_length:].astype(np.int64)


def scatter_rows(embeds: np.ndarray, placeholder: np.ndarray, features: np.ndarray) -> None:
    """Overwrite placeholder rows in order with the flattened feature rows; counts must match exactly."""
    rows = features.reshape(-1, features.shape[-1])
    if int(placeholder.sum()) != rows.shape[0]:
        raise ValueError(f"{int(placeholder.sum())} placeholder tokens but {rows.shape[0]} feature rows")
    embeds[placeholder] = rows


@torch.no_grad()
def encoder_diffs(parts: Gemma3nParts, runner: OnnxGemma3n, inputs: ParityInputs) -> dict[str, float]:
    """Max |diff| of each encoder session's output against its PyTorch wrapper on the same inputs."""
    diffs = {}
    if inputs.pixel_values is not None:
        expected = VisionEncoderSession(parts)(inputs.pixel_values).numpy()
        got = runner.run("vision_encoder", {"pixel_values": inputs.pixel_values.numpy()})["image_features"]
        diffs["vision_encoder"] = float(np.abs(expected - got).max())
    if inputs.input_features is not None:
        expected = AudioEncoderSession(parts)(inputs.input_features, inputs.input_features_mask).numpy()
        feeds = {
            "input_features": inputs.input_features.numpy(),
            "input_features_mask": inputs.input_features_mask.numpy(),
        }
        got = runner.run("audio_encoder", feeds)["audio_features"]
        diffs["audio_encoder"] = float(np.abs(expected - got).max())
    return diffs
