"""`nox -s serve` (website/serve.py) answers what a streamed bundle's loader asks: a single byte range of a file as 206
with Content-Range and exactly those bytes, the cross-origin isolation headers on every answer, `.rows` as
octet-stream, an unsatisfiable range as 416; and, set to ignore Range as some hosts do, the whole file as 200. The
host files the site ships (`_headers`, `.htaccess`, `vercel.json`) set the same headers and `.rows` type."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from helpers import serving

from website.serve import EXTRA_TYPES, ISOLATION_HEADERS


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


def host_files() -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """Each shipped host file's headers for every answer and its `.rows` type, read as that host reads it."""
    site = Path(__file__).parents[2] / "site"
    found = {}
    blocks: dict[str, dict[str, str]] = {}  # Netlify / Cloudflare _headers: a path, then indented "Key: Value" lines
    for line in (site / "_headers").read_text().splitlines():
        if line and not line.startswith(("#", " ")):
            block = blocks.setdefault(line.strip(), {})
        elif line.startswith(" "):
            key, value = line.strip().split(": ", 1)
            block[key] = value
    found["_headers"] = (blocks["/*"], blocks["/*.rows"])
    apache = (site / ".htaccess").read_text()
    every = dict(re.findall(r'Header set (\S+) "([^"]+)"', apache))
    types = {extension: kind for kind, extension in re.findall(r"AddType (\S+) (\.\w+)", apache)}
    found[".htaccess"] = (every, {"Content-Type": types[".rows"]})
    vercel = {rule["source"]: {h["key"]: h["value"] for h in rule["headers"]}
              for rule in json.loads((site / "vercel.json").read_text())["headers"]}
    found["vercel.json"] = (vercel["/(.*)"], vercel[r"/(.*)\.rows"])
    return found


@pytest.mark.parametrize("name", ["_headers", ".htaccess", "vercel.json"])
def test_shipped_host_files_say_what_serve_does(name: str) -> None:
    every, rows = host_files()[name]
    assert {key: every.get(key) for key in ISOLATION_HEADERS} == ISOLATION_HEADERS
    assert rows["Content-Type"] == EXTRA_TYPES[".rows"]
