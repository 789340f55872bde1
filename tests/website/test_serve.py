"""`nox -s serve` (website/serve.py) answers what a streamed bundle's loader asks: a single byte range of a file as 206
with Content-Range and exactly those bytes, the cross-origin isolation headers on every answer, `.rows` as
octet-stream, an unsatisfiable range as 416; and, set to ignore Range as some hosts do, the whole file as 200."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from helpers import serving


def fetch(url: str, byte_range: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Range": byte_range} if byte_range else {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "embed_tokens_q4.rows").write_bytes(bytes(range(256)) * 40)
    return tmp_path


def test_ranges_are_answered_with_exactly_their_bytes(folder: Path) -> None:
    data = (folder / "onnx" / "embed_tokens_q4.rows").read_bytes()
    with serving(folder) as origin:
        url = f"{origin}/onnx/embed_tokens_q4.rows"
        status, headers, body = fetch(url, "bytes=1000-4999")
        assert status == 206 and body == data[1000:5000]
        assert headers["Content-Range"] == f"bytes 1000-4999/{len(data)}" and headers["Content-Length"] == "4000"
        assert headers["Content-Type"] == "application/octet-stream" and headers["Accept-Ranges"] == "bytes"
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        status, headers, body = fetch(url, "bytes=10000-")  # open-ended: to the end
        assert status == 206 and body == data[10000:]
        status, headers, _ = fetch(url, f"bytes={len(data)}-")
        assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
        status, _, body = fetch(url)
        assert status == 200 and body == data


def test_a_host_that_ignores_range_sends_the_whole_file(folder: Path) -> None:
    data = (folder / "onnx" / "embed_tokens_q4.rows").read_bytes()
    with serving(folder, ranges=False) as origin:
        status, headers, body = fetch(f"{origin}/onnx/embed_tokens_q4.rows", "bytes=0-99")
    assert status == 200 and body == data and "Accept-Ranges" not in headers
