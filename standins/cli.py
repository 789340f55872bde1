"""`matslice tiny` and `matslice nano`: write a stand-in Gemma 3n checkpoint folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from gemma3n.folders import check_new


def cmd_tiny(args: argparse.Namespace) -> None:
    out = Path(args.out)
    check_new(out, args.overwrite)
    from standins.tiny import write_tiny

    write_tiny(out, text_only=args.text_only, seed=args.seed)
    print(f"wrote tiny Gemma 3n checkpoint to {out}")


def cmd_nano(args: argparse.Namespace) -> None:
    out = Path(args.out)
    check_new(out, args.overwrite)
    from standins.nano import write_nano

    write_nano(out, seed=args.seed, matformer=not args.no_matformer)
    print(f"wrote the nano Gemma 3n (trained {'without' if args.no_matformer else 'with'} MatFormer sampling) to {out}")


def register(commands: argparse._SubParsersAction) -> None:
    tiny = commands.add_parser("tiny", help="write a tiny random Gemma 3n checkpoint (offline)")
    tiny.add_argument("out")
    tiny.add_argument("--text-only", action="store_true", help="a gemma3n_text checkpoint (no audio/vision)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--overwrite", action="store_true")
    tiny.set_defaults(run=cmd_tiny)

    nano = commands.add_parser("nano", help="train the nano Gemma 3n (MatFormer-style, 1200 steps on CPU)")
    nano.add_argument("out")
    nano.add_argument("--seed", type=int, default=0)
    nano.add_argument("--no-matformer", action="store_true", help="train without nested-width sampling")
    nano.add_argument("--overwrite", action="store_true")
    nano.set_defaults(run=cmd_nano)
