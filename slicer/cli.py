"""`matslice`: the command line. Each subcommand reads the previous stage's files and writes its own.

Commands that only read configs (`plan`, `presets`) import neither torch nor transformers, so they
answer at once. Every user error ends as one `error: ...` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from slicer.errors import SliceError, run_command


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, like every other user error
        raise SliceError(f"{message} (see `{self.prog} --help`)")


def parse_size(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    upper = text.strip().upper()
    for unit, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if upper.endswith(unit) and upper[: -len(unit)].strip().replace(".", "", 1).isdigit():
            return int(float(upper[: -len(unit)]) * factor)
    if upper.isdigit():
        return int(upper)
    raise SliceError(f"size {text!r} is not understood: write it like 2GB, 500MB or 1GiB")


def add_slice_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("slice options")
    group.add_argument("--preset", help="an official or MatSlice preset (see `matslice presets`)")
    group.add_argument("--layers-to-skip", help="decoder layer indices to drop, e.g. 20,21,22 or [20, 21]")
    group.add_argument("--ffn-dims", help="FFN width per kept layer, or one width for all; 2_048 * 4 accepted")
    group.add_argument("--audio-layers-to-skip", help="conformer block indices to drop")
    group.add_argument("--audio-ffn-dim", help="audio feed-forward width to keep (units chosen by importance)")
    group.add_argument("--modalities", help="text, or text,audio,vision (the default: all the parent has)")


def spec_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The SliceSpec fields the explicit slice options set (parsed, never evaluated)."""
    from slicer.presets import parse_int, parse_int_list

    changes: dict[str, Any] = {}
    for option in ("layers_to_skip", "ffn_dims", "audio_layers_to_skip"):
        if (value := getattr(args, option)) is not None:
            changes[option] = parse_int_list(value, "--" + option.replace("_", "-"))
    if args.audio_ffn_dim is not None:
        changes["audio_ffn_dim"] = parse_int(args.audio_ffn_dim, "--audio-ffn-dim")
    if args.modalities is not None:
        changes["modalities"] = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    return changes


def slice_spec(args: argparse.Namespace):
    """The user's slice: a preset's, with any explicit option replacing the preset's value."""
    from slicer.plan import SliceSpec
    from slicer.presets import get_preset

    spec = get_preset(args.preset).spec() if args.preset else SliceSpec()
    return replace(spec, **spec_changes(args))


def _load_model_config(model: str | None) -> tuple[dict[str, Any], Path | None]:
    from slicer.config import e4b_config, load_config

    if model is None or model.upper() == "E4B":
        return e4b_config(), None
    path = Path(model)
    if not path.exists():
        raise SliceError(f"{model} does not exist: pass a Gemma 3n checkpoint folder, its config.json, or E4B")
    return load_config(path), path if path.is_dir() else None


def cmd_plan(args: argparse.Namespace) -> None:
    from slicer.plan import make_plan
    from slicer.report import plan_report, predicted_bytes

    config, folder = _load_model_config(args.model)
    plan = make_plan(config, slice_spec(args))
    summary = plan.summary() | predicted_bytes(plan, folder)
    print(json.dumps(summary, indent=2) if args.json else plan_report(summary))


def cmd_presets(args: argparse.Namespace) -> None:
    from slicer.report import presets_report, presets_table

    rows = presets_table()
    print(json.dumps(rows, indent=2) if args.json else presets_report(rows))


def cmd_slice(args: argparse.Namespace) -> None:
    from slicer.checkpoint import slice_checkpoint
    from slicer.config import load_config
    from slicer.plan import make_plan
    from slicer.report import predicted_bytes

    parent, out = Path(args.model), Path(args.out)
    if not parent.is_dir():
        raise SliceError(f"{parent} is not a folder: pass a Gemma 3n checkpoint folder")
    if out.exists() and not args.overwrite:
        raise SliceError(f"{out} already exists: choose another folder or pass --overwrite")
    plan = make_plan(load_config(parent), slice_spec(args))
    slice_checkpoint(parent, out, plan, overwrite=args.overwrite, max_shard_bytes=parse_size(args.max_shard_size))
    params = predicted_bytes(plan, parent).get("params") or plan.summary()["params"]
    print(f"wrote {out}: {len(plan.kept_layers)} layers, {params['effective_published']:,} effective parameters "
          f"(published convention), {params['total']:,} in all")


def cmd_tiny(args: argparse.Namespace) -> None:
    from slicer.tiny import write_tiny

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise SliceError(f"{out} already exists: choose another folder or pass --overwrite")
    write_tiny(out, text_only=args.text_only, seed=args.seed)
    print(f"wrote tiny Gemma 3n checkpoint to {out}")


def cmd_nano(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise SliceError(f"{out} already exists: choose another folder or pass --overwrite")
    from slicer.nano import write_nano

    write_nano(out, seed=args.seed, matformer=not args.no_matformer)
    print(f"wrote the nano Gemma 3n (trained MatFormer-style) to {out}")


def build_parser(extra: Sequence[Callable[[argparse._SubParsersAction], None]] = ()) -> argparse.ArgumentParser:
    parser = _Parser(prog="matslice", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    tiny = commands.add_parser("tiny", help="write a tiny random Gemma 3n checkpoint (offline)")
    tiny.add_argument("out")
    tiny.add_argument("--text-only", action="store_true", help="a gemma3n_text checkpoint (no audio/vision)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--overwrite", action="store_true")
    tiny.set_defaults(run=cmd_tiny)

    nano = commands.add_parser("nano", help="train the nano Gemma 3n (MatFormer-style, a few minutes on CPU)")
    nano.add_argument("out")
    nano.add_argument("--seed", type=int, default=0)
    nano.add_argument("--no-matformer", action="store_true", help="train without nested-width sampling")
    nano.add_argument("--overwrite", action="store_true")
    nano.set_defaults(run=cmd_nano)

    presets = commands.add_parser("presets", help="list official and MatSlice presets with their numbers")
    presets.add_argument("--json", action="store_true")
    presets.set_defaults(run=cmd_presets)

    plan = commands.add_parser("plan", help="validate a slice and print the child's layers, config and sizes")
    plan.add_argument("model", nargs="?", help="checkpoint folder or config.json (default: built-in E4B config)")
    add_slice_options(plan)
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(run=cmd_plan)

    sl = commands.add_parser("slice", help="write the sliced child checkpoint")
    sl.add_argument("model")
    sl.add_argument("out")
    add_slice_options(sl)
    sl.add_argument("--max-shard-size", default="4GB", help="largest safetensors shard (default 4GB)")
    sl.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    sl.set_defaults(run=cmd_slice)

    for register in extra:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> None:
        from evaluation.cli import register as register_eval
        from web_export.cli import register as register_export

        args = build_parser([register_export, register_eval]).parse_args(argv)
        args.run(args)

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
