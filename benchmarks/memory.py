"""`matslice plan`'s predictions against a real full-shape bundle: its bytes, and onnxruntime's memory running it.

A synthetic checkpoint with exactly the shapes slicing E4B to a preset gives (text only, full vocabulary:
benchmarks/export.py) is exported, and the plan of that checkpoint is compared with what was written
(`plan.bytes_error` = predicted / written bytes of the bundle's sessions). Then, in a fresh process per context
length, onnxruntime loads the text sessions and runs them as transformers.js does (web_export/runtime.py): a
prefill that fills the context but for the last few tokens, then those few as cached decode steps. The process's
peak resident memory (VmHWM) minus its resident memory before the sessions were created (Python, numpy and
onnxruntime themselves, which the plan does not count) is the measured runtime memory, and
`plan.memory_error.<context>` = predicted total / measured. The anonymous and file-backed parts are recorded too:
native onnxruntime maps the data files and keeps resident only the pages it touches (every decoder weight, but
only the gathered rows of the embedding tables), where a browser loads every data file into memory as the plan
counts them; and its CPU arena holds more than the largest live intermediates the plan estimates.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.synthetic import synthetic_preset
from gemma3n.config import load_config
from slicer.footprint import bundle_footprint, runtime_memory
from web_export.manifest import NAME as MANIFEST
from web_export.manifest import Manifest

STEPS = 4

# Runs in a fresh process: argv = bundle, dtype, context. Prints one JSON line of kB figures.
_MEASURE = """
import json, sys
from pathlib import Path
import numpy as np
from web_export.runtime import BundleRuntime, Prompt

def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key + ":"))

bundle, dtype, context, steps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
before = status("VmRSS")
runner = BundleRuntime.from_bundle(bundle, dtype, only=("embed_tokens", "decoder_model_merged"))
loaded, loaded_anon, loaded_file = status("VmRSS"), status("RssAnon"), status("RssFile")
ids = np.random.default_rng(0).integers(10, 250, context - steps)
logits, state = runner.prefill(Prompt(ids))
for _ in range(steps):
    logits = runner.step(int(logits[-1].argmax()), state)
print(json.dumps({"before_kb": before, "loaded_kb": loaded, "loaded_anon_kb": loaded_anon,
                  "loaded_file_kb": loaded_file, "peak_kb": status("VmHWM"), "end_anon_kb": status("RssAnon"),
                  "end_file_kb": status("RssFile"), "context": int(state.attention_mask.shape[1])}))
"""


def _bundle(work: Path, preset: str, dtype: str) -> tuple[Path, Path]:
    """(checkpoint, bundle) of the preset's full-shape synthetic child, exported once (`matslice export`)."""
    child = synthetic_preset(work, preset, vocab_divisor=1)
    bundle = work / f"bundle-{preset}-{dtype}"
    if not (bundle / MANIFEST).is_file():
        subprocess.run([sys.executable, "-m", "matslice", "export", str(child), str(bundle), "--dtype", dtype,
                        "--overwrite"], check=True, stdout=subprocess.DEVNULL)
    return child, bundle


def measure_memory(bundle: Path, dtype: str, context: int, steps: int = STEPS) -> dict[str, int]:
    """Resident bytes of a fresh process before loading, after loading and at its peak, running `context` tokens."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(bundle), dtype, str(context), str(steps)],
                          check=True, capture_output=True, text=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {key.removesuffix("_kb") + "_bytes": value * 1024 for key, value in found.items() if key.endswith("_kb")}


def bench_memory(work: Path, preset: str = "E0.40B-text", dtype: str = "q4",
                 contexts: tuple[int, ...] = (512, 2048)) -> dict:
    """Predicted against written bytes, and predicted against measured memory at each context length."""
    checkpoint, bundle = _bundle(work, preset, dtype)
    config = load_config(checkpoint)
    manifest = Manifest.load(bundle)
    predicted = {session: variants[dtype] for session, variants in bundle_footprint(config, (dtype,)).items()}
    sessions = {}
    for session, found in predicted.items():
        written = manifest.session(session, dtype)
        sessions[session] = {"predicted": found.bytes, "written": written["bytes"],
                             "error": found.bytes / written["bytes"],
                             "largest_tensor_predicted": list(found.largest_tensor),
                             "largest_tensor_written": [written["largest_tensor"]["name"],
                                                        written["largest_tensor"]["bytes"]]}
    memory = {}
    for context in contexts:
        measured = measure_memory(bundle, dtype, context)
        plan = runtime_memory(config, dtype, context)
        used = measured["peak_bytes"] - measured["before_bytes"]
        memory[str(context)] = {"predicted": plan, "measured": measured, "measured_model_bytes": used,
                                "loaded_model_bytes": measured["loaded_bytes"] - measured["before_bytes"],
                                "error": plan["total"] / used}
    return {
        "preset": preset, "dtype": dtype, "bundle": str(bundle),
        "bytes_error": sum(s["predicted"] for s in sessions.values()) / sum(s["written"] for s in sessions.values()),
        "sessions": sessions, "memory": memory,
    }
