"""`matslice serve [DIR]` (`nox -s serve`): serve a built site on 127.0.0.1, cross-origin isolated.

Why not `python -m http.server`: onnxruntime-web runs multi-threaded WASM only when the page is
cross-origin isolated (SharedArrayBuffer), which needs `Cross-Origin-Opener-Policy: same-origin` and
`Cross-Origin-Embedder-Policy: require-corp` on every response; `.mjs` and `.wasm` need their proper MIME
types; and `Cache-Control: no-cache` makes the browser revalidate, so a rebuilt model is never served stale.
It binds to 127.0.0.1 only: it is for trying a build locally, not for hosting.
"""

from __future__ import annotations

import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gemma3n.errors import UserError

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
EXTRA_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
               ".onnx": "application/octet-stream", ".onnx_data": "application/octet-stream",
               ".jinja": "text/plain", ".json": "application/json"}


class IsolatedHandler(SimpleHTTPRequestHandler):
    """A static file handler that adds the cross-origin isolation headers to every response."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **EXTRA_TYPES}

    def end_headers(self) -> None:
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def guess_type(self, path: str | Path) -> str:
        name = str(path)
        # ".onnx_data_1" and further external-data chunks
        return "application/octet-stream" if ".onnx_data" in name else super().guess_type(path)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        if not getattr(self.server, "quiet", False):
            super().log_message(format, *args)


def make_server(directory: Path, port: int = 8000, quiet: bool = False) -> ThreadingHTTPServer:
    """A server for `directory` on 127.0.0.1:`port` (0: any free port); call serve_forever() on it."""
    handler = functools.partial(IsolatedHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    server.quiet = quiet  # type: ignore[attr-defined]
    return server


def serve(directory: Path, port: int) -> None:
    """Serve `directory` until Ctrl-C; a folder without a built site or a port in use is a UserError."""
    if not (directory / "index.html").is_file() or not (directory / "models.json").is_file():
        raise UserError(f"{directory} holds no built site: run `nox -s build_web` (matslice build-web) first")
    try:
        server = make_server(directory, port)
    except OSError as exc:
        raise UserError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): pass --port N") from None
    print(f"serving {directory}/ at http://127.0.0.1:{server.server_address[1]}/ (cross-origin isolated); "
          "Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
