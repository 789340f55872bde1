"""The site stage's commands: `matslice build-web` (slice, export and lay out dist/web) and `matslice serve`."""

from __future__ import annotations

import argparse
from pathlib import Path

from gemma3n.dtypes import DTYPES
from gemma3n.rows import EMBEDDINGS
from slicer.options import add_slice_options

DEFAULT_OUT = "dist/web"


def cmd_build_web(args: argparse.Namespace) -> None:
    from website.build import build, report

    report(build(args), Path(args.out))


def cmd_serve(args: argparse.Namespace) -> None:
    from website.serve import serve

    serve(Path(args.directory), args.port)


def register(commands: argparse._SubParsersAction) -> None:
    build = commands.add_parser("build-web", help="slice, export and lay out a static site (default: the nano model)")
    build.add_argument("--model", help="Gemma 3n checkpoint folder (default: the embedded nano model)")
    build.add_argument("--preset", action="append", default=[], help="a preset to build; repeat for several")
    add_slice_options(build, preset=False)
    build.add_argument("--name", help="the custom slice's variant name (default: from its shape)")
    build.add_argument("--no-parent", action="store_true", help="build only the slices, not the parent")
    build.add_argument("--dtype", default="q4", help=f"comma-separated, from {','.join(DTYPES)} (default q4)")
    build.add_argument("--embeddings", choices=EMBEDDINGS, default="bundled",
                       help="streamed: embedding rows fetched as a prompt needs them by site/matslice.js, not "
                            "downloaded whole (q4, q8, fp32; see `matslice export --help`)")
    build.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    build.set_defaults(run=cmd_build_web)

    serve = commands.add_parser("serve", help="serve a built site on 127.0.0.1, cross-origin isolated")
    serve.add_argument("directory", nargs="?", default=DEFAULT_OUT, help=f"the built site (default {DEFAULT_OUT})")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=cmd_serve)
