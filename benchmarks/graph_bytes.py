"""Calibrate the graph-size model of `slicer.footprint` on real exports (measured by `evaluation.written`).

`matslice plan` predicts a bundle's weight bytes exactly, but the .onnx graph's own bytes (nodes, value names,
traced constants) only an export knows. This exports a set of tiny and nano-shaped variants (random weights, so
building them takes seconds; sliced to vary layers, KV-owning layers, sparse layers and conformer blocks, and
written with a small tensor limit too, so split weights count), checks on every file that the predicted weight
tensors are exactly the written ones, and fits, per session and dtype, the graph bytes as a linear function of
`slicer.footprint.graph_features`. The result, with its samples and residuals, goes to slicer/data/graph_bytes.json:

    PYTHONPATH=. python -m benchmarks.graph_bytes [--work .cache/graph-bytes] [--out slicer/data/graph_bytes.json]

It takes about 15 minutes on two cores (tracing, mostly the tiny vision tower).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.written import measure
from gemma3n.config import ModelConfig, load_config
from gemma3n.errors import UserError
from gemma3n.layout import MAX_TENSOR_BYTES
from gemma3n.safetensors import read_tensors
from slicer.footprint import (
    bundle_sessions,
    graph_features,
    largest,
    session_parts,
    vision_tensors_from,
    weight_layouts,
)

DTYPES = ("fp32", "fp16", "q8", "q4", "q4f16")
SPLIT_LIMITS = {"q8": 9216}  # q8 lookups quantize 32 columns of a 288-row table at a time: 9,216 bytes
SPLIT_LIMIT = 4608  # every other dtype: small enough that the tiny LM head, tables and FFNs are split
FEATURES = {  # per session: what its graph grows with (beyond "one"); see slicer.footprint.graph_features
    "embed_tokens": ("lookups", "lookup_parts", "gather_parts", "matmul_parts"),
    "decoder_model_merged": ("layers", "kv_layers", "sparse_layers", "matmul_parts"),
    "audio_encoder": ("blocks", "matmul_parts"),
    "vision_encoder": ("others",),
}


def _variants(work: Path) -> list[tuple[str, Path, set[str] | None]]:
    """(label, checkpoint, encoder modalities) of every calibration variant, written under `work` once."""
    from gemma3n.config import load_config as config_of
    from slicer.checkpoint import slice_checkpoint
    from slicer.plan import SliceSpec, make_plan
    from standins.nano import write_random_nano
    from standins.tiny import write_tiny

    def once(path: Path, make) -> Path:
        return path if (path / "config.json").is_file() else make(path)

    tiny_text = once(work / "tiny-text", lambda p: write_tiny(p, text_only=True, seed=0))
    tiny_mm = once(work / "tiny-mm", lambda p: write_tiny(p, seed=0))
    nano = once(work / "nano-text", lambda p: write_random_nano(p, seed=0))

    def sliced(parent: Path, name: str, spec: SliceSpec) -> Path:
        plan = make_plan(config_of(parent), spec)
        return once(work / name, lambda p: slice_checkpoint(parent, p, plan, progress=False))

    return [
        ("tiny-text", tiny_text, None),
        ("tiny-text-skip0", sliced(tiny_text, "tiny-text-skip0",
                                   SliceSpec(layers_to_skip=(0,), ffn_dims=(96, 96, 64, 128, 64, 32, 64))), None),
        ("tiny-text-skip56", sliced(tiny_text, "tiny-text-skip56",
                                    SliceSpec(layers_to_skip=(5, 6), ffn_dims=(64, 128, 96, 64, 128, 32))), None),
        ("nano-text", nano, None),
        ("nano-text-skip8", sliced(nano, "nano-text-skip8", SliceSpec(layers_to_skip=(8,), ffn_dims=(256,))), None),
        ("nano-text-skip017", sliced(nano, "nano-text-skip017",
                                     SliceSpec(layers_to_skip=(0, 1, 7), ffn_dims=(128,))), None),
        ("tiny-mm", tiny_mm, {"audio", "vision"}),
        ("tiny-mm-audio1", sliced(tiny_mm, "tiny-mm-audio1", SliceSpec(audio_layers_to_skip=(1,), audio_ffn_dim=40)),
         {"audio"}),
    ]


def split_limit(config: ModelConfig, session: str, dtype: str) -> int:
    """The tensor limit a split sample is written with: SPLIT_LIMIT(S), doubled until no weight's smallest part
    exceeds it (a nano table's column is already 8 kB in fp32)."""
    limit = SPLIT_LIMITS.get(dtype, SPLIT_LIMIT)
    while True:
        try:
            session_parts(config, session, dtype, max_tensor_bytes=limit)
            return limit
        except UserError:
            limit *= 2


def limit(config: ModelConfig, tag: str, session: str, dtype: str) -> int:
    return split_limit(config, session, dtype) if tag == "split" else MAX_TENSOR_BYTES


def calibrate(work: Path) -> dict[str, Any]:
    """Export every variant in every dtype (and, for the text ones, with a small tensor limit), check the weights,
    and fit the graph model. A variant's files, once complete, are kept and not written again."""
    from web_export.export import trace_sessions
    from web_export.quantize import variant_name, write_variant

    samples = []
    for label, checkpoint, modalities in _variants(work):
        config = load_config(checkpoint)
        vision = vision_tensors_from(read_tensors(checkpoint))
        sessions = bundle_sessions(config, ("text", *(modalities or ())))
        tags = ("default",) if modalities else ("default", "split")

        todo = [tag for tag in tags if not (work / "bundles" / f"{label}-{tag}" / "complete").is_file()]
        for graph in trace_sessions(checkpoint, modalities) if todo else []:
            for tag in todo:
                for dtype in DTYPES:
                    write_variant(graph, dtype, work / "bundles" / f"{label}-{tag}" / variant_name(graph.name, dtype),
                                  max_tensor_bytes=limit(config, tag, graph.name, dtype))
        for tag in todo:
            (work / "bundles" / f"{label}-{tag}" / "complete").touch()
        for tag in tags:
            for session in sessions:
                for dtype in DTYPES:
                    path = work / "bundles" / f"{label}-{tag}" / variant_name(session, dtype)
                    layouts = weight_layouts(config, session, dtype, vision_tensors=vision,
                                             max_tensor_bytes=limit(config, tag, session, dtype))
                    parts = [part for _, weight_parts in layouts for part in weight_parts]
                    written = measure(path, parts)
                    if written.largest_tensor != largest(parts):
                        raise AssertionError(f"{path}: largest {written.largest_tensor}, predicted {largest(parts)}")
                    samples.append({"variant": f"{label}-{tag}", "session": session, "dtype": dtype,
                                    "graph_bytes": written.graph_bytes, "data_bytes": written.data_bytes,
                                    "features": graph_features(config, session, layouts)})
                    print(f"{label}-{tag} {session} {dtype}: data {written.data_bytes:,} graph "
                          f"{written.graph_bytes:,}", file=sys.stderr)
    return fit(samples)


def fit(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Least squares per session and dtype over "one" and the session's FEATURES, with each sample's residual."""
    models: dict[str, dict[str, dict[str, float]]] = {}
    for session, names in FEATURES.items():
        for dtype in DTYPES:
            rows = [s for s in samples if s["session"] == session and s["dtype"] == dtype]
            if not rows:
                continue
            columns = ("one", *names)
            x = np.array([[s["features"].get(c, 0.0) for c in columns] for s in rows])
            y = np.array([s["graph_bytes"] for s in rows], dtype=float)
            coefficients = np.linalg.lstsq(x, y, rcond=None)[0]
            models.setdefault(session, {})[dtype] = {c: round(float(v), 3) for c, v in zip(columns, coefficients,
                                                                                           strict=True)}
            for sample, predicted in zip(rows, x @ coefficients, strict=True):
                sample["residual"] = round(float(predicted - sample["graph_bytes"]))
    return {
        "command": "PYTHONPATH=. python -m benchmarks.graph_bytes",
        "note": "graph bytes = .onnx file size minus the weights inside it; linear in slicer.footprint.graph_features",
        "models": models,
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=".cache/graph-bytes", help="where variants and bundles are written")
    parser.add_argument("--out", default="slicer/data/graph_bytes.json")
    args = parser.parse_args(argv)
    result = calibrate(Path(args.work))
    worst = max(abs(s["residual"]) / (s["graph_bytes"] + s["data_bytes"]) for s in result["samples"])
    result["worst_residual"] = f"{worst:.2%} of a session's bytes (graph + data)"
    text = json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1)[:-2]
    samples = ",\n  ".join(json.dumps(sample) for sample in result["samples"])  # one line each
    Path(args.out).write_text(f'{text},\n "samples": [\n  {samples}\n ]\n}}\n')
    print(f"wrote {args.out}: {len(result['samples'])} samples, worst residual {result['worst_residual']}")


if __name__ == "__main__":
    main()
