"""`matslice serve [DIR]` (`nox -s serve`): serve a built site on 127.0.0.1, cross-origin isolated.

Why not `python -m http.server`: onnxruntime-web runs multi-threaded WASM only when the page is
cross-origin isolated (SharedArrayBuffer), which needs `Cross-Origin-Opener-Policy: same-origin` and
`Cross-Origin-Embedder-Policy: require-corp` on every response; `.mjs` and `.wasm` need their proper MIME
types; `Cache-Control: no-cache` makes the browser revalidate, so a rebuilt model is never served stale; and a
streamed bundle's rows are read by HTTP Range, which http.server ignores (it answers 200 with the whole file), so
single ranges are answered here (206, Content-Range). It binds to 127.0.0.1 only: it is for trying a build locally,
not for hosting.
"""

from __future__ import annotations

import functools
import os
import re
import time
from http import HTTPStatus
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
               ".jinja": "text/plain", ".json": "application/json", ".rows": "application/octet-stream"}
RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class _Window:
    """`length` bytes of an open file from where it stands: what a 206 answer copies out."""

    def __init__(self, handle, length: int) -> None:
        self.handle, self.left = handle, length

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self.handle.read(size)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.handle.close()


class IsolatedHandler(SimpleHTTPRequestHandler):
    """A static file handler that adds the cross-origin isolation headers to every response."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **EXTRA_TYPES}

    def end_headers(self) -> None:
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        if getattr(self.server, "ranges", True):
            self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def send_head(self):  # noqa: ANN201 (http.server's own signature: a file-like object or None)
        """A single `Range: bytes=a-b` of a file is answered 206 with those bytes; anything else as http.server does."""
        time.sleep(getattr(self.server, "latency", 0.0))
        match = RANGE.fullmatch((self.headers.get("Range") or "").strip())
        path = self.translate_path(self.path)
        if not match or not getattr(self.server, "ranges", True) or not os.path.isfile(path):
            return super().send_head()
        try:
            handle = open(path, "rb")  # noqa: SIM115 (closed by http.server after copying)
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        size = os.fstat(handle.fileno()).st_size
        start = int(match[1])
        end = min(int(match[2]) if match[2] else size - 1, size - 1)
        if start > end:
            handle.close()
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        handle.seek(start)
        return _Window(handle, end - start + 1)

    def guess_type(self, path: str | Path) -> str:
        name = str(path)
        # ".onnx_data_1" and further external-data chunks
        return "application/octet-stream" if ".onnx_data" in name else super().guess_type(path)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        if not getattr(self.server, "quiet", False):
            super().log_message(format, *args)


def make_server(directory: Path, port: int = 8000, quiet: bool = False, ranges: bool = True,
                latency: float = 0.0) -> ThreadingHTTPServer:
    """A server for `directory` on 127.0.0.1:`port` (0: any free port); call serve_forever() on it. `ranges=False`
    answers every Range request with the whole file, as some hosts do, and `latency` delays every answer by that
    many seconds, as a distant host does (for tests and benchmarks of those cases)."""
    handler = functools.partial(IsolatedHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    server.quiet = quiet  # type: ignore[attr-defined]
    server.ranges = ranges  # type: ignore[attr-defined]
    server.latency = latency  # type: ignore[attr-defined]
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
