"""Run a bundle through transformers.js in Node and read back its greedy token ids.

Why: whether a bundle works is decided by the JavaScript loader (file names, config keys, session wiring),
not by onnxruntime in Python. Node runs the same library code the browser build does, on onnxruntime-node's
CPU kernels, so it is the cheapest faithful check. The Node project lives in tests/web_export/node
(package.json + package-lock.json; `npm ci --ignore-scripts` there installs it offline-capable).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

NODE_DIR = Path(__file__).resolve().parent.parent / "tests" / "web_export" / "node"
SCRIPT = "generate.mjs"
PACKAGE = Path("node_modules") / "@huggingface" / "transformers" / "package.json"


def node_unavailable_reason(node_dir: Path = NODE_DIR) -> str | None:
    """Why the Node check cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (node_dir / PACKAGE).is_file():
        return f"{node_dir / 'node_modules'} is absent: run `npm ci --ignore-scripts` in {node_dir}"
    return None


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
    node_dir: Path = NODE_DIR,
    timeout: float = 600,
) -> dict[str, list[int]]:
    """Greedy-generate with transformers.js; returns {"prompt_ids", "tokenizer_ids", "new_ids"}.

    `model_class` "causal" loads AutoModelForCausalLM (text sessions only), "conditional" loads
    Gemma3nForConditionalGeneration (every session). `inputs` are extra model inputs (e.g. audio features).
    """
    reason = node_unavailable_reason(node_dir)
    if reason:
        raise RuntimeError(reason)
    args = ["node", SCRIPT, str(Path(bundle).resolve()), "--dtype", dtype, "--max-new-tokens", str(max_new_tokens)]
    args += ["--min-new-tokens", str(min_new_tokens), "--class", model_class]
    if ids is not None:
        args += ["--ids", ",".join(str(int(i)) for i in ids)]
    if prompt is not None:
        args += ["--prompt", prompt]
    with tempfile.TemporaryDirectory() as tmp:
        if inputs:
            spec_path = Path(tmp) / "inputs.json"
            spec_path.write_text(json.dumps({name: tensor_spec(a) for name, a in inputs.items()}))
            args += ["--inputs", str(spec_path)]
        done = subprocess.run(args, cwd=node_dir, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"node {SCRIPT} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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
