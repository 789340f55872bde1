"""`matslice export` and `matslice verify`: the web-export stage's commands.

Arguments are checked before any work starts (a bad dtype, a modality the checkpoint lacks, an
unwritable OUT), so a user never waits for an export that was bound to fail.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from slicer.errors import SliceError

DTYPES = ("fp32", "fp16", "q8", "q4", "q4f16")
TOL_FP32 = 1e-4


def _dtypes(text: str) -> tuple[str, ...]:
    dtypes = tuple(d.strip() for d in text.split(",") if d.strip())
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise SliceError(f"unknown dtype {dtype!r}: choose from {', '.join(DTYPES)}")
    if not dtypes:
        raise SliceError(f"--dtype is empty: choose from {', '.join(DTYPES)}")
    return dtypes


def _modalities(text: str | None, config: dict) -> set[str] | None:
    from slicer.config import is_multimodal

    if text is None:
        return None
    wanted = {m.strip() for m in text.split(",") if m.strip()}
    present = {"text", "audio", "vision"} if is_multimodal(config) else {"text"}
    for modality in sorted(wanted):
        if modality not in {"text", "audio", "vision"}:
            raise SliceError(f"unknown modality {modality!r}: choose from text, audio, vision")
        if modality not in present:
            raise SliceError(f"the checkpoint has no {modality} tower: choose from {', '.join(sorted(present))}")
    if "text" not in wanted:
        raise SliceError("--modalities must include text: every bundle has the decoder")
    return wanted - {"text"}


def _writable(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise SliceError(f"{out} already exists: choose another folder or pass --overwrite")
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise SliceError(f"cannot write under {parent}: choose a folder you can write to")


def cmd_export(args: argparse.Namespace) -> None:
    from slicer.config import load_config

    model, out = Path(args.model), Path(args.out)
    config = load_config(model)
    dtypes = _dtypes(args.dtype)
    encoders = _modalities(args.modalities, config)
    if args.block_size < 16 or args.block_size & (args.block_size - 1):
        raise SliceError(f"--block-size {args.block_size}: choose a power of two of at least 16 (32 is usual)")
    _writable(out, args.overwrite)
    from slicer.cli import parse_size
    from web_export.bundle import write_bundle

    write_bundle(model, out, dtypes=dtypes, modalities=encoders, block_size=args.block_size,
                 symmetric=not args.asymmetric, max_file_bytes=parse_size(args.max_file_size))
    manifest = json.loads((out / "manifest.json").read_text())
    total = sum(record["bytes"] for record in manifest["files"].values())
    print(f"wrote {out}: {', '.join(dtypes)} bundle, {total / 1e6:.1f} MB")
    print(f"check it with: matslice verify {out} {model}")


def cmd_verify(args: argparse.Namespace) -> None:
    from slicer.config import load_config

    bundle, model = Path(args.bundle), Path(args.model)
    load_config(model)
    if not (bundle / "manifest.json").is_file():
        raise SliceError(f"{bundle} has no manifest.json: pass a bundle written by `matslice export`")
    from web_export.parity import check_parity
    from web_export.quantize import SUFFIXES

    dtypes = json.loads((bundle / "manifest.json").read_text())["dtypes"]
    result, failures = {}, []
    for dtype in dtypes:
        exact = dtype in ("fp32", "q4")  # q4 is weight-only: exact against PyTorch on its own weights
        report = check_parity(model, bundle, steps=args.steps, suffix=SUFFIXES[dtype], dequantized=dtype == "q4")
        row = {"max_abs_logits_diff": report.max_logits_diff, "per_step": report.logits_max_diff,
               "encoders": report.encoder_max_diff, "torch_ids": report.torch_ids, "onnx_ids": report.onnx_ids,
               "ids_match": report.torch_ids == report.onnx_ids,
               "reference": "pytorch, dequantized weights" if dtype == "q4" else "pytorch fp32",
               "asserted": exact, "tolerance": TOL_FP32 if exact else None}
        result[dtype] = row
        if exact and not (report.max_logits_diff <= TOL_FP32 and row["ids_match"]):
            failures.append(dtype)
        if not args.json:
            verdict = ("ok" if dtype not in failures else "FAILED") if exact else "reported, not asserted"
            print(f"{dtype}: max |logits diff| {report.max_logits_diff:.2e} against {row['reference']} over "
                  f"{len(report.logits_max_diff)} steps; greedy ids {'match' if row['ids_match'] else 'differ'} "
                  f"({verdict})")
    if args.json:
        print(json.dumps(result, indent=2))
    if failures:
        raise SliceError(f"{bundle} does not match {model} at {', '.join(failures)}: re-export it (matslice export)")


def register(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="export a checkpoint to a transformers.js bundle")
    export.add_argument("model")
    export.add_argument("out")
    export.add_argument("--dtype", default="q4", help=f"comma-separated, from {','.join(DTYPES)} (default q4)")
    export.add_argument("--modalities", help="text[,audio][,vision] (default: all the checkpoint has)")
    export.add_argument("--block-size", type=int, default=32, help="int4 quantization block size (default 32)")
    export.add_argument("--asymmetric", action="store_true", help="int4 with zero points (default symmetric)")
    export.add_argument("--max-file-size", default="1.5GB", help="largest file of the bundle (default 1.5GB)")
    export.add_argument("--overwrite", action="store_true")
    export.set_defaults(run=cmd_export)

    verify = commands.add_parser("verify", help="check a bundle against PyTorch in onnxruntime")
    verify.add_argument("bundle")
    verify.add_argument("model")
    verify.add_argument("--steps", type=int, default=24, help="cached decode steps (past the sliding window)")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(run=cmd_verify)
