"""The layer order of `bti_core` (docs/architecture.md), held by reading every import.

A module may import its own layer and the layers below it, never one above; and no chain of
imports comes back to where it started. Every import counts — at module level, inside a
function, or under ``TYPE_CHECKING`` — since each is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bti_core"

#: lowest first; the names are `bti_core`'s top-level modules and packages
LAYERS: list[tuple[str, set[str]]] = [
    (
        "base",
        {"__init__", "errors", "config", "timeutil", "files", "filelock", "outbound", "display"},
    ),
    ("storage", {"db"}),
    ("market", {"market", "indicators"}),
    ("risk", {"risk", "pricing"}),
    ("orders", {"orders", "underwriting"}),
    ("people", {"auth", "sessions"}),
    ("accounts", {"accounts"}),
    ("chain", {"chain"}),
    ("capital", {"capital"}),
    ("policies", {"policies"}),
    ("claims", {"claims"}),
    ("analytics", {"analytics"}),
    ("services", {"services"}),
    ("runtime", {"stream", "worker", "demo_book"}),
    ("entry", {"cli"}),
]
RANK = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top(module: str) -> str:
    """``bti_core.claims.service`` → ``claims``; the package itself → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports() -> dict[str, set[str]]:
    """Every `bti_core` module and the `bti_core` modules it imports (migrations apart: they
    are generated, and import only the models)."""
    files = [p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts]
    known = {module_name(p) for p in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        here = module_name(path)
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] != "bti_core":
                    continue
                for alias in node.names:  # `from bti_core.claims import holds` is a module
                    sub = f"{node.module}.{alias.name}"
                    out.add(sub if sub in known else node.module)
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.split(".")[0] == "bti_core"}
        graph[here] = {m for m in out if m in known and m != here}
    return graph


def test_every_module_has_a_layer() -> None:
    unplaced = sorted({top(m) for m in imports()} - set(RANK))
    assert not unplaced, f"place these in LAYERS (and docs/architecture.md): {unplaced}"


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        f"{m} ({LAYERS[RANK[top(m)]][0]}) imports {d} ({LAYERS[RANK[top(d)]][0]})"
        for m, deps in sorted(imports().items())
        for d in sorted(deps)
        if RANK.get(top(d), -1) > RANK.get(top(m), len(LAYERS))
    ]
    assert not upward, "imports up a layer:\n" + "\n".join(upward)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_cycles() -> None:
    assert cycles(imports()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a made-up graph with a three-module loop is caught."""
    graph = defaultdict(set, {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("folder", ["bti_core"])
def test_the_engine_never_imports_the_dashboard(folder: str) -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / folder).rglob("*.py")
        if any(
            (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "dashboard")
            or (
                isinstance(n, ast.Import)
                and any(a.name.split(".")[0] == "dashboard" for a in n.names)
            )
            for n in ast.walk(ast.parse(p.read_text()))
        )
    ]
    assert offenders == []
