"""Lay out a Gemma 3n checkpoint as a folder transformers.js 4.x loads with `from_pretrained(<folder>)`.

Why these exact files (transformers.js 4.3.1 source, `src/`):
* `onnx/<session><suffix>.onnx`: sessions from `models/session_config.js` (ImageAudioTextToText), suffix per dtype
  from `utils/dtypes.js`, subfolder `onnx` from `models/auto/modeling_auto.js`;
* `config.json` `transformers.js_config`: `dtype` (per-session map, `selectDtype`) and `use_external_data_format`
  (map from file name to chunk count, `utils/model-loader.js` resolveExternalDataFormat). Nothing probes for
  data files, so an undeclared chunk is never fetched and the session fails;
* a text-only checkpoint (`gemma3n_text`, `Gemma3nForCausalLM`) is not loadable as is: `gemma3n_text` is in no
  model mapping of `models/registry.js`, and `Gemma3nForCausalLM` under its own architecture resolves to the
  single-session DecoderOnly layout although its forward runs `embed_tokens`. `resolveTypeConfig`
  (`models/modeling_utils.js`) only gives the embed_tokens + decoder_model_merged pair to a ForCausalLM class
  loading a `...ForConditionalGeneration` architecture, so the bundle wraps the text config as a `gemma3n` config
  with `text_config` (`configs.js` getNormalizedConfig reads `text_config` for `gemma3n`);
* tokenizer.json / tokenizer_config.json / chat_template.jinja (`utils/constants.js` CHAT_TEMPLATE_NAME),
  generation_config.json, and for the processor preprocessor_config.json / processor_config.json.
`manifest.json` records every file's size and sha256 so a deployment can verify what it serves. The bundle is
built in a hidden sibling folder and renamed into place (`gemma3n.folders.atomic_folder`), so a failed or
killed build never leaves a half bundle behind.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import onnx

from gemma3n.bundle_files import OPTIONAL_FILES, REQUIRED_FILES, bundle_config, json_text
from gemma3n.config import ModelConfig, parse_config
from gemma3n.dtypes import DTYPES
from gemma3n.errors import UserError
from gemma3n.folders import atomic_folder, copy_side_files
from gemma3n.modalities import TEXT_SESSIONS
from gemma3n.progress import Progress, steps, within
from slicer.plan import count_params
from web_export.export import ONNX_SUBDIR, trace_sessions
from web_export.quantize import variant_name, write_variant
from web_export.weights import SessionGraph

MANIFEST_FORMAT = 2  # 2: per-piece sha256 (`piece_bytes`, each file's `pieces`)
# A page checks each file a piece at a time as it streams in, and a Range request by widening it to whole pieces,
# so no byte reaches the model unchecked: a piece is what it buffers before hashing (WebCrypto hashes whole buffers).
PIECE_BYTES = 16 << 20
EMBED_SESSION = TEXT_SESSIONS[0]
NOT_ON_WASM = {"GatherBlockQuantized"}  # contrib ops onnxruntime-web's WASM build lacks
TRACING_SHARE = 0.85  # roughly tracing's share of an export's time, for progress reports only


def write_bundle(
    model_dir: Path,
    out: Path,
    dtypes: tuple[str, ...] = ("q4",),
    modalities: set[str] | None = None,
    *,
    graphs: list[SessionGraph] | None = None,
    progress: Progress | None = None,
    embeddings: str = "bundled",
    **quantize_options: Any,
) -> Path:
    """Export, quantize and lay out `model_dir` as a transformers.js bundle at `out`; returns `out`.

    The first dtype is the default the bundle's config declares; the others are selectable with
    `from_pretrained(..., { dtype })`. `quantize_options` go to `web_export.quantize.quantize` (block_size,
    symmetric, max_file_bytes, max_tensor_bytes). `graphs`: the sessions `trace_sessions(model_dir, modalities)`
    returned, when they are traced already (several bundles of one checkpoint from one trace, the slow part).
    `progress` hears the fraction done and the session running (tracing takes most of the time). `embeddings`:
    "streamed" replaces each dtype's embed_tokens session by a row file (`web_export.rows`) that MatSlice's loader
    (site/matslice.js) reads by HTTP Range, leaving a stand-in graph that names it.
    """
    model_dir, out = Path(model_dir), Path(out)
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:  # first: a missing tokenizer fails before minutes of export
        raise UserError(f"{model_dir} lacks {', '.join(missing)}, which transformers.js needs to tokenize: "
                        f"copy the tokenizer files from the checkpoint it was sliced from")
    with atomic_folder(out, overwrite=True) as staging:
        copy_side_files(model_dir, staging, names=REQUIRED_FILES + OPTIONAL_FILES)
        sessions = build_sessions(model_dir, staging / ONNX_SUBDIR, dtypes, modalities, quantize_options, graphs,
                                  progress)
        source_config = read_json(model_dir / "config.json")
        if embeddings == "streamed":
            stream_embeddings(staging / ONNX_SUBDIR, sessions, parse_config(source_config, "config.json"),
                              quantize_options.get("block_size", 32))
        write_json(staging / "config.json", bundle_config(source_config, sessions, dtypes))
        write_json(staging / "manifest.json", manifest(staging, source_config, sessions, dtypes))
    return out


def build_sessions(
    model_dir: Path,
    onnx_dir: Path,
    dtypes: tuple[str, ...],
    modalities: set[str] | None,
    options: dict[str, Any],
    graphs: list[SessionGraph] | None = None,
    progress: Progress | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """{session: {dtype: file record}} after tracing each session once (unless `graphs` are given) and writing every
    dtype from the checkpoint."""
    onnx_dir.mkdir(parents=True, exist_ok=True)
    traced = 0.0 if graphs is not None else TRACING_SHARE
    if graphs is None:
        graphs = trace_sessions(model_dir, modalities, within(progress, 0.0, traced))
    writing = steps(graphs, f"writing ({', '.join(dtypes)})", "session", within(progress, traced, 1.0),
                    name=lambda graph: graph.name)
    return {graph.name: {dtype: write_session(graph, dtype, onnx_dir, options) for dtype in dtypes}
            for graph in writing}


def write_session(graph: SessionGraph, dtype: str, onnx_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    saved = write_variant(graph, dtype, onnx_dir / variant_name(graph.name, dtype), **options)
    files = [saved.path, *saved.data_files]
    name, size = saved.largest_tensor
    return {
        "file": f"{ONNX_SUBDIR}/{saved.path.name}",
        "external_data_chunks": len(saved.data_files),
        "data_files": [f"{ONNX_SUBDIR}/{f.name}" for f in saved.data_files],
        "bytes": sum(f.stat().st_size for f in files),
        "largest_tensor": {"name": name, "bytes": size},
    }


def stream_embeddings(onnx_dir: Path, sessions: dict[str, dict[str, dict[str, Any]]], config: ModelConfig,
                      block_size: int) -> None:
    """Replace each dtype's embed_tokens session by its row file and a stand-in graph (`web_export.rows`); the
    session's record then counts the stand-in and the row file's header and index (what a page fetches before any
    row) and names the row file under `rows`."""
    from web_export import rows

    hard_start = config.vision.vocab_offset if config.multimodal else None
    for dtype, record in sessions[EMBED_SESSION].items():
        session_file = onnx_dir.parent / record["file"]
        streamed = rows.write_rows(session_file, dtype, config.text, hard_start, onnx_dir / rows.rows_name(dtype),
                                   block_size=block_size)
        for name in (record["file"], *record["data_files"]):
            (onnx_dir.parent / name).unlink()
        onnx.save(rows.stand_in(config.text, dtype), session_file)
        streamed["file"] = f"{ONNX_SUBDIR}/{streamed['file']}"
        record.update(external_data_chunks=0, data_files=[], rows=streamed,
                      bytes=session_file.stat().st_size + streamed["index_end"],
                      largest_tensor={"name": "(rows streamed)", "bytes": 0})


def manifest(
    root: Path, source: dict[str, Any], sessions: dict[str, dict[str, dict[str, Any]]], dtypes: tuple[str, ...]
) -> dict[str, Any]:
    """What the bundle holds: files with sizes and hashes, sessions per dtype, parameter counts, the slice."""
    return {
        "format": MANIFEST_FORMAT,
        "piece_bytes": PIECE_BYTES,
        "model_type": source.get("model_type"),
        "text_only": source.get("model_type") != "gemma3n",
        "dtypes": list(dtypes),
        "default_dtype": dtypes[0],
        "sessions": sessions,
        "text_sessions": [s for s in TEXT_SESSIONS if s in sessions],
        "embeddings": "streamed" if any("rows" in r for r in sessions[EMBED_SESSION].values()) else "bundled",
        "dtype_info": {d: dtype_info(root, sessions, d) for d in dtypes},
        "largest_tensor": largest_overall(sessions),
        "params": count_params(parse_config(source, "config.json")),
        "matslice": source.get("matslice"),
        "files": file_records(root),
    }


def dtype_info(root: Path, sessions: dict[str, dict[str, dict[str, Any]]], dtype: str) -> dict[str, Any]:
    """What a page decides its backend by (gemma3n/dtypes.py): whether WebGPU needs the adapter's shader-f16
    feature, whether matrix weights are 4-bit (WASM unpacks those on every call), and the operators of this dtype's
    graphs that onnxruntime-web's WASM build has no kernel for (none in MatSlice's own graphs; the check guards a
    graph rewritten elsewhere)."""
    ops = set()
    for variants in sessions.values():
        ops |= {node.op_type for node in onnx.load(root / variants[dtype]["file"], load_external_data=False).graph.node}
    kind = DTYPES[dtype]
    return {"needs_shader_f16": kind.needs_shader_f16, "int4": kind.matmul == "int4",
            "not_on_wasm": sorted(ops & NOT_ON_WASM)}


def largest_overall(sessions: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Largest tensor over all sessions and dtypes: the one that decides which devices can run the bundle."""
    records = [
        {"session": s, "dtype": d, **r["largest_tensor"]}
        for s, variants in sessions.items()
        for d, r in variants.items()
    ]
    return max(records, key=lambda r: (r["bytes"], r["session"], r["dtype"]))


def file_records(root: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {bytes, sha256, pieces}} for every file under `root` except the manifest, sorted;
    `pieces` are the sha256 of each PIECE_BYTES-long piece (the last one shorter)."""
    records = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"):
        whole, pieces = hashes(path)
        records[path.relative_to(root).as_posix()] = {"bytes": path.stat().st_size, "sha256": whole, "pieces": pieces}
    return records


def hashes(path: Path, piece_bytes: int = PIECE_BYTES) -> tuple[str, list[str]]:
    """sha256 of the whole file and of each of its pieces, in one read."""
    whole, pieces = hashlib.sha256(), []
    with open(path, "rb") as handle:
        while piece := handle.read(piece_bytes):
            whole.update(piece)
            pieces.append(hashlib.sha256(piece).hexdigest())
    return whole.hexdigest(), pieces or [hashlib.sha256(b"").hexdigest()]


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def write_json(path: Path, data: dict[str, Any]) -> None:
    Path(path).write_text(json_text(data))
