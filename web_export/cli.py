"""`matslice export`: the web-export stage's command.

Arguments are checked before any work starts (a bad dtype, a modality the checkpoint lacks, an
unwritable OUT), so a user never waits for an export that was bound to fail. The bundle options are
`slicer.options`', shared with `matslice plan`, which predicts the bundle they give. The bundle is checked
against PyTorch by `matslice verify` (the evaluation stage).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gemma3n.config import load_config
from gemma3n.folders import check_new
from gemma3n.modalities import parse_modalities
from gemma3n.units import human_bytes
from slicer.options import add_bundle_options, bundle_options


def cmd_export(args: argparse.Namespace) -> None:
    model, out = Path(args.model), Path(args.out)
    config = load_config(model)
    dtypes, options = bundle_options(args)
    modalities = None if args.modalities is None else parse_modalities(args.modalities, config.modalities)
    check_new(out, args.overwrite)
    from web_export.bundle import write_bundle

    write_bundle(model, out, dtypes=dtypes, modalities=None if modalities is None else set(modalities) - {"text"},
                 **options)
    from web_export.manifest import Manifest

    manifest = Manifest.load(out)
    downloads = ", ".join(f"{human_bytes(manifest.download(dtype))} to run at {dtype}" for dtype in dtypes)
    print(f"wrote {out}: {', '.join(dtypes)} bundle, {human_bytes(manifest.total_bytes())} ({downloads})")
    print(f"check it with: matslice verify {out} {model}")


def register(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="export a checkpoint to a transformers.js bundle")
    export.add_argument("model")
    export.add_argument("out")
    export.add_argument("--modalities", help="text[,audio][,vision] (default: all the checkpoint has)")
    add_bundle_options(export)
    export.add_argument("--overwrite", action="store_true")
    export.set_defaults(run=cmd_export)
