"""The benchmarks' figures as the README shows them, each with the run that measured it.

Why a file in the repository: a figure is worth only as much as knowing what made it. `benchmarks/results.json`
keeps, for every flat key, its value and the run it came from (commit, date, machine, load average at the start),
so a key measured again replaces only itself and a table never mixes versions silently. `matslice bench` records
into it; `matslice bench --report` rewrites README.md's table between its markers from it, and
tests/matslice/test_readme.py fails when the two disagree.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from gemma3n.cache import SOURCE
from gemma3n.errors import UserError

RESULTS = SOURCE / "benchmarks" / "results.json"
README = SOURCE / "README.md"
BEGIN = "<!-- bench table: begin (written by `matslice bench --report` from benchmarks/results.json) -->"
END = "<!-- bench table: end -->"


def machine() -> str:
    from search.hardware import cpu_name

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu_name()}), {memory:.0f} GiB RAM, {platform.system()} {platform.release()}"


def run_stamp() -> dict[str, Any]:
    """The run about to measure: the commit checked out (`-dirty` with uncommitted changes to the code), the UTC
    time, the machine and its load average (other work sharing the machine slows every timing)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=SOURCE, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short=10", "HEAD") or "unknown"
    figures = (":!README.md", f":!{RESULTS.relative_to(SOURCE)}")
    if git("status", "--porcelain", "--untracked-files=no", "--", ".", *figures):
        commit += "-dirty"  # the code differs from the commit (the figures and the README they go to do not count)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return {"commit": commit, "date": now, "machine": machine(), "load": [round(x, 2) for x in os.getloadavg()]}


def load(path: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """Key -> {"value", "commit", "date", "machine", "load"}; an absent file is no figures yet."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path} ({error}): restore it with git checkout, or delete it") from None
    return data["figures"]


def record(figures: dict[str, Any], stamp: dict[str, Any], path: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """Store each figure with the run's stamp, replacing that key only; written whole (a temporary file renamed)."""
    results = load(path)
    for key, value in figures.items():
        results[key] = {"value": value, **stamp}
    tmp = Path(path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"figures": results}, indent=1, default=str) + "\n")
    tmp.replace(path)
    return results


def shown(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "-"
    if isinstance(value, int) and key.endswith("bytes"):
        return f"{value:,} ({value / 1e6:,.1f} MB)" if value >= 1e6 else f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.5g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(results: dict[str, dict[str, Any]]) -> str:
    """The Markdown table: one row per key, its value and its run; then each run's machine and load."""
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    rows = ["| figure | value | run |", "|---|---:|---|"]
    for key, found in results.items():
        run = runs.setdefault((found["commit"], found["date"]), found)
        number = list(runs).index((run["commit"], run["date"])) + 1
        rows.append(f"| `{key}` | {shown(key, found['value'])} | {number} |")
    rows.append("")
    for number, run in enumerate(runs.values(), 1):
        load_average = "/".join(f"{x:.1f}" for x in run["load"])
        rows.append(f"{number}. commit `{run['commit']}`, {run['date']}, {run['machine']}, load average "
                    f"{load_average} at the start")
    return "\n".join(rows) + "\n"


def report(readme: Path = README, results: dict[str, dict[str, Any]] | None = None) -> str:
    """README.md with the table between the markers rewritten from results.json; returns the new text."""
    text = Path(readme).read_text()
    if BEGIN not in text or END not in text:
        raise UserError(f"{readme} has no bench table markers: add the lines {BEGIN!r} and {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table(load() if results is None else results)}{END}{tail}"
