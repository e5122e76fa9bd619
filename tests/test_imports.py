"""Imports run one way, read from the source with `ast` (every import, including those inside functions):
app.py -> app_pages/ -> dashboard/ -> store/, and the command line -> precompute/ -> store/; no cycles among
the project's modules; the serving side never imports torch, the offline side never imports streamlit."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app_pages", "dashboard", "store", "precompute")
# What each part may import from the project (itself included). A part may skip layers below it.
ALLOWED = {
    "app": {"dashboard", "store"},
    "app_pages": {"app_pages", "dashboard", "store"},
    "dashboard": {"dashboard", "store"},
    "store": {"store"},
    "precompute": {"precompute", "store"},
}
FORBIDDEN_THIRD_PARTY = {
    "app": {"torch", "torchvision", "timm"},
    "app_pages": {"torch", "torchvision", "timm"},
    "dashboard": {"torch", "torchvision", "timm"},
    "store": {"torch", "torchvision", "timm", "streamlit"},
    "precompute": {"streamlit"},
}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for app.py and every module of the project's packages."""
    found = {"app": ROOT / "app.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported(name: str, path: Path, modules: set[str]) -> set[str]:
    """Every module this file imports: project modules by their dotted name (a `from package import name`
    that names a submodule counts as that submodule), others by their top-level name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in modules else base)
    return {m if m in modules else m.split(".")[0] for m in out}


def part(module: str) -> str:
    return module.split(".")[0]


def graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported(name, path, set(files)) for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_imports_run_one_way():
    edges = graph()
    project = set(edges)
    wrong = sorted(f"{m} imports {t}" for m, targets in edges.items() for t in targets
                   if t in project and part(t) not in ALLOWED[part(m)])
    assert wrong == []


def test_the_serving_side_never_imports_torch_and_the_offline_side_never_streamlit():
    wrong = sorted(f"{m} imports {t}" for m, targets in graph().items() for t in targets
                   if t in FORBIDDEN_THIRD_PARTY[part(m)])
    assert wrong == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_checks_see_what_they_check():
    """The reader finds function-level and relative imports and names submodules, and the cycle finder finds
    a cycle: otherwise the tests above could pass on a tree they never read."""
    edges = graph()
    assert "store.shards" in edges["store.ingest"] and "precompute.jobs" in edges["precompute.pipeline"]
    assert "torch" in edges["precompute.hooks"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]] and cycles({"a": {"b"}, "b": set()}) == []
