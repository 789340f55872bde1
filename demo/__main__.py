"""`python -m demo [--host H] [--port P] [BUNDLE_OR_CHECKPOINT ...]`: serve the side-by-side comparison.

Everything the app may load is decided here, before serving (see demo/variants.py): the folders given,
else dist/web/models.json, else the embedded default checkpoint sliced and exported into .cache/demo/.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("paths", nargs="*", type=Path, metavar="BUNDLE_OR_CHECKPOINT",
                        help="bundles (manifest.json), checkpoints (exported once), or a folder with models.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from demo.variants import default_registry

    try:
        registry = default_registry(args.paths)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from demo.app import build_app
    from demo.compare import Comparer

    app = build_app(Comparer(registry))
    print(f"serving {', '.join(registry.names)} (parent {registry.parent})", flush=True)
    app.queue().launch(server_name=args.host, server_port=args.port, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
