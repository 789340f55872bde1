"""README.md's quick start is what CI runs: the same commands, in the same order, on a fresh clone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _commands(lines: list[str]) -> list[str]:
    """Shell lines less comments and blank lines, with runs of spaces made one."""
    stripped = (re.sub(r"\s+#.*$", "", line).strip() for line in lines)
    return [re.sub(r"\s+", " ", line) for line in stripped if line and not line.startswith("#")]


def test_readme_quick_start_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).splitlines()  # the first code block
    ci = (ROOT / ".ci" / "run").read_text()
    between = re.search(r"# quick start: begin\n(.*?)# quick start: end", ci, re.S).group(1).splitlines()
    assert _commands(quick_start) == _commands(between)
    assert len(_commands(between)) >= 3 and "nox -s build_web" in " ".join(_commands(between))
    assert "wordnet" not in ci.lower()  # the training text comes from the project's own packages


def test_readme_bench_table_is_results_json() -> None:
    """The README's benchmark table is exactly what `matslice bench --report` writes from benchmarks/results.json,
    and every figure there names the commit, date, machine and load of the run that measured it."""
    from benchmarks import results

    figures = results.load()
    assert figures, "benchmarks/results.json holds no figures: run matslice bench"
    for key, found in figures.items():
        assert {"value", "commit", "date", "machine", "load"} <= set(found), key
        assert re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?", found["commit"]) and found["date"].endswith("UTC"), found
    readme = (ROOT / "README.md").read_text()
    assert results.report(ROOT / "README.md") == readme, "README.md's bench table is stale: matslice bench --report"
