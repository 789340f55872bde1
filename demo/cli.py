"""`matslice demo [--host H] [--port P] [--design-parent CHECKPOINT] [--front FILE] [BUNDLE_OR_CHECKPOINT ...]`.

Everything the app may load is decided here, before serving (see demo/variants.py): a search front's slices
(`--front`), else the folders given, else dist/web/models.json, else the embedded default checkpoint sliced
and exported into the user cache (variants/ under ~/.cache/matslice, or $MATSLICE_CACHE).
The Design tab cuts one parent checkpoint: --design-parent, else the checkpoint the parent variant was
exported from when that is known (the defaults, a checkpoint given as a folder); its builds go to
<cache>/designs/<name> and join the served variants.
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from gemma3n.errors import UserError


def cmd_demo(args: argparse.Namespace) -> None:
    for key, value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1")):
        os.environ.setdefault(key, value)  # nothing leaves the machine
    with socket.socket() as probe:  # a port in use is the user's to fix, before minutes of exporting
        try:
            probe.bind((args.host, args.port))
        except OSError as exc:
            raise UserError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}): pass --port N") from None
    from demo.app import build_app
    from demo.compare import Comparer
    from demo.design import Designer, Parent, load_front, slice_of_record
    from demo.design_tab import CSS
    from demo.variants import build_front, default_cache, default_registry

    if args.design_parent is not None and not (args.design_parent / "config.json").is_file():
        raise UserError(f"--design-parent {args.design_parent} is not a checkpoint folder (no config.json)")
    if args.front_max < 1:
        raise UserError(f"--front-max {args.front_max}: serve at least one slice of the front")
    cache = args.cache or default_cache()
    front = load_front(args.front) if args.front else []
    if front and args.paths:
        raise UserError("--front serves a search front's slices beside their parent: give it or folders, not both")
    registry = build_front(front, args.front_max) if front else default_registry(args.paths, cache=cache)
    source = args.design_parent or registry.get(registry.parent).checkpoint
    designer = None
    if source is not None:
        parent = Parent.load(source, cache / "corpora")
        slices = {v.name: spec for v in registry.variants.values()
                  if (spec := slice_of_record(v.slice_record, parent.config)) is not None}
        designer = Designer(parent, cache / "designs", slices, front)
    app = build_app(Comparer(registry), designer)
    print(f"serving {', '.join(registry.names)} (parent {registry.parent}) at http://{args.host}:{args.port}/"
          + (f"; designing slices of {source}" if source else "; no design parent (--design-parent)"), flush=True)
    app.queue().launch(server_name=args.host, server_port=args.port, show_error=True, css=CSS)


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="serve the Gradio app that compares sliced variants side by side")
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    demo.add_argument("--design-parent", type=Path, metavar="CHECKPOINT",
                      help="the checkpoint the Design tab cuts (default: the parent variant's, when known)")
    demo.add_argument("--cache", type=Path, help="where designs, their corpora and the default slices' "
                      "checkpoints go (default: demo/ in the user cache, ~/.cache/matslice unless $MATSLICE_CACHE is "
                      "set); bundles are built once into the user cache's variants/")
    demo.add_argument("--front", type=Path, metavar="FILE",
                      help="serve the parent and the slices of a search front (`matslice search --save FILE`)")
    demo.add_argument("--front-max", type=int, default=6,
                      help="at most this many of the front's slices, spread from smallest to largest (default 6)")
    demo.add_argument("paths", nargs="*", type=Path, metavar="BUNDLE_OR_CHECKPOINT",
                      help="bundles (manifest.json), checkpoints (exported once), or a folder with models.json")
    demo.set_defaults(run=cmd_demo)
