"""A bundle's sessions in onnxruntime, driven exactly as transformers.js drives them: the one runtime that
parity checks, `eval`, the demo and the benchmarks share.

What transformers.js 4.x does per step (`Gemma3nForConditionalGeneration.forward`, `decoder_forward`):
`embed_tokens` on the step's ids; on the prefill step only, encoder features overwrite the rows of their
placeholder ids (counts must match exactly); empty [B, kv_heads, 0, head_dim] pasts on the first step
(symbols other than `batch_size` set to 0); `position_ids = cumsum(attention_mask) - 1`; presents fed back
as pasts; and only the inputs the graph declares. No torch here: everything is numpy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gemma3n.errors import UserError
from gemma3n.modalities import ENCODER_SESSIONS, TEXT_SESSIONS
from web_export.manifest import Manifest

SESSION_NAMES = (*TEXT_SESSIONS, *ENCODER_SESSIONS.values())
BATCH = "batch_size"


@dataclass
class Prompt:
    """Token ids [1, S], with the encoder inputs their placeholder tokens stand for."""

    input_ids: np.ndarray
    pixel_values: np.ndarray | None = None
    input_features: np.ndarray | None = None
    input_features_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.input_ids = np.asarray(self.input_ids, dtype=np.int64).reshape(1, -1)

    @property
    def ids(self) -> list[int]:
        return self.input_ids[0].tolist()

    def with_ids(self, ids: Iterable[int]) -> Prompt:
        """The same encoder inputs in front of other ids (a prompt followed by a continuation)."""
        return Prompt(np.asarray(list(ids)), self.pixel_values, self.input_features, self.input_features_mask)


@dataclass
class State:
    """What a cached decode carries from one step to the next."""

    attention_mask: np.ndarray
    past: dict[str, np.ndarray] = field(default_factory=dict)


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


class BundleRuntime:
    """One dtype's sessions of an exported Gemma 3n in onnxruntime (CPU)."""

    def __init__(self, paths: dict[str, Path], image_token_id: int | None = None,
                 audio_token_id: int | None = None, threads: int | None = None, rows: Path | None = None) -> None:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        started = time.perf_counter()
        self.sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                         for name, path in paths.items()}
        self.load_seconds = time.perf_counter() - started
        self.image_token_id = image_token_id
        self.audio_token_id = audio_token_id
        self.rows = rows  # a streamed bundle's row file, read in place of its stand-in embed_tokens session

    @classmethod
    def from_folder(cls, onnx_dir: Path, suffix: str = "", *, image_token_id: int | None = None,
                    audio_token_id: int | None = None) -> BundleRuntime:
        """`<session><suffix>.onnx` for each session present in `onnx_dir` ("" is fp32, "_q4" ...)."""
        paths = {name: Path(onnx_dir) / f"{name}{suffix}.onnx" for name in SESSION_NAMES}
        return cls({n: p for n, p in paths.items() if p.is_file()}, image_token_id, audio_token_id)

    @classmethod
    def from_bundle(cls, bundle: Path, dtype: str | None = None, only: Iterable[str] | None = None,
                    threads: int | None = None) -> BundleRuntime:
        """One dtype's sessions of a bundle, as its manifest lists them (default: the bundle's default dtype)."""
        bundle = Path(bundle)
        manifest = Manifest.load(bundle)
        try:
            config = json.loads((bundle / "config.json").read_text())
        except (OSError, ValueError):
            raise UserError(f"{bundle} has no readable config.json: pass a bundle written by `matslice export`"
                            ) from None
        dtype = dtype or manifest.default_dtype
        paths = {name: bundle / files[dtype]["file"] for name, files in manifest.data["sessions"].items()
                 if dtype in files and (only is None or name in only)}
        if "decoder_model_merged" not in paths:
            raise UserError(f"{bundle} has no {dtype} decoder: export it with `matslice export --dtype {dtype}`")
        streamed = manifest.data["sessions"]["embed_tokens"].get(dtype, {}).get("rows")
        if streamed and "embed_tokens" in paths:
            del paths["embed_tokens"]
        rows = bundle / streamed["file"] if streamed and (only is None or "embed_tokens" in only) else None
        return cls(paths, config.get("image_token_id"), config.get("audio_token_id"), threads, rows)

    @property
    def vocab_size(self) -> int:
        return self.sessions["decoder_model_merged"].get_outputs()[0].shape[-1]

    def run(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one session with the feeds it declares (like transformers.js's `pick`)."""
        session = self.sessions[name]
        declared = [i.name for i in session.get_inputs()]
        outputs = session.run(None, {k: feeds[k] for k in declared})
        return dict(zip([o.name for o in session.get_outputs()], outputs, strict=True))

    def embed(self, prompt: Prompt, prefill: bool) -> tuple[np.ndarray, np.ndarray]:
        """embed_tokens, then on the prefill step the encoder features over their placeholder rows."""
        ids = prompt.input_ids
        if self.rows is not None:
            from web_export.rows import decode

            embeds, per_layer = decode(self.rows, ids.reshape(-1))
            embeds, per_layer = embeds.reshape(*ids.shape, -1), per_layer.reshape(*ids.shape, *per_layer.shape[1:])
        else:
            out = self.run("embed_tokens", {"input_ids": ids})
            embeds, per_layer = out["inputs_embeds"], out["per_layer_inputs"]
        if prefill and prompt.pixel_values is not None:
            features = self.run("vision_encoder", {"pixel_values": prompt.pixel_values})["image_features"]
            scatter_rows(embeds, ids == self.image_token_id, features)
        if prefill and prompt.input_features is not None:
            feeds = {"input_features": prompt.input_features.astype(np.float32),
                     "input_features_mask": prompt.input_features_mask}
            scatter_rows(embeds, ids == self.audio_token_id, self.run("audio_encoder", feeds)["audio_features"])
        return embeds, per_layer

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        """Zero-length pasts from the declared shapes: batch_size -> batch, other symbols -> 0."""
        past = {}
        for meta in self.sessions["decoder_model_merged"].get_inputs():
            if meta.name.startswith("past_key_values."):
                shape = [d if isinstance(d, int) else (batch if d == BATCH else 0) for d in meta.shape]
                past[meta.name] = np.zeros(shape, dtype=np.float32)
        return past

    def decode(self, embeds: np.ndarray, per_layer: np.ndarray, state: State, keep: int) -> np.ndarray:
        """One decoder call over `embeds` (the mask already covers them); keeps the last `keep` logits (0: all)
        and advances `state`'s pasts."""
        feeds = {"inputs_embeds": embeds, "per_layer_inputs": per_layer, "attention_mask": state.attention_mask,
                 "position_ids": position_ids(state.attention_mask, embeds.shape[1]),
                 "num_logits_to_keep": np.array(keep, dtype=np.int64), **state.past}
        out = self.run("decoder_model_merged", feeds)
        state.past = {k.replace("present", "past_key_values"): v for k, v in out.items() if k.startswith("present")}
        return out["logits"][0]

    def prefill(self, prompt: Prompt, keep: int = 1) -> tuple[np.ndarray, State]:
        """The prompt's logits (the last `keep`, 0: every position) and the state to decode on from."""
        state = State(np.ones(prompt.input_ids.shape, dtype=np.int64), self.empty_past(batch=1))
        embeds, per_layer = self.embed(prompt, prefill=True)
        return self.decode(embeds, per_layer, state, keep), state

    def step(self, token: int, state: State) -> np.ndarray:
        """The next position's logits [1, vocab] after feeding `token`."""
        state.attention_mask = np.concatenate([state.attention_mask, np.ones((1, 1), dtype=np.int64)], axis=1)
        embeds, per_layer = self.embed(Prompt(np.array([token])), prefill=False)
        return self.decode(embeds, per_layer, state, 1)

    def generate(self, prompt: Prompt, max_new_tokens: int, eos: Iterable[int] = ()) -> Iterator[tuple[int, float]]:
        """Greedy ids one by one, each with the seconds of compute it took; stops after an id in `eos`."""
        stop = set(eos)
        started = time.perf_counter()
        logits, state = self.prefill(prompt)
        for step in range(max_new_tokens):
            token = int(logits[-1].argmax())
            yield token, time.perf_counter() - started
            if token in stop or step == max_new_tokens - 1:
                return
            started = time.perf_counter()
            logits = self.step(token, state)

    def greedy(self, prompt: Prompt, steps: int) -> tuple[list[np.ndarray], list[int]]:
        """Prefill (every position's logits) plus `steps` cached greedy steps (one row each), and the ids."""
        logits, state = self.prefill(prompt, keep=0)
        all_logits, ids = [logits], [int(logits[-1].argmax())]
        for _ in range(steps):
            logits = self.step(ids[-1], state)
            all_logits.append(logits)
            ids.append(int(logits[-1].argmax()))
        return all_logits, ids

    def logits(self, prompt: Prompt) -> np.ndarray:
        """Teacher-forced logits [S, vocab] at every position of the prompt (no cache kept)."""
        return self.prefill(prompt, keep=0)[0]
