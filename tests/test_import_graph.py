"""The import graph of the project's packages, read with `ast` (nothing is imported): no cycles between
modules, and the layers only import downwards: graph_schema <- graph_store <- distill <- evaluation <- shelfgraph,
with serve beside distill (serve reads graph versions through graph_store and never imports distill).

Every import counts: module level, inside functions, and under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("graph_schema", "graph_store", "distill", "serve", "evaluation", "shelfgraph")

# package -> packages it must never import
FORBIDDEN: dict[str, frozenset[str]] = {
    "graph_schema": frozenset({"graph_store", "distill", "serve", "evaluation", "shelfgraph"}),
    "graph_store": frozenset({"distill", "serve", "evaluation", "shelfgraph"}),
    "serve": frozenset({"distill", "evaluation", "shelfgraph"}),
    "distill": frozenset({"serve", "evaluation", "shelfgraph"}),
    "evaluation": frozenset({"shelfgraph"}),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    return {module_name(path, root): path for package in packages for path in sorted((root / package).rglob("*.py"))}


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The modules of `known` that the import statements in `tree` load: `from a import b` loads `a.b` when
    that is a module and `a` otherwise; `import a.b` loads `a.b`."""
    modules = set(known)
    here = module.split(".") if is_package else module.split(".")[:-1]
    deps: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            deps.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    deps.add(f"{target}.{alias.name}")
                elif target in modules:
                    deps.add(target)
    deps.discard(module)
    return deps


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    return {
        module: imported_modules(ast.parse(path.read_text(encoding="utf-8")), module, path.name == "__init__.py",
                                 modules)
        for module, path in modules.items()
    }


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted; sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        work: list[tuple[str, Iterable[str]]] = []
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        work.append((start, iter(sorted(graph.get(start, ())))))
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def layer_violations(graph: Mapping[str, Iterable[str]], forbidden: Mapping[str, frozenset[str]]) -> list[str]:
    found: list[str] = []
    for module, deps in sorted(graph.items()):
        banned = forbidden.get(module.split(".")[0], frozenset())
        found.extend(f"{module} imports {dep}" for dep in sorted(deps) if dep.split(".")[0] in banned)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(project_modules(ROOT, PACKAGES))


# ------------------------------------------------------------------------------------------ the checkers


def test_the_cycle_finder_finds_a_cycle_and_only_the_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set(), "f": {"f"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    assert find_cycles({"x": {"y"}, "y": {"x"}, "p": {"q"}, "q": {"p", "x"}}) == [["p", "q"], ["x", "y"]]


def test_the_graph_reader_resolves_relative_and_submodule_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import thing\n")
    (pkg / "a.py").write_text("thing = 1\n\ndef later():\n    from pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import thing\n")
    (pkg / "c.py").write_text("from pkg import a\nimport pkg.sub.b\n")
    graph = import_graph(project_modules(tmp_path, ["pkg"]))
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.sub.b"}, "pkg.sub": set(), "pkg.sub.b": {"pkg.a"},
                     "pkg.c": {"pkg.a", "pkg.sub.b"}}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b"]]
    assert layer_violations({"serve.x": {"distill.y", "serve.z"}}, FORBIDDEN) == ["serve.x imports distill.y"]


# ------------------------------------------------------------------------------------------ the project


def test_every_package_is_read(graph: dict[str, set[str]]) -> None:
    for package in PACKAGES:
        assert package in graph
    assert {"serve.loader", "graph_store.neo4j", "distill.run.pipeline"} <= set(graph)
    assert "graph_schema.store" in graph["serve.loader"] | graph["serve.index"]


def test_no_import_cycles_between_modules(graph: dict[str, set[str]]) -> None:
    assert find_cycles(graph) == []


def test_serve_imports_nothing_from_distill(graph: dict[str, set[str]]) -> None:
    assert [v for v in layer_violations(graph, FORBIDDEN) if v.startswith("serve")] == []


def test_graph_schema_imports_no_other_project_package(graph: dict[str, set[str]]) -> None:
    assert [v for v in layer_violations(graph, FORBIDDEN) if v.startswith("graph_schema")] == []


def test_graph_store_imports_neither_distill_nor_serve(graph: dict[str, set[str]]) -> None:
    assert [v for v in layer_violations(graph, FORBIDDEN) if v.startswith("graph_store")] == []


def test_only_the_gateway_imports_litellm() -> None:
    importers = []
    for module, path in project_modules(ROOT, PACKAGES).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(name == "litellm" or name.startswith("litellm.") for name in names):
                importers.append(module)
    assert importers == ["distill.llm.gateway"]


def test_no_package_imports_a_layer_above_it(graph: dict[str, set[str]]) -> None:
    assert layer_violations(graph, FORBIDDEN) == []
