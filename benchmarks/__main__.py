"""`python -m benchmarks [--work DIR] [--only slice,plan] [--vocab-divisor N]`: run, then write results.

Results go to build/bench/results.json (flat dotted keys, tracked over time) and results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from benchmarks.slicing import bench_plan, bench_slicing

OUT = Path("build/bench")


def _machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, {platform.system()} {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--work", default=".cache/bench", help="where synthetic checkpoints are written")
    parser.add_argument("--only", default="slice,plan", help="comma-separated: slice, plan")
    parser.add_argument("--vocab-divisor", type=int, default=4, help="shrink the vocabularies to fit the disk")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    wanted = set(args.only.split(","))
    results: dict[str, float | int | str] = {"machine": _machine()}
    details = {}
    if "plan" in wanted:
        details["plan"] = bench_plan()
        results["plan.seconds"] = details["plan"]["seconds"]
    if "slice" in wanted:
        details["slice"] = bench_slicing(work / "slice", vocab_divisor=args.vocab_divisor)
        for key in ("time_ratio_to_copy", "peak_rss_bytes", "seconds", "copy_seconds", "child_bytes"):
            results[f"slice.{key}"] = details["slice"][key]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results | {"details": details}, indent=2) + "\n")
    table = ["| figure | value |", "|---|---:|"]
    for key, value in results.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
        table.append(f"| {key} | {shown} |")
    (OUT / "results.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
