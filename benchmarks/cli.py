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

from benchmarks.registry import REGISTRY, Context
from gemma3n.cache import folder
from gemma3n.errors import UserError

OUT = Path("build/bench")
ALL = tuple(REGISTRY)
EXPORT_PRESETS = ("E0.40B-text", "E2B")


def _machine() -> str:
    from search.hardware import cpu_name

    cpu = cpu_name()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, {platform.system()} {platform.release()}"


def _run(wanted: set[str], ctx: Context) -> tuple[dict, dict]:
    """The wanted benchmarks in registry order: their flat figures (with the machine's name) and details."""
    results: dict[str, object] = {"machine": _machine()}
    details: dict[str, object] = {}
    for name, bench in REGISTRY.items():
        if name in wanted:
            figures, details[name] = bench(ctx)
            results |= figures
    return results, details


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
    results, details = _run(wanted, Context(work, args.vocab_divisor, presets))
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
