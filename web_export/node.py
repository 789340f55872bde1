"""MatSlice's JavaScript side: one pinned npm project (`node/` at the repository root), and running it.

Why JavaScript at all: whether a bundle works is decided by transformers.js (file names, config keys,
session wiring, its tokenizer), not by onnxruntime in Python. `node/package-lock.json` pins
transformers.js (run here in Node on onnxruntime-node's CPU kernels, and vendored into the site for
browsers), playwright-core (drives Debian's Chromium; it never downloads a browser) and the real Gemma
tokenizer used by the vocabulary benchmark. `ensure_installed` runs `npm ci --ignore-scripts` there once
per lock file: onnxruntime-node's install script would download GPU binaries, while the CPU ones ship
inside the package.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

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


def run_script(script: str, args: list[str], *, timeout: float = 600, node_dir: Path = NODE_DIR) -> dict[str, Any]:
    """Run `node/<script> args...` (scripts resolve packages from node/node_modules) and parse the JSON
    object its last stdout line prints."""
    ensure_installed(node_dir)
    done = subprocess.run(["node", script, *args], cwd=node_dir, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"node {script} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().split("\n")[-1])  # not splitlines(): JSON may hold U+2028


def node_generate(
    bundle: Path,
    *,
    dtype: str = "fp32",
    max_new_tokens: int = 12,
    min_new_tokens: int = 0,
    ids: list[int] | None = None,
    prompt: str | None = None,
    model_class: str = "causal",
    inputs: dict[str, np.ndarray] | None = None,
    timeout: float = 600,
) -> dict[str, list[int]]:
    """Greedy-generate with transformers.js; returns {"prompt_ids", "tokenizer_ids", "new_ids"}.

    `model_class` "causal" loads AutoModelForCausalLM (text sessions only), "conditional" loads
    Gemma3nForConditionalGeneration (every session). `inputs` are extra model inputs (e.g. audio features).
    """
    args = [str(Path(bundle).resolve()), "--dtype", dtype, "--max-new-tokens", str(max_new_tokens),
            "--min-new-tokens", str(min_new_tokens), "--class", model_class]
    if ids is not None:
        args += ["--ids", ",".join(str(int(i)) for i in ids)]
    if prompt is not None:
        args += ["--prompt", prompt]
    with tempfile.TemporaryDirectory() as tmp:
        if inputs:
            spec_path = Path(tmp) / "inputs.json"
            spec_path.write_text(json.dumps({name: tensor_spec(a) for name, a in inputs.items()}))
            args += ["--inputs", str(spec_path)]
        return run_script("generate.mjs", args, timeout=timeout)


def tensor_spec(array: np.ndarray) -> dict[str, Any]:
    """{"type", "dims", "data"} in the form generate.mjs turns into a transformers.js Tensor."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        kind, data = "bool", array.astype(np.uint8).ravel().tolist()
    elif np.issubdtype(array.dtype, np.integer):
        kind, data = "int64", array.astype(np.int64).ravel().tolist()
    else:
        kind, data = "float32", array.astype(np.float32).ravel().tolist()
    return {"type": kind, "dims": list(array.shape), "data": data}
