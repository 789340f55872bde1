"""`matslice bench --only nano`: what MatFormer training buys the default model, over seeds.

Why a benchmark: the README's and model card's claims about the nano model (its perplexity on general
English, and that each nested slice is worse than the one it sits in by more than seed-to-seed noise) must
come from a run anyone can repeat. It trains the recipe the default model uses for seeds 0, 1 and 2 with
MatFormer sampling and seed 0 without (``matformer=False``: the baseline), then measures every checkpoint
folder as written: each source's held-out perplexity for the parent, the named slices and the width-only
slices (every layer kept at 1/2 and 1/4 width; computed inside
the folder's model with ``standins.nano.sub_models``, which the tests prove equal to the sliced checkpoints)
and the greedy answers to ``nano.PROMPTS``. Seed 0 with MatFormer is the default checkpoint itself, so it
is reused from (or built into) the user cache. Each run's figures are kept beside its folder, so an
interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

RUNS = ((0, True), (0, False), (1, True), (2, True))  # (seed, matformer); seed 0 MatFormer first: the default


def _measure(folder: Path) -> dict[str, Any]:
    """Per-source held-out perplexities and greedy samples of the folder's parent and named slices."""
    from transformers import AutoTokenizer, Gemma3nForCausalLM, Gemma3nForConditionalGeneration

    from standins import nano
    from standins.corpus import load_corpus

    config = json.loads((folder / "config.json").read_text())
    cls = Gemma3nForConditionalGeneration if "text_config" in config else Gemma3nForCausalLM
    model = cls.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with nano.threads(nano.THREADS):
        perplexities = nano.sub_model_perplexities(model, nano.held_out_streams(tokenizer, load_corpus()))
        samples = nano.sub_model_samples(model, tokenizer)
    return {"perplexity": perplexities, "samples": samples}


def _run(work: Path, seed: int, matformer: bool) -> dict[str, Any]:
    from standins.default import build_key, default_checkpoint
    from standins.nano import write_nano

    name = f"{'matformer' if matformer else 'plain'}-seed{seed}"
    work = work / build_key("nano")  # a run is reused only while the code and text that trained it are unchanged
    work.mkdir(parents=True, exist_ok=True)
    record = work / f"{name}.json"
    if record.is_file():
        return json.loads(record.read_text())
    start = time.monotonic()
    if (seed, matformer) == (0, True):
        folder = default_checkpoint(seed=0)
    else:
        folder = work / name
        if not (folder / "config.json").is_file():
            write_nano(folder, seed=seed, matformer=matformer)
    found = {"seed": seed, "matformer": matformer, "folder": str(folder),
             "build_seconds": time.monotonic() - start} | _measure(folder)
    record.write_text(json.dumps(found, indent=2) + "\n")
    return found


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0}


def bench_nano(work: Path) -> dict[str, Any]:
    """Train (or reuse) every run of RUNS and summarise: per-seed figures, mean and spread, the plain model."""
    work.mkdir(parents=True, exist_ok=True)
    runs = {f"{'matformer' if m else 'plain'}-seed{s}": _run(work, s, m) for s, m in RUNS}
    matformer = [run for run in runs.values() if run["matformer"]]
    sub_models = list(matformer[0]["perplexity"])
    sources = list(matformer[0]["perplexity"][sub_models[0]])
    summary = {sub: {source: _spread([run["perplexity"][sub][source] for run in matformer]) for source in sources}
               for sub in sub_models}
    return {"runs": runs, "matformer": summary}
