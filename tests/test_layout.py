"""The floor plan holds: no import cycles (counting function-local imports too), layers point
down, and the numeric core never sees DuckDB. See ARCHITECTURE.md (in the shared notes) and the
README's Development section."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

PKG = Path(__file__).parent.parent / "duckcluster"

#: Each folder and the ones it may import (directly); leaves at the top are shared by all.
LEAVES = {"_errors", "_params", "_source", "_http", "_json", "_syntax", "_version", "_secrets"}
ALLOWED = {
    "core": set(),
    "catalog": {"core"},
    "engine": {"core", "catalog"},
    "drift": {"core", "catalog", "engine"},
    "labels": {"core", "catalog", "engine"},
    "ops": {"core", "catalog", "engine", "drift", "labels"},
    "functions": {"core", "catalog", "engine", "drift", "labels", "ops"},
}


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def _imports() -> dict[str, set[str]]:
    """module -> the duckcluster modules it imports (top-level and function-local)."""
    mods = _modules()
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for m, (path, is_pkg) in mods.items():
        pkg = m if is_pkg else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("duckcluster")]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    tgt = ".".join(base + ([node.module] if node.module else []))
                else:
                    tgt = node.module or ""
                if not tgt.startswith("duckcluster"):
                    continue
                subs = [f"{tgt}.{a.name}" for a in node.names if f"{tgt}.{a.name}" in mods]
                targets = subs + ([tgt] if len(subs) < len(node.names) else [])
            else:
                continue
            graph[m].update(t for t in targets if t in mods and t != m)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_even_through_function_local_imports():
    assert _cycles(_imports()) == []


def test_layers_point_down():
    wrong = []
    for m, targets in _imports().items():
        area = m.split(".")[1] if m.count(".") else ""
        if area not in ALLOWED:
            continue
        for t in targets:
            other = t.split(".")[1] if t.count(".") else "duckcluster"
            if other != area and other not in LEAVES and other not in ALLOWED[area]:
                wrong.append(f"{m} -> {t}")
    assert wrong == []


def test_the_numeric_core_never_imports_duckdb():
    users = [str(p.relative_to(PKG)) for p in (PKG / "core").rglob("*.py")
             if any(isinstance(n, (ast.Import, ast.ImportFrom)) and
                    any((getattr(n, "module", None) or a.name).split(".")[0] == "duckdb"
                        for a in n.names)
                    for n in ast.walk(ast.parse(p.read_text())))]
    assert users == []
