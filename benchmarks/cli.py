"""`matslice bench [--only plan,memory,slice,export,decode,quant,browser,browser_full,browser_full_q8,
    browser_streamed,browser_streamed_e2b,vocab,search,nano]
[--work DIR]` (`nox -s bench`). `memory` checks `matslice plan` against a full-shape export
(benchmarks/memory.py); `nano` trains the default model's recipe over seeds, with and without MatFormer
sampling (benchmarks/nano.py).

Figures go to benchmarks/results.json (flat dotted keys, each with the commit, date, machine and load of the run
that measured it: benchmarks/results.py), what they were measured from to build/bench/details.json;
`matslice bench --report` rewrites README.md's table from results.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import results
from benchmarks.registry import REGISTRY, Context
from gemma3n.cache import folder
from gemma3n.errors import UserError

OUT = Path("build/bench")
ALL = tuple(REGISTRY)
EXPORT_PRESETS = ("E0.40B-text", "E2B")


def _run(wanted: set[str], ctx: Context, stamp: dict) -> list[str]:
    """The wanted benchmarks in registry order, each one's figures (and details) recorded as soon as it finishes,
    so a later one failing loses nothing measured before it; the keys recorded."""
    keys: list[str] = []
    kept = OUT / "details.json"
    OUT.mkdir(parents=True, exist_ok=True)
    for name, bench in REGISTRY.items():
        if name in wanted:
            found, details = bench(ctx)
            keys += found
            results.record(found, stamp)
            previous = json.loads(kept.read_text()) if kept.exists() else {}
            kept.write_text(json.dumps(previous | {name: details}, indent=2, default=str) + "\n")
    return keys


def cmd_bench(args: argparse.Namespace) -> None:
    if args.report:
        results.README.write_text(results.report())
        print(f"wrote the table of {results.RESULTS.name} into {results.README}")
        return
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    if wanted - set(ALL):
        raise UserError(f"--only: unknown benchmark {sorted(wanted - set(ALL))[0]!r}: choose from {', '.join(ALL)}")
    work = Path(args.work) if args.work else folder("bench")
    work.mkdir(parents=True, exist_ok=True)
    presets = tuple(p.strip() for p in args.export_presets.split(",") if p.strip())
    keys = _run(wanted, Context(work, args.vocab_divisor, presets), results.run_stamp())
    recorded = results.load()
    print(results.table({key: recorded[key] for key in keys}))
    print(f"recorded {len(keys)} figures in {results.RESULTS} (matslice bench --report puts them in README.md)")


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="speed, memory and size benchmarks; figures in benchmarks/results.json")
    bench.add_argument("--work", help="where synthetic checkpoints and bundles go (default: bench/ in the user cache)")
    bench.add_argument("--only", default=",".join(ALL), help=f"comma-separated, from {', '.join(ALL)}")
    bench.add_argument("--vocab-divisor", type=int, default=4,
                       help="shrink the slicing benchmark's vocabularies to fit the disk (export runs at full size)")
    bench.add_argument("--export-presets", default=",".join(EXPORT_PRESETS), help="presets the export bench runs")
    bench.add_argument("--report", action="store_true",
                       help="run nothing: rewrite README.md's table from benchmarks/results.json")
    bench.set_defaults(run=cmd_bench)
