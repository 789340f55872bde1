"""Every benchmark by name: a function of the run's context that returns its flat figures and its details.

`matslice bench --only NAME,...` runs the named ones in registry order. A benchmark's flat figures are dotted keys
(`export.E2B.seconds`), the ones the README's table and tracking over time read; its details are whatever it
measured on the way. What several benchmarks share (the default model, the training corpus as a file) is made
once per run by the context.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Figures = dict[str, Any]


@dataclass
class Context:
    """Where a run writes, its options, and what benchmarks share (built on first use)."""

    work: Path
    vocab_divisor: int
    presets: tuple[str, ...]

    @functools.cached_property
    def model(self) -> Path:
        from standins.default import default_checkpoint

        return default_checkpoint()

    @functools.cached_property
    def corpus(self) -> Any:
        from standins.corpus import load_corpus

        return load_corpus()

    @functools.cached_property
    def corpus_file(self) -> Path:
        """The default model's training text as one file (paragraph a line)."""
        path = self.work / "english-corpus.txt"
        path.write_text("\n".join(self.corpus.train) + "\n")
        return path


def plan(ctx: Context) -> tuple[Figures, Any]:
    from benchmarks.slicing import bench_plan

    found = bench_plan()
    return {"plan.seconds": found["seconds"]}, found


def memory(ctx: Context) -> tuple[Figures, Any]:
    from benchmarks.memory import bench_memory

    found = bench_memory(ctx.work / "export")
    figures = {"plan.bytes_error": found["bytes_error"]}
    figures |= {f"plan.memory_error.{context}": f["error"] for context, f in found["memory"].items()}
    return figures, found


def slicing(ctx: Context) -> tuple[Figures, Any]:
    from benchmarks.slicing import bench_slicing

    found = bench_slicing(ctx.work / "slice", vocab_divisor=ctx.vocab_divisor)
    keys = ("time_ratio_to_copy", "peak_rss_bytes", "seconds", "copy_seconds", "child_bytes")
    return {f"slice.{key}": found[key] for key in keys}, found


def export(ctx: Context) -> tuple[Figures, Any]:
    from benchmarks.export import bench_export

    details = {preset: bench_export(ctx.work / "export", preset) for preset in ctx.presets}
    figures = {f"export.{preset}.{key}": found.get(key, found.get("failed"))
               for preset, found in details.items() for key in ("seconds", "peak_rss_bytes", "bytes")}
    return figures, details


def decode(ctx: Context) -> tuple[Figures, Any]:
    from benchmarks.decode import onnx_tokens_per_second, torch_tokens_per_second
    from web_export.bundle import write_bundle

    bundle = write_bundle(ctx.model, ctx.work / "decode" / "bundle", dtypes=("fp32", "q4"), modalities=set())
    speeds = {"torch": torch_tokens_per_second(ctx.model)}
    for dtype in ("fp32", "q4"):
        speeds[dtype] = onnx_tokens_per_second(bundle, dtype)
    return {"default_model": ctx.model.name, "decode.q4_over_torch": speeds["q4"] / speeds["torch"],
            "decode.fp32_over_torch": speeds["fp32"] / speeds["torch"],
            "decode.torch_tokens_per_second": speeds["torch"]}, speeds


def quant(ctx: Context) -> tuple[Figures, Any]:
    from benchmarks.quality import bench_quantization

    details = bench_quantization(ctx.model, ctx.work / "quant")
    figures: Figures = {"default_model": ctx.model.name}
    for name, found in details.items():
        figures |= {f"quant.{name}.kl": found["kl"], f"quant.{name}.top1": found["top1"]}
    return figures, details


def browser(ctx: Context) -> tuple[Figures, Any]:
    from benchmarks.browser import bench_browser

    found = bench_browser(ctx.work / "browser")
    figures = {f"browser.{key}_over_python": ratio for key, ratio in found["ratios"].items()}
    return figures | {"browser.tokens_per_second": found["browser"]["tokens_per_second"]}, found


def _browser_full(prefix: str, dtype: str) -> Callable[[Context], tuple[Figures, Any]]:
    """A full-shape variant in the browser, in `dtype` (q8: WASM's int8 kernels; q4 also on WebGPU)."""

    def run(ctx: Context) -> tuple[Figures, Any]:
        from benchmarks.browser import bench_browser_full_shape

        found = bench_browser_full_shape(ctx.work / "browser", ctx.corpus_file, webgpu=dtype == "q4", dtype=dtype)
        return _full_shape_figures(prefix, found), found

    return run


def _browser_streamed(preset: str) -> Callable[[Context], tuple[Figures, Any]]:
    """A full-shape variant at full vocabulary, bundled and streamed, in the page (see bench_browser_streamed)."""

    def run(ctx: Context) -> tuple[Figures, Any]:
        from benchmarks.browser import bench_browser_streamed

        found = bench_browser_streamed(ctx.work / "browser", preset)
        name = preset if preset.endswith("-text") else f"{preset}-text"  # the text-only variant either way
        return _streamed_figures(f"browser.streamed.{name.lower().replace('.', '')}", found), found

    return run


def _streamed_figures(prefix: str, found: dict) -> Figures:
    """The flat keys of one streamed-embeddings run beside its bundled twin."""
    streamed, bundled = found["streamed"], found["bundled"]
    figures: Figures = {f"{prefix}.first_visit_bytes": streamed["first_visit_bytes"],
                        f"{prefix}.bundled_download_bytes": bundled["download_bytes"],
                        f"{prefix}.rows_fetched_bytes": streamed["rows_fetched_bytes"],
                        f"{prefix}.second_visit_rows_fetched_bytes": streamed["second_visit_rows_fetched_bytes"],
                        f"{prefix}.prompt_tokens": streamed["prompt_tokens"],
                        f"{prefix}.tokens_per_second": streamed["wasm"]["tokens_per_second"],
                        f"{prefix}.peak_tab_bytes": streamed["wasm"]["peak_tab_bytes"],
                        f"{prefix}.ids_equal_on_every_visit": streamed["ids_equal_on_every_visit"],
                        f"{prefix}.bundled_runs_on_wasm": "wasm" in bundled}
    figures |= _ids_figures(f"{prefix}.wasm", streamed["ids"]) | _webgpu_figures(prefix, streamed)
    if "wasm" in bundled:
        figures |= {f"{prefix}.bundled_peak_tab_bytes": bundled["wasm"]["peak_tab_bytes"],
                    f"{prefix}.bundled_tokens_per_second": bundled["wasm"]["tokens_per_second"],
                    f"{prefix}.ms_per_token_added": streamed["ms_per_token_added"],
                    f"{prefix}.ms_per_token_added_50ms": streamed["ms_per_token_added_50ms"]}
    return figures


def _ids_figures(prefix: str, compared: dict) -> Figures:
    """Whether the page's greedy ids equal Python's, over how many steps, and whether a near tie ended them."""
    return {f"{prefix}_ids_match": compared["match"], f"{prefix}_ids_steps": compared["steps"],
            f"{prefix}_ids_near_tie": compared["near_tie"]}


def _full_shape_figures(prefix: str, found: dict) -> Figures:
    """The flat keys of one full-shape browser run: bytes, WASM speed and its ratios to Python, ids, WebGPU if run."""
    figures: Figures = {f"{prefix}.bytes": found["bytes"],
                        f"{prefix}.largest_tensor_bytes": found["largest_tensor_bytes"]}
    for key in ("load_seconds", "first_token_seconds", "tokens_per_second"):
        figures[f"{prefix}.{key}"] = found["wasm"][key]
        figures[f"{prefix}.{key}_over_python"] = found["ratios"].get(key)
    figures[f"{prefix}.peak_tab_bytes"] = found["wasm"]["peak_tab_bytes"]
    figures |= _ids_figures(f"{prefix}.wasm", found["wasm_ids"])
    return figures | _webgpu_figures(prefix, found)


def _webgpu_figures(prefix: str, found: dict) -> Figures:
    """The keys of a run's WebGPU tokens (`run_webgpu`), none when it had no WebGPU run."""
    if "webgpu" not in found:
        return {}
    figures = _ids_figures(f"{prefix}.webgpu", found["webgpu_ids"])
    for key in ("load_seconds", "first_token_seconds", "tokens_per_second", "peak_tab_bytes", "peak_gpu_process_bytes"):
        figures[f"{prefix}.webgpu.{key}"] = found["webgpu"][key]
    return figures


def vocab(ctx: Context) -> tuple[Figures, Any]:
    from benchmarks.vocab import bench_vocab

    found = bench_vocab(ctx.work, {"nano": [("nano-train.txt", ctx.corpus_file.read_text())]},
                        {"held-out": ctx.corpus.held_out})
    return {k: v for k, v in found.items() if not isinstance(v, dict)}, found


def search(ctx: Context) -> tuple[Figures, Any]:
    from benchmarks.search import bench_search

    found = bench_search()
    keys = ("trials_per_minute", "seconds_per_trial", "front_size", "measured", "over_budget")
    return {f"search.{key}": found[key] for key in keys}, found


def nano(ctx: Context) -> tuple[Figures, Any]:
    from benchmarks.nano import bench_nano

    found = bench_nano(ctx.work / "nano")
    figures: Figures = {}
    for sub, by_source in found["matformer"].items():
        for source, spread in by_source.items():
            figures[f"nano.{source}.{sub}.mean"] = spread["mean"]
            figures[f"nano.{source}.{sub}.spread"] = spread["max"] - spread["min"]
    for name, run in found["runs"].items():
        for sub, by_source in run["perplexity"].items():
            figures |= {f"nano.{name}.{source}.{sub}": ppl for source, ppl in by_source.items()}
    return figures, found


REGISTRY: dict[str, Callable[[Context], tuple[Figures, Any]]] = {
    "plan": plan,
    "memory": memory,
    "slice": slicing,
    "export": export,
    "decode": decode,
    "quant": quant,
    "browser": browser,
    "browser_full": _browser_full("browser.full_shape", "q4"),
    "browser_full_q8": _browser_full("browser.full_shape_q8", "q8"),
    "browser_streamed": _browser_streamed("E0.40B-text"),
    "browser_streamed_e2b": _browser_streamed("E2B"),
    "vocab": vocab,
    "search": search,
    "nano": nano,
}
