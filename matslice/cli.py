"""The one command line of MatSlice: slice Gemma 3n, export it for transformers.js, check it, serve it.

Each stage registers its commands; each command reads the previous stage's files and writes its own
(checkpoint -> plan -> sliced checkpoint -> bundle -> site).

Every command runs through `gemma3n.errors.run_command`: any user error, in any stage, ends as one
`error: ...` line on stderr and exit status 2. Stages import their heavy dependencies (torch,
onnxruntime, gradio) inside their commands, so `matslice plan` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gemma3n.errors import Parser, run_command


def build_parser() -> argparse.ArgumentParser:
    from benchmarks.cli import register as bench
    from demo.cli import register as demo
    from evaluation.cli import register as evaluation
    from search.cli import register as search
    from slicer.cli import register as slicing
    from standins.cli import register as standins
    from web_export.cli import register as export
    from website.cli import register as website

    parser = Parser(prog="matslice", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    for register in (slicing, standins, export, evaluation, website, search, demo, bench):
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> None:
        args = build_parser().parse_args(argv)
        args.run(args)

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
