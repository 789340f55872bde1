"""`matslice bench [--only plan,memory,slice,export,decode,quant,browser,browser_full,browser_full_q8,vocab,search,nano]
[--work DIR]` (`nox -s bench`). `memory` checks `matslice plan` against a full-shape export
(benchmarks/memory.py); `nano` trains the default model's recipe over seeds, with and without MatFormer
sampling (benchmarks/nano.py).

Results go to build/bench/results.json (flat dotted keys, so they can be tracked over time, plus the
details) and build/bench/results.md (the table the README shows).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from gemma3n.cache import folder
from gemma3n.errors import UserError

OUT = Path("build/bench")
ALL = ("plan", "memory", "slice", "export", "decode", "quant", "browser", "browser_full", "vocab", "search",
       "nano", "browser_full_q8")
EXPORT_PRESETS = ("E0.40B-text", "E2B")


def _machine() -> str:
    from search.hardware import cpu_name

    cpu = cpu_name()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, {platform.system()} {platform.release()}"


def _run(wanted: set[str], work: Path, vocab_divisor: int, presets: tuple[str, ...]) -> tuple[dict, dict]:
    results: dict[str, object] = {"machine": _machine()}
    details: dict[str, object] = {}
    if "plan" in wanted:
        from benchmarks.slicing import bench_plan

        details["plan"] = bench_plan()
        results["plan.seconds"] = details["plan"]["seconds"]
    if "memory" in wanted:
        from benchmarks.memory import bench_memory

        details["memory"] = found = bench_memory(work / "export")
        results["plan.bytes_error"] = found["bytes_error"]
        for context, figures in found["memory"].items():
            results[f"plan.memory_error.{context}"] = figures["error"]
    if "slice" in wanted:
        from benchmarks.slicing import bench_slicing

        details["slice"] = bench_slicing(work / "slice", vocab_divisor=vocab_divisor)
        for key in ("time_ratio_to_copy", "peak_rss_bytes", "seconds", "copy_seconds", "child_bytes"):
            results[f"slice.{key}"] = details["slice"][key]
    if "export" in wanted:
        from benchmarks.export import bench_export

        for preset in presets:
            found = details.setdefault("export", {})[preset] = bench_export(work / "export", preset)
            for key in ("seconds", "peak_rss_bytes", "bytes"):
                results[f"export.{preset}.{key}"] = found.get(key, found.get("failed"))
    if "decode" in wanted or "quant" in wanted:
        from standins.default import default_checkpoint

        model = default_checkpoint()
        results["default_model"] = model.name
    if "decode" in wanted:
        from benchmarks.decode import onnx_tokens_per_second, torch_tokens_per_second
        from web_export.bundle import write_bundle

        bundle = write_bundle(model, work / "decode" / "bundle", dtypes=("fp32", "q4"), modalities=set())
        speeds = {"torch": torch_tokens_per_second(model)}
        for dtype in ("fp32", "q4"):
            speeds[dtype] = onnx_tokens_per_second(bundle, dtype)
        details["decode"] = speeds
        results["decode.q4_over_torch"] = speeds["q4"] / speeds["torch"]
        results["decode.fp32_over_torch"] = speeds["fp32"] / speeds["torch"]
        results["decode.torch_tokens_per_second"] = speeds["torch"]
    if "quant" in wanted:
        from benchmarks.quality import bench_quantization

        details["quant"] = bench_quantization(model, work / "quant")
        for name, found in details["quant"].items():
            results[f"quant.{name}.kl"] = found["kl"]
            results[f"quant.{name}.top1"] = found["top1"]
    if "browser" in wanted:
        from benchmarks.browser import bench_browser

        details["browser"] = found = bench_browser(work / "browser")
        for key, ratio in found["ratios"].items():
            results[f"browser.{key}_over_python"] = ratio
        results["browser.tokens_per_second"] = found["browser"]["tokens_per_second"]
    if wanted & {"browser_full", "browser_full_q8", "vocab"}:
        from standins.corpus import load_corpus

        corpus = load_corpus()
        corpus_file = work / "english-corpus.txt"
        corpus_file.write_text("\n".join(corpus.train) + "\n")
    for key, prefix, dtype in (("browser_full", "browser.full_shape", "q4"),
                               ("browser_full_q8", "browser.full_shape_q8", "q8")):  # q8: WASM's int8 kernels
        if key in wanted:
            from benchmarks.browser import bench_browser_full_shape

            details[key] = found = bench_browser_full_shape(work / "browser", corpus_file, webgpu=dtype == "q4",
                                                            dtype=dtype)
            results |= _full_shape_results(prefix, found)
    if "vocab" in wanted:
        from benchmarks.vocab import bench_vocab

        details["vocab"] = found = bench_vocab(work, {"nano": [("nano-train.txt", corpus_file.read_text())]},
                                               {"held-out": corpus.held_out})
        results |= {k: v for k, v in found.items() if not isinstance(v, dict)}
    if "search" in wanted:
        from benchmarks.search import bench_search

        details["search"] = found = bench_search()
        for key in ("trials_per_minute", "seconds_per_trial", "front_size", "measured", "over_budget"):
            results[f"search.{key}"] = found[key]
    if "nano" in wanted:
        from benchmarks.nano import bench_nano

        details["nano"] = found = bench_nano(work / "nano")
        for sub, by_source in found["matformer"].items():
            for source, spread in by_source.items():
                results[f"nano.{source}.{sub}.mean"] = spread["mean"]
                results[f"nano.{source}.{sub}.spread"] = spread["max"] - spread["min"]
        for name, run in found["runs"].items():
            for sub, by_source in run["perplexity"].items():
                for source, perplexity in by_source.items():
                    results[f"nano.{name}.{source}.{sub}"] = perplexity
    return results, details


def _full_shape_results(prefix: str, found: dict) -> dict[str, object]:
    """The flat keys of one full-shape browser run: bytes, WASM speed and its ratios to Python, ids, WebGPU if run."""
    results: dict[str, object] = {f"{prefix}.bytes": found["bytes"],
                                  f"{prefix}.largest_tensor_bytes": found["largest_tensor_bytes"]}
    for key in ("load_seconds", "first_token_seconds", "tokens_per_second"):
        results[f"{prefix}.{key}"] = found["wasm"][key]
        results[f"{prefix}.{key}_over_python"] = found["ratios"].get(key)
    results[f"{prefix}.peak_tab_bytes"] = found["wasm"]["peak_tab_bytes"]
    results[f"{prefix}.wasm_ids_match"] = found["wasm_ids_match"]
    if "webgpu" in found:
        results[f"{prefix}.webgpu_ids_match"] = found["webgpu_ids_match"]
        for key in ("load_seconds", "first_token_seconds", "tokens_per_second", "peak_tab_bytes",
                    "peak_gpu_process_bytes"):
            results[f"{prefix}.webgpu.{key}"] = found["webgpu"][key]
    return results


def _table(results: dict) -> str:
    rows = ["| figure | value |", "|---|---:|"]
    for key, value in results.items():
        shown = f"{value:,.4g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
        rows.append(f"| `{key}` | {shown} |")
    return "\n".join(rows) + "\n"


def cmd_bench(args: argparse.Namespace) -> None:
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    if wanted - set(ALL):
        raise UserError(f"--only: unknown benchmark {sorted(wanted - set(ALL))[0]!r}: choose from {', '.join(ALL)}")
    work = Path(args.work) if args.work else folder("bench")
    work.mkdir(parents=True, exist_ok=True)
    presets = tuple(p.strip() for p in args.export_presets.split(",") if p.strip())
    results, details = _run(wanted, work, args.vocab_divisor, presets)
    OUT.mkdir(parents=True, exist_ok=True)
    previous = json.loads((OUT / "results.json").read_text()) if (OUT / "results.json").exists() else {}
    merged = {k: v for k, v in previous.items() if k != "details"} | results
    merged["details"] = previous.get("details", {}) | details
    (OUT / "results.json").write_text(json.dumps(merged, indent=2, default=str) + "\n")
    table = _table({k: v for k, v in merged.items() if k != "details"})
    (OUT / "results.md").write_text(table)
    print(table)


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="speed, memory and size benchmarks; results in build/bench/")
    bench.add_argument("--work", help="where synthetic checkpoints and bundles go (default: bench/ in the user cache)")
    bench.add_argument("--only", default=",".join(ALL), help=f"comma-separated, from {', '.join(ALL)}")
    bench.add_argument("--vocab-divisor", type=int, default=4,
                       help="shrink the slicing benchmark's vocabularies to fit the disk (export runs at full size)")
    bench.add_argument("--export-presets", default=",".join(EXPORT_PRESETS), help="presets the export bench runs")
    bench.set_defaults(run=cmd_bench)
