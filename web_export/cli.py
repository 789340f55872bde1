"""`matslice export`: the web-export stage's command.

Arguments are checked before any work starts (a bad dtype, a modality the checkpoint lacks, an
unwritable OUT), so a user never waits for an export that was bound to fail. The bundle is checked
against PyTorch by `matslice verify` (the evaluation stage).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gemma3n.config import load_config
from gemma3n.dtypes import DTYPES, parse_dtypes
from gemma3n.errors import UserError
from gemma3n.folders import check_new
from gemma3n.modalities import parse_modalities
from gemma3n.units import human_bytes, parse_size


def check_block_size(block_size: int) -> int:
    if block_size < 16 or block_size & (block_size - 1):
        raise UserError(f"--block-size {block_size}: choose a power of two of at least 16 (32 is usual)")
    return block_size


def cmd_export(args: argparse.Namespace) -> None:
    model, out = Path(args.model), Path(args.out)
    config = load_config(model)
    dtypes = parse_dtypes(args.dtype)
    modalities = None if args.modalities is None else parse_modalities(args.modalities, config.modalities)
    check_block_size(args.block_size)
    max_file_bytes = parse_size(args.max_file_size, "--max-file-size")
    check_new(out, args.overwrite)
    from web_export.bundle import write_bundle

    write_bundle(model, out, dtypes=dtypes, modalities=None if modalities is None else set(modalities) - {"text"},
                 block_size=args.block_size, symmetric=not args.asymmetric, max_file_bytes=max_file_bytes)
    manifest = json.loads((out / "manifest.json").read_text())
    total = sum(record["bytes"] for record in manifest["files"].values())
    print(f"wrote {out}: {', '.join(dtypes)} bundle, {human_bytes(total)}")
    print(f"check it with: matslice verify {out} {model}")


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
