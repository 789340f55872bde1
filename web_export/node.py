"""Running MatSlice's node/ scripts: transformers.js in Node, on onnxruntime-node's CPU kernels.

Why JavaScript at all: whether a bundle works is decided by transformers.js, not by onnxruntime in Python.
The npm project itself (the lock file, installing it) is `gemma3n.npm`.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from gemma3n.npm import NODE_DIR, ensure_installed


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
