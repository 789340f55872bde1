"""A bundle before it exists: the bytes each session downloads in each dtype, its largest tensor, and the memory the
model takes at run time. Pure data: the config (and a customised vision tower's checkpoint headers) is all it reads.

Which weights a session reads, and how, is derived from the config the way the traced graphs read them (tests
compare both): every Linear is a MatMul, the embedding tables are Gathered, everything else (norms, scales,
convolutions) is read as it is. What each weight becomes in a dtype, split and placed, is `gemma3n.layout`'s, the
very functions the exporter writes with, so `data_bytes` (the data chunks plus the weights small enough to stay in
the .onnx file) and the largest tensor are exact. The .onnx graph's own size (nodes, names, a few traced constants)
is not known without tracing; `graph_bytes` estimates it with a linear model calibrated on exports
(slicer/data/graph_bytes.json, written by `python -m benchmarks.graph_bytes`, which records its samples and
residuals). The graph is about half of a tiny session's bytes and a fifth of a nano one's; the estimate is within
0.6 % of a session's total on its calibration exports, 0.03 % on a nano slice it was not calibrated on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from gemma3n import rows
from gemma3n.config import ModelConfig, TextConfig
from gemma3n.dtypes import DTYPES
from gemma3n.errors import UserError
from gemma3n.layout import (
    DEFAULT_MAX_FILE_BYTES,
    MAX_TENSOR_BYTES,
    ROTARY_SPLIT,
    Part,
    Use,
    aligned,
    int8_scalars,
    place,
    tensor_limit,
    weight_parts,
)
from gemma3n.modalities import ENCODER_SESSIONS, TEXT_SESSIONS, encoder_sessions
from gemma3n.shapes import audio_shapes, embedder_shapes, stock_vision_shapes, text_shapes

Shapes = Mapping[str, tuple[int, ...]]
TEXT_GRAPH_PREFIX = "text_model."  # the sessions hold the text model as `self.text_model` (web_export/decoder.py)
LM_HEAD = "lm_head.weight"  # tied to embed_tokens: the decoder multiplies by the embedding table


@dataclass(frozen=True)
class SessionWeight:
    """One checkpoint tensor as a session reads it: its initializer name in the traced graph, its shape there
    (a slice's dead audio FFN units dropped), and how the graph uses it."""

    name: str
    shape: tuple[int, ...]
    use: Use


@dataclass(frozen=True)
class SessionBytes:
    """What one session's files weigh in one dtype."""

    session: str
    dtype: str
    bytes: int  # download: data_bytes + graph_bytes
    data_bytes: int  # exact: the weights, in the data chunks (aligned) or inside the .onnx file
    graph_bytes: int  # estimated: the rest of the .onnx file
    largest_tensor: tuple[str, int]  # exact
    data_files: int = 0  # external data chunks (their count depends on the graph's tensor order only at the edges)
    rows_bytes: int = 0  # streamed embeddings: the row file, of which `bytes` counts what a page reads before any row


# --- What each session reads --------------------------------------------------------------------------------------
def _use(shape: tuple[int, ...]) -> Use:
    return "matmul" if len(shape) == 2 else "other"


def session_weights(config: ModelConfig, session: str, vision_tensors: Shapes | None = None) -> list[SessionWeight]:
    """The checkpoint tensors `session` reads, named as in its graph, with their use (see the module doc)."""
    text = config.text
    shapes = text_shapes(text, "")
    if session == "embed_tokens":
        weights = [SessionWeight(TEXT_GRAPH_PREFIX + name, shapes[name], "gather")
                   for name in ("embed_tokens.weight", "embed_tokens_per_layer.weight")]
        if config.multimodal:  # embedders of the image and audio hard tokens (web_export/decoder.py)
            for kind, tower in (("vision", config.vision), ("audio", config.audio)):
                embedder = embedder_shapes(tower.hidden_size, tower.vocab_size, text.hidden_size, f"embed_{kind}.")
                weights += [SessionWeight(f"embed_{kind}.embedding.weight", embedder[f"embed_{kind}.embedding.weight"],
                                          "gather")]
                weights += [SessionWeight(name, embedder[name], _use(embedder[name])) for name in
                            (f"embed_{kind}.hard_embedding_norm.weight", f"embed_{kind}.embedding_projection.weight")]
        return weights
    if session == "decoder_model_merged":
        tables = ("embed_tokens.weight", "embed_tokens_per_layer.weight")
        weights = [SessionWeight(TEXT_GRAPH_PREFIX + name, shape, _use(shape))
                   for name, shape in shapes.items() if name not in tables]
        return [*weights, SessionWeight(LM_HEAD, shapes["embed_tokens.weight"], "matmul"), *rotary_tables(text)]
    if not config.multimodal or session not in ENCODER_SESSIONS.values():
        raise UserError(f"no session {session!r} in a {config.model_type} bundle: "
                        f"choose from {', '.join(bundle_sessions(config))}")
    if session == "audio_encoder":
        audio = config.audio
        live, full = config.live_audio_ffn or audio.ffn_width, audio.ffn_width
        weights = []
        for name, shape in audio_shapes(audio).items():  # the exporter drops a slice's zeroed FFN units
            if name.endswith("ffw_layer_1.weight"):
                shape = (live, shape[1]) if shape[0] == full else shape
            elif name.endswith("ffw_layer_2.weight"):
                shape = (shape[0], live) if shape[1] == full else shape
            weights.append(SessionWeight(name, shape, _use(shape)))
        embedder = embedder_shapes(audio.hidden_size, audio.vocab_size, text.hidden_size, "model.embed_audio.")
        uses: dict[str, Use] = {"embedding.weight": "gather"}  # the padding row is looked up in the graph
        return weights + [SessionWeight(name, shape, uses.get(name.removeprefix("model.embed_audio."), _use(shape)))
                          for name, shape in embedder.items()]
    vision = config.vision
    tower = vision_tensors if vision_tensors is not None else stock_vision_tensors(vision.architecture,
                                                                                    vision.customized)
    embedder = embedder_shapes(vision.hidden_size, vision.vocab_size, text.hidden_size, "model.embed_vision.")
    read = ("model.embed_vision.soft_embedding_norm.weight", "model.embed_vision.embedding_projection.weight")
    return ([SessionWeight(name, tuple(shape), _use(tuple(shape))) for name, shape in tower.items()]
            + [SessionWeight(name, embedder[name], _use(embedder[name])) for name in read])


def rotary_tables(text: TextConfig) -> list[SessionWeight]:
    """The cos/sin tables the decoder computes rotary embeddings from (web_export/decoder.TableRotaryEmbedding):
    per attention type, a coarse and a fine table of each, traced as constants and named after their buffers."""
    coarse = -(-text.max_position_embeddings // ROTARY_SPLIT)
    return [SessionWeight(f"rotary.{kind}_{part}_{fn}", (rows, text.head_dim // 2), "constant")
            for kind in sorted(set(text.layer_types)) for part, rows in (("hi", coarse), ("lo", ROTARY_SPLIT))
            for fn in ("cos", "sin")]


def stock_vision_tensors(architecture: str, customized: bool = False) -> Shapes:
    """A stock vision tower's tensors (gemma3n.shapes); a customised one (`model_args`) only its checkpoint knows."""
    tower = None if customized else stock_vision_shapes(architecture)
    if tower is None:
        what = "a customised" if customized else f"the unknown {architecture!r}"
        raise UserError(f"the checkpoint has {what} vision tower, whose tensors only its safetensors headers give: "
                        f"pass the checkpoint folder, or drop vision (--modalities text)")
    return tower


def vision_tensors_from(tensors: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The vision tower's tensor shapes from a checkpoint's headers (`gemma3n.safetensors.read_tensors`)."""
    return {name: tuple(info.shape) for name, info in tensors.items() if name.startswith("model.vision_tower.")}


def bundle_sessions(config: ModelConfig, modalities: Iterable[str] | None = None) -> tuple[str, ...]:
    """The sessions a bundle of `config` has: the text pair, and an encoder per modality kept (all by default)."""
    kept = config.modalities if modalities is None else tuple(modalities)
    return (*TEXT_SESSIONS, *(encoder_sessions(kept) if config.multimodal else ()))


# --- Bytes --------------------------------------------------------------------------------------------------------
def weight_layouts(config: ModelConfig, session: str, dtype: str, *, block_size: int = 32, symmetric: bool = True,
                   max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, max_tensor_bytes: int | None = MAX_TENSOR_BYTES,
                   vision_tensors: Shapes | None = None) -> list[tuple[SessionWeight, list[Part]]]:
    """Each weight the session reads with the parts it becomes in `dtype` (see `session_parts`)."""
    limit = tensor_limit(max_tensor_bytes, max_file_bytes)
    layouts = []
    for weight in session_weights(config, session, vision_tensors):
        parts = weight_parts(weight.name, weight.shape, weight.use, dtype, block_size=block_size, symmetric=symmetric,
                             limit=limit)
        if weight.use == "matmul" and DTYPES[dtype].matmul == "int8":
            parts.append(Part(0, 0, int8_scalars(weight.name)))
        layouts.append((weight, parts))
    return layouts


def session_parts(config: ModelConfig, session: str, dtype: str, **options: Any) -> list[Part]:
    """Every tensor the session's weights become in `dtype`, grouped as they are computed (and placed) together.
    `options`: block_size, symmetric, max_file_bytes, max_tensor_bytes (as `export`), vision_tensors."""
    return [part for _, parts in weight_layouts(config, session, dtype, **options) for part in parts]


def data_bytes(parts: Sequence[Part]) -> int:
    """Bytes of the weights as written: aligned in the data chunks, or as they are inside the .onnx file."""
    return sum(t.nbytes if part.inline else aligned(t.nbytes) for part in parts for t in part.tensors)


def data_files(parts: Sequence[Part], max_file_bytes: int) -> int:
    """How many external data chunks the weights fill, placed in the order the layout lists them."""
    lengths = [t.nbytes for part in parts if not part.inline for t in part.tensors]
    return len({index for index, _ in place(lengths, max_file_bytes)})


def largest(parts: Sequence[Part]) -> tuple[str, int]:
    """(name, bytes) of the largest tensor, ties to the greater name, as the exporter's manifest reports it."""
    return max(((t.name, t.nbytes) for part in parts for t in part.tensors), key=lambda item: (item[1], item[0]),
               default=("", 0))


def bundle_footprint(
    config: ModelConfig,
    dtypes: Sequence[str],
    *,
    modalities: Iterable[str] | None = None,
    block_size: int = 32,
    symmetric: bool = True,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_tensor_bytes: int | None = MAX_TENSOR_BYTES,
    vision_tensors: Shapes | None = None,
    embeddings: str = "bundled",
) -> dict[str, dict[str, SessionBytes]]:
    """{session: {dtype: SessionBytes}} of the bundle `matslice export` would write with these options."""
    footprint: dict[str, dict[str, SessionBytes]] = {}
    for session in bundle_sessions(config, modalities):
        footprint[session] = {}
        for dtype in dtypes:
            if embeddings == "streamed" and session == TEXT_SESSIONS[0]:
                footprint[session][dtype] = streamed_embeddings(config, dtype, block_size)
                continue
            layouts = weight_layouts(config, session, dtype, block_size=block_size, symmetric=symmetric,
                                     max_file_bytes=max_file_bytes, max_tensor_bytes=max_tensor_bytes,
                                     vision_tensors=vision_tensors)
            parts = [part for _, weight_parts_ in layouts for part in weight_parts_]
            data, graph = data_bytes(parts), graph_bytes(config, session, dtype, layouts)
            footprint[session][dtype] = SessionBytes(session, dtype, data + graph, data, graph, largest(parts),
                                                     data_files(parts, max_file_bytes))
    return footprint


def row_layout(config: ModelConfig, dtype: str, block_size: int = 32) -> rows.Header:
    """The row file streamed embeddings write for `config` at `dtype` (gemma3n/rows.py)."""
    text = config.text
    return rows.layout(dtype, text.vocab_size, text.vocab_size_per_layer_input, text.hidden_size,
                       text.num_hidden_layers, text.hidden_size_per_layer_input,
                       config.vision.vocab_offset if config.multimodal else None, block_size=block_size)


def streamed_embeddings(config: ModelConfig, dtype: str, block_size: int) -> SessionBytes:
    """The embed_tokens session of a streamed bundle: a stand-in graph and the row file, of which a page reads the
    header and index when it loads and then the blocks of the ids it meets."""
    header = row_layout(config, dtype, block_size)
    return SessionBytes(TEXT_SESSIONS[0], dtype, rows.STAND_IN_BYTES + header.index_end, header.index_end,
                        rows.STAND_IN_BYTES, ("(rows streamed)", 0), 0, rows.file_bytes(header))


# --- The graph's own bytes (estimated) ----------------------------------------------------------------------------
@cache
def _graph_model() -> dict[str, Any]:
    return json.loads(resources.files("slicer.data").joinpath("graph_bytes.json").read_text())


def graph_features(config: ModelConfig, session: str,
                   layouts: Sequence[tuple[SessionWeight, Sequence[Part]]]) -> dict[str, float]:
    """What a session's graph grows with: its layers (decoder: all, KV-owning, sparse; audio: conformer blocks), and
    its weights by kind with their parts (a quantized lookup is a dozen nodes a part, a split MatMul one node and a
    Concat input a part): `matmuls`, `matmul_parts`, `lookups`, `lookup_parts`, `gathers`, `gather_parts`, `others`."""
    text = config.text
    features = dict.fromkeys(("matmuls", "matmul_parts", "lookups", "lookup_parts", "gathers", "gather_parts",
                              "others"), 0.0)
    features["one"] = 1.0
    for weight, parts in layouts:
        kind = weight.use
        if kind == "constant":  # the decoder's rotary tables: the same few nodes in every graph
            continue
        if kind == "gather" and parts[0].tensors[0].element == "uint8":
            kind = "lookup"
        features[f"{kind}s"] += 1
        if kind != "other":
            features[f"{kind}_parts"] += sum(1 for part in parts if part.stop > part.start)
    if session == "decoder_model_merged":
        features |= {"layers": float(text.num_hidden_layers), "kv_layers": float(text.first_shared),
                     "sparse_layers": float(sum(s > 0 for s in text.activation_sparsity_pattern))}
    elif session == "audio_encoder":
        features["blocks"] = float(config.audio.conf_num_hidden_layers)
    return features


def graph_bytes(config: ModelConfig, session: str, dtype: str,
                layouts: Sequence[tuple[SessionWeight, Sequence[Part]]]) -> int:
    """The .onnx file's bytes beyond the weights inside it: the calibrated linear model of `graph_features`."""
    model = _graph_model()["models"][session][dtype]
    features = graph_features(config, session, layouts)
    return max(0, round(sum(coefficient * features[name] for name, coefficient in model.items())))


# --- Runtime memory -----------------------------------------------------------------------------------------------
KV_BYTES = 4  # the pasts and presents are graph inputs and outputs, which stay fp32 in every dtype (fp16 included)


def kv_cache_bytes(config: ModelConfig, context: int, *, windowed: bool = False) -> int:
    """The KV cache after `context` tokens, batch 1: keys and values of every layer that owns one (KV-shared layers
    read another layer's), fp32.

    The bundle's decoder keeps the full history on every KV-owning layer, as transformers.js feeds presents back as
    pasts without truncating them, and applies the sliding window in the mask (web_export/decoder.py). `windowed`
    gives what a runtime that drops keys outside the window would hold instead: sliding layers capped at it.
    """
    text = config.text
    per_token = 2 * text.num_key_value_heads * text.head_dim * KV_BYTES
    tokens = sum(min(context, text.sliding_window) if windowed and kind == "sliding_attention" else context
                 for kind in text.layer_types[: text.first_shared])
    return per_token * tokens


def activation_bytes(config: ModelConfig, dtype: str, context: int) -> int:
    """The largest intermediate tensors alive at once, batch 1: the greater of a prefill of `context` tokens and a
    decode step at `context`, as the runtime drives them (web_export/runtime.py, transformers.js): the prefill keeps
    one position's logits (`num_logits_to_keep=1`), and a decode step writes new presents beside the pasts it read.

    Prefill: the fp32 graph inputs (inputs_embeds, per_layer_inputs), the AltUp streams and projected per-layer
    inputs, the two additive masks [S, S] (full and sliding), then the larger of one layer's attention (scores and
    probabilities [heads, S, S], q/k/v) and its FFN (gate, up and their product [S, width]), and the logits.
    Decode: the new presents (a KV cache's worth) and the logits; attention over `context` keys is small beside them.
    Internal activations are at the dtype's float width (fp16 halves them).
    """
    text, width = config.text, DTYPES[dtype].float_bytes
    tokens, hidden, per_layer = context, text.hidden_size, text.num_hidden_layers * text.hidden_size_per_layer_input
    inputs = 4 * tokens * (hidden + per_layer)
    streams = width * tokens * (2 * text.altup_num_inputs * hidden + per_layer)
    masks = width * 2 * tokens * tokens
    attention = width * text.num_attention_heads * tokens * (2 * tokens + 3 * text.head_dim)
    ffn = width * 3 * tokens * max(text.intermediate_size)
    logits = 4 * text.vocab_size
    prefill = inputs + streams + masks + max(attention, ffn) + logits
    decode = kv_cache_bytes(config, context) + logits
    return max(prefill, decode)


def runtime_memory(config: ModelConfig, dtype: str, context: int, *, sessions: Sequence[str] = TEXT_SESSIONS,
                   **options: Any) -> dict[str, int]:
    """Memory to run `sessions` at `dtype` with `context` tokens, batch 1: {weights, kv_cache, kv_cache_windowed,
    activations, total}. Weights are the sessions' initializers as loaded (their data bytes: a browser fetches
    every data file into memory; streamed embeddings hold the row file's index and the rows met, a few KB each);
    `options` are `bundle_footprint`'s. `kv_cache_windowed` (see `kv_cache_bytes`) is not in the total. Against
    native onnxruntime (benchmarks/memory.py) the total is 1.98x the measured peak at 512 tokens and 0.98x at 2048
    on E0.40B-text q4: that runtime maps the data files and keeps only the touched pages of the embedding tables
    resident, and its CPU arena holds 2.5-3x the activations estimated here."""
    if context < 1:
        raise UserError(f"--context {context}: give a number of tokens of at least 1")
    streamed = options.pop("embeddings", "bundled") == "streamed"
    weights = sum(row_layout(config, dtype, options.get("block_size", 32)).index_end
                  if streamed and session == TEXT_SESSIONS[0] else data_bytes(session_parts(config, session, dtype,
                                                                                            **options))
                  for session in sessions)
    kv_cache = kv_cache_bytes(config, context)
    activations = activation_bytes(config, dtype, context)
    return {"weights": weights, "kv_cache": kv_cache, "kv_cache_windowed": kv_cache_bytes(config, context,
                                                                                            windowed=True),
            "activations": activations, "total": weights + kv_cache + activations}
