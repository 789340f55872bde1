"""`matslice demo [--host H] [--port P] [BUNDLE_OR_CHECKPOINT ...]`: serve the side-by-side comparison app.

Everything the app may load is decided here, before serving (see demo/variants.py): the folders given,
else dist/web/models.json, else the embedded default checkpoint sliced and exported into .cache/demo/.
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
    from demo.variants import default_registry

    registry = default_registry(args.paths)
    app = build_app(Comparer(registry))
    print(f"serving {', '.join(registry.names)} (parent {registry.parent}) at http://{args.host}:{args.port}/",
          flush=True)
    app.queue().launch(server_name=args.host, server_port=args.port, show_error=True)


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="serve the Gradio app that compares sliced variants side by side")
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    demo.add_argument("paths", nargs="*", type=Path, metavar="BUNDLE_OR_CHECKPOINT",
                      help="bundles (manifest.json), checkpoints (exported once), or a folder with models.json")
    demo.set_defaults(run=cmd_demo)
