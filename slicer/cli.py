"""The slicing stage's commands: `matslice presets`, `matslice plan`, `matslice slice`.

`presets` and `plan` read configs only and import neither torch nor transformers, so they answer at once; `plan`
also predicts the bundle `export` would write from the child (slicer/footprint.py) and its memory at run time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gemma3n.config import ModelConfig, e4b_config, load_config
from gemma3n.errors import UserError
from gemma3n.folders import check_new
from gemma3n.units import parse_size
from slicer.options import add_bundle_options, add_slice_options, bundle_options, plan_for, slice_spec


def _model_config(model: str | None) -> tuple[ModelConfig, Path | None]:
    if model is None or model.upper() == "E4B":
        return e4b_config(), None
    path = Path(model)
    if not path.exists():
        raise UserError(f"{model} does not exist: pass a Gemma 3n checkpoint folder, its config.json, or E4B")
    return load_config(path), path if path.is_dir() else None


def cmd_plan(args: argparse.Namespace) -> None:
    from slicer.report import bundle_summary, folder_tensors, plan_report, predicted_bytes

    config, folder = _model_config(args.model)
    plan = plan_for(config, slice_spec(args), folder)
    dtypes, options = bundle_options(args)
    if args.context < 1:
        raise UserError(f"--context {args.context}: give a number of tokens of at least 1")
    tensors = folder_tensors(folder)
    summary = plan.summary() | predicted_bytes(plan, folder, tensors)
    summary |= bundle_summary(plan, tensors, dtypes, options, args.context, folder)
    print(json.dumps(summary, indent=2) if args.json else plan_report(summary))


def cmd_presets(args: argparse.Namespace) -> None:
    from slicer.report import presets_report, presets_table

    rows = presets_table()
    print(json.dumps(rows, indent=2) if args.json else presets_report(rows))


def cmd_slice(args: argparse.Namespace) -> None:
    from slicer.checkpoint import slice_checkpoint
    from slicer.report import predicted_bytes

    parent, out = Path(args.model), Path(args.out)
    if not parent.is_dir():
        raise UserError(f"{parent} is not a folder: pass a Gemma 3n checkpoint folder")
    check_new(out, args.overwrite)
    plan = plan_for(load_config(parent), slice_spec(args), parent)
    slice_checkpoint(parent, out, plan, overwrite=args.overwrite,
                     max_shard_bytes=parse_size(args.max_shard_size, "--max-shard-size"))
    params = predicted_bytes(plan, parent).get("params") or plan.summary()["params"]
    print(f"wrote {out}: {len(plan.kept_layers)} layers, {params['effective_published']:,} effective parameters "
          f"(published convention), {params['total']:,} in all")
    if plan.vocab is not None:
        print(f"vocabulary: {plan.vocab.child_text_vocab:,} of {plan.vocab.parent_text_vocab:,} text tokens kept "
              f"({plan.vocab.origin['covered_token_fraction']:.1%} of the corpus's tokens); vocab_map.json maps "
              "child ids to the parent's")


def register(commands: argparse._SubParsersAction) -> None:
    presets = commands.add_parser("presets", help="list official and MatSlice presets with their numbers")
    presets.add_argument("--json", action="store_true")
    presets.set_defaults(run=cmd_presets)

    plan = commands.add_parser("plan", help="validate a slice and print the child's layers, config, sizes, bundle "
                                             "bytes and runtime memory")
    plan.add_argument("model", nargs="?", help="checkpoint folder or config.json (default: built-in E4B config)")
    add_slice_options(plan)
    add_bundle_options(plan)
    plan.add_argument("--context", type=int, default=2048, help="tokens for the runtime memory (default 2048)")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(run=cmd_plan)

    sl = commands.add_parser("slice", help="write the sliced child checkpoint")
    sl.add_argument("model")
    sl.add_argument("out")
    add_slice_options(sl)
    sl.add_argument("--max-shard-size", default="4GB", help="largest safetensors shard (default 4GB)")
    sl.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    sl.set_defaults(run=cmd_slice)
