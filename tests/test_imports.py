"""The project's Python packages import one another without circles, and in layers: the
channel access (aqm_bridge) needs none of the others, the daemon a router runs (aqmllmd)
only aqm_bridge (no torch, no ns-3), and only the training side (aqmllm_models) reaches
into all of them. Imports inside functions count as much as those at the top."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"aqm_bridge": "bridge", "aqmllmd": "daemon", "aqmllm_models": "models",
            "aqmllm_sim": "sim"}
ALLOWED = {"aqm_bridge": set(), "aqmllmd": {"aqm_bridge"}, "aqmllm_sim": {"aqm_bridge"},
           "aqmllm_models": {"aqm_bridge", "aqmllmd", "aqmllm_sim"}}


def modules(root: Path = REPO) -> dict[str, Path]:
    out = {}
    for pkg, top in PACKAGES.items():
        for f in sorted((root / top / pkg).rglob("*.py")):
            parts = list(f.relative_to(root / top).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project's modules it imports anywhere in its text."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        package = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package[:len(package) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                if name and name != m:
                    graph[m].add(name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles() -> None:
    graph = import_graph(modules())
    assert len(graph) > 30 and sum(map(len, graph.values())) > 50  # it read the packages
    assert circles(graph) == []


def test_the_packages_import_in_layers() -> None:
    graph = import_graph(modules())
    for m, targets in graph.items():
        pkg = m.split(".")[0]
        foreign = {t.split(".")[0] for t in targets} - {pkg}
        assert foreign <= ALLOWED[pkg], f"{m} imports {sorted(foreign - ALLOWED[pkg])}"


def test_a_circle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    """The circle models/ once had: cli imported dagger, dagger imported cli back, both
    inside functions."""
    pkg = tmp_path / "models" / "aqmllm_models"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("def dagger():\n    from .dagger import run\n")
    (pkg / "dagger.py").write_text("def run():\n    from .cli import _steps\n")
    for other, top in PACKAGES.items():
        if other != "aqmllm_models":
            (tmp_path / top / other).mkdir(parents=True)
    assert circles(import_graph(modules(tmp_path))) == [
        ["aqmllm_models.cli", "aqmllm_models.dagger"]]
