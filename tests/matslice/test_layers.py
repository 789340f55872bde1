"""The house reads top-down: no import runs upward across the stages, no module cycle, and the command line
answers without the heavy stages loaded."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Bottom to top: each package may import only itself and those before it.
LAYERS = ("gemma3n", "slicer", "standins", "web_export", "evaluation", "website", "search", "demo", "benchmarks",
          "matslice")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports() -> dict[str, set[str]]:
    """{module: project modules it imports}, every import counted (top level and inside functions)."""
    modules = {_module_name(p): p for layer in LAYERS for p in (ROOT / layer).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def test_no_import_runs_upward() -> None:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = sorted(f"{a} -> {b}" for a, targets in project_imports().items() for b in targets
                    if rank[b.split(".")[0]] > rank[a.split(".")[0]])
    assert not upward, upward


def test_no_module_cycle() -> None:
    graph = project_imports()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError(" -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The walk above finds imports inside functions too (the layers test would pass vacuously otherwise)."""
    graph = project_imports()
    assert "matslice.cli" in graph and "slicer.cli" in graph["matslice.cli"]
    assert "standins.default" in graph["evaluation.cli"]  # imported inside a function


def test_help_loads_no_heavy_stage() -> None:
    code = ("import sys; from matslice.cli import build_parser; build_parser(); "
            "heavy = sorted(m for m in ('torch', 'transformers', 'onnx', 'onnxruntime', 'gradio', 'numpy') "
            "if m in sys.modules); assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
