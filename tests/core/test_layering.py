"""The layering of ``dpt_core``, checked over its import graph (parsed, not imported).

Dependency direction (docs/concepts.md, "Layering"): adapters -> the public API
(``dpt_core``, ``api``, ``query``, ``tracker``, ``cli``, ``server``) -> hooks and
records (``hookspecs``, ``events``) -> the store. The store never calls up; the
exports read through the store's query functions; nothing in ``dpt_core`` imports an
orchestrator.

What counts as an import (every ``import`` / ``from ... import`` statement in the
file, found by walking its syntax tree):

* module level, including inside ``try``/``if`` blocks and class bodies (kind ``module``);
* inside a function or method, the lazy imports (kind ``function``): they run later,
  but the dependency is as real, and a circle through them is a circle;
* under ``if TYPE_CHECKING:`` (kind ``type-checking``): annotations are part of the
  contract between modules.

How an import names its target module:

* ``import a.b.c`` and ``from a.b import c`` name the deepest ``dpt_core`` module that
  exists (``a.b.c`` if it is a module, else ``a.b``);
* ``from pkg import name``, where ``name`` is one a package ``__init__`` re-exports
  (``from dpt_core.tracker import get_tracker`` in ``dpt_core/__init__.py``), names
  the module that defines it, ``dpt_core.tracker``: going through the facade does not
  hide a dependency.

The one rule for package ``__init__`` modules: the edges from a package's
``__init__`` to its own submodules are not counted. Python runs a package's
``__init__`` before any of its submodules, so such an ``__init__`` is the package's
face (``dpt_core`` re-exporting the public API, ``dpt_core.cli`` assembling its
command modules), not a layer of its own; its submodules may use what it defines.
Everything else an ``__init__`` imports counts.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "dpt_core"

#: What the store must never import: the layers above it (the public API and its front
#: ends, and the parts built on them: reproduction, ingest, exports, the adapter kit).
ABOVE_THE_STORE = (
    "dpt_core.tracker",
    "dpt_core.api",
    "dpt_core.query",
    "dpt_core.cli",
    "dpt_core.server",
    "dpt_core.plugin_api",
    "dpt_core.adapter",
    "dpt_core.reproduce",
    "dpt_core.ingest",
    "dpt_core.export",
)
#: Orchestrators and adapters: dpt_core imports none of them, ever.
ORCHESTRATORS = ("airflow", "prefect", "dagster", "dpt_airflow", "dpt_prefect", "dpt_dagster")

#: Circles known and not fixed yet, each with why. Each entry must still be a circle
#: (the test fails once it is gone, so the list only shrinks).
KNOWN_CIRCLES: dict[frozenset[str], str] = {}


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    kind: str  # "module", "function" or "type-checking"
    names: tuple[str, ...] = ()

    def where(self, modules: dict[str, Path]) -> str:
        path = modules[self.source].relative_to(ROOT)
        return f"{path}:{self.line} ({self.kind})"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement of ``tree`` with its kind."""
    out: list[tuple[ast.Import | ast.ImportFrom, str]] = []

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                out.append((child, kind))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, "function" if kind == "module" else kind)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), "type-checking")
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), kind)
            else:
                visit(child, kind)

    visit(tree, "module")
    return out


class Graph:
    def __init__(self) -> None:
        self.modules = _modules()
        self.trees = {
            name: ast.parse(path.read_text(), str(path)) for name, path in self.modules.items()
        }
        self.reexports = {name: self._reexports(name) for name in self.modules}
        self.imports: list[Import] = []
        self.external: list[Import] = []
        for name in self.modules:
            self._collect(name)

    def is_package(self, name: str) -> bool:
        return self.modules[name].name == "__init__.py"

    def _base(self, source: str, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = source if self.is_package(source) else source.rpartition(".")[0]
        parts = package.split(".")
        parts = parts[: len(parts) - (node.level - 1)]
        return ".".join(parts + ([node.module] if node.module else []))

    def _known(self, dotted: str) -> str | None:
        while dotted and dotted not in self.modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def _reexports(self, name: str) -> dict[str, str]:
        """``{name: defining module}`` for what a package ``__init__`` imports from elsewhere."""
        if not self.is_package(name):
            return {}
        found = {}
        for node, _ in _statements(self.trees[name]):
            if isinstance(node, ast.ImportFrom):
                base = self._base(name, node)
                if base.startswith(PACKAGE) and base in self.modules:
                    for alias in node.names:
                        found[alias.asname or alias.name] = base
        return found

    def _defining(self, package: str, name: str, seen: frozenset[str] = frozenset()) -> str:
        module = self.reexports.get(package, {}).get(name)
        if module is None or module in seen:
            return package
        if self.is_package(module) and name in self.reexports.get(module, {}):
            return self._defining(module, name, seen | {package})
        return module

    def _collect(self, source: str) -> None:
        for node, kind in _statements(self.trees[source]):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self._add(source, alias.name, node.lineno, kind, ())
            else:
                base = self._base(source, node)
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    if submodule in self.modules:
                        self._add(source, submodule, node.lineno, kind, ())
                    elif base in self.modules:
                        target = self._defining(base, alias.name)
                        self._add(source, target, node.lineno, kind, (alias.name,))
                    else:
                        self._add(source, base, node.lineno, kind, (alias.name,))

    def _add(self, source: str, dotted: str, line: int, kind: str, names: tuple[str, ...]) -> None:
        if dotted == PACKAGE or dotted.startswith(PACKAGE + "."):
            target = self._known(dotted)
            if target is not None and target != source:
                self.imports.append(Import(source, target, line, kind, names))
        else:
            self.external.append(Import(source, dotted, line, kind, names))

    def counted(self) -> list[Import]:
        """The edges the circle check counts (see the module docstring for the rule)."""
        return [
            imp
            for imp in self.imports
            if not (self.is_package(imp.source) and imp.target.startswith(imp.source + "."))
        ]


@pytest.fixture(scope="module")
def graph() -> Graph:
    return Graph()


def _circles(edges: list[Import]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    out: dict[str, set[str]] = {}
    for imp in edges:
        out.setdefault(imp.source, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(out.get(v, ())):
            if w not in index:
                connect(w)
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
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(out):
        if v not in index:
            connect(v)
    return components


def _chain(graph: Graph, edges: list[Import], component: list[str]) -> str:
    """One circle through ``component``, each step with the file, line and kind of import."""
    inside = set(component)
    by_source: dict[str, list[Import]] = {}
    for imp in edges:
        if imp.source in inside and imp.target in inside:
            by_source.setdefault(imp.source, []).append(imp)
    start = component[0]
    # Breadth-first from start back to start: the shortest circle through it.
    paths: dict[str, list[Import]] = {start: []}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for imp in sorted(by_source.get(node, []), key=lambda i: (i.target, i.line)):
            if imp.target == start:
                steps = [*paths[node], imp]
                return "\n".join(
                    f"  {s.source} -> {s.target}   at {s.where(graph.modules)}" for s in steps
                )
            if imp.target not in paths:
                paths[imp.target] = [*paths[node], imp]
                queue.append(imp.target)
    raise AssertionError(f"no circle found through {component}")  # pragma: no cover


def test_the_graph_sees_imports_of_every_kind(graph: Graph) -> None:
    kinds = {imp.kind for imp in graph.imports}
    assert kinds == {"module", "function", "type-checking"}
    # A known lazy import and a known TYPE_CHECKING one are in the graph.
    assert any(
        i.source == "dpt_core.hookspecs"
        and i.target == "dpt_core.events"
        and i.kind == "type-checking"
        for i in graph.imports
    )
    assert any(
        i.source == "dpt_core.store.lineage"
        and i.target == "dpt_core.store.plugin"
        and i.kind == "function"
        for i in graph.imports
    )
    # A name taken from the facade names the module that defines it.
    assert graph._defining("dpt_core", "get_tracker") == "dpt_core.tracker"


def test_no_import_circle_in_dpt_core(graph: Graph) -> None:
    edges = graph.counted()
    components = _circles(edges)
    unknown = [c for c in components if frozenset(c) not in KNOWN_CIRCLES]
    report = "\n\n".join(
        f"circle among {', '.join(c)}:\n{_chain(graph, edges, c)}" for c in unknown
    )
    assert not unknown, f"import circles in dpt_core:\n\n{report}"
    gone = [sorted(k) for k in KNOWN_CIRCLES if sorted(k) not in components]
    assert not gone, f"these known circles are gone: remove them from KNOWN_CIRCLES: {gone}"


def test_the_store_never_imports_the_layers_above_it(graph: Graph) -> None:
    bad = [
        imp
        for imp in graph.imports
        if imp.source.startswith("dpt_core.store")
        and (
            any(imp.target == up or imp.target.startswith(up + ".") for up in ABOVE_THE_STORE)
            # the whole facade (``import dpt_core``) reaches everything; a constant is fine
            or (imp.target == PACKAGE and set(imp.names) - {"__version__"})
            or (imp.target == PACKAGE and not imp.names)
        )
    ]
    assert not bad, "the store calls up:\n" + "\n".join(
        f"  {i.source} -> {i.target} {list(i.names) or ''} at {i.where(graph.modules)}" for i in bad
    )


def _reach(graph: Graph, start: str) -> dict[str, list[Import]]:
    out: dict[str, list[Import]] = {}
    for imp in graph.counted():
        out.setdefault(imp.source, []).append(imp)
    paths: dict[str, list[Import]] = {start: []}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for imp in out.get(node, []):
            if imp.target not in paths:
                paths[imp.target] = [*paths[node], imp]
                queue.append(imp.target)
    return paths


def test_no_store_module_reaches_the_tracker_even_indirectly(graph: Graph) -> None:
    """Stronger than the direct rule: no chain of imports leads from the store up."""
    problems = []
    for module in sorted(m for m in graph.modules if m.startswith("dpt_core.store")):
        paths = _reach(graph, module)
        for up in ABOVE_THE_STORE:
            hits = sorted(t for t in paths if t == up or t.startswith(up + "."))
            if hits:
                steps = paths[hits[0]]
                problems.append(
                    f"{module} reaches {hits[0]}:\n"
                    + "\n".join(
                        f"  {s.source} -> {s.target} at {s.where(graph.modules)}" for s in steps
                    )
                )
    assert not problems, "\n".join(problems)


def test_the_exports_do_not_query_the_models(graph: Graph) -> None:
    bad = [
        imp
        for imp in graph.imports
        if imp.source.startswith("dpt_core.export") and imp.target == "dpt_core.store.models"
    ]
    assert not bad, "exports must read through the store's query functions:\n" + "\n".join(
        f"  {i.source} -> {i.target} at {i.where(graph.modules)}" for i in bad
    )


def test_dpt_core_imports_no_orchestrator(graph: Graph) -> None:
    bad = [
        imp
        for imp in graph.external
        if any(imp.target == o or imp.target.startswith(o + ".") for o in ORCHESTRATORS)
    ]
    assert not bad, "dpt_core imports an orchestrator or an adapter:\n" + "\n".join(
        f"  {i.source} -> {i.target} at {i.where(graph.modules)}" for i in bad
    )
    assert graph.external, "the graph found no third-party imports at all: the parser is broken"


def test_the_checks_fail_on_a_circle_and_name_its_chain(tmp_path: Path) -> None:
    """The circle finder on a made-up graph: it finds the circle and reports each step."""
    fake = Graph.__new__(Graph)
    fake.modules = {
        name: ROOT / "dpt_core" / f"{name.split('.')[-1]}.py" for name in ("a", "b", "c")
    }
    edges = [
        Import("a", "b", 3, "module"),
        Import("b", "c", 7, "function"),
        Import("c", "a", 9, "type-checking"),
    ]
    components = _circles(edges)
    assert components == [["a", "b", "c"]]
    chain = _chain(fake, edges, components[0])
    assert "a -> b   at dpt_core/a.py:3 (module)" in chain
    assert "b -> c   at dpt_core/b.py:7 (function)" in chain
    assert "c -> a   at dpt_core/c.py:9 (type-checking)" in chain
    assert _circles(edges[:2]) == []


# --------------------------------------------------------------------------- passed in, not called up


def test_the_store_resolves_what_its_caller_hands_it(dpt_env, tmp_path):
    """The store's lineage, stale and impact queries read paths and URIs themselves and
    take ``resolve=`` for anything else; ``dpt_core.lineage`` hands them the tracker's,
    so an object a plugin resolves still works there."""
    import dpt_core
    from dpt_core.errors import InvalidTarget
    from dpt_core.store import analysis, lineage
    from dpt_core.uri import normalize_uri

    raw, cal = tmp_path / "raw.txt", tmp_path / "cal.txt"
    raw.write_text("raw")
    with dpt_core.invocation("calibrate") as inv:
        inv.read(raw)
        cal.write_text("cal")
        inv.write(cal)

    class Frame:  # an object only a plugin knows
        def __init__(self, path):
            self.path = path

    class Frames:
        @dpt_core.hookimpl
        def dpt_resolve_uri(self, target):
            return str(target.path) if isinstance(target, Frame) else None

    def by_path(target):
        return normalize_uri(target.path)

    # Without resolve=, an object is not a path or URI: the store says so, naming it.
    with pytest.raises(InvalidTarget, match="Frame"):
        lineage.lineage(Frame(cal))
    # With it, the store uses what the caller resolved.
    graph = lineage.lineage(Frame(cal), resolve=by_path)
    assert graph.root == normalize_uri(cal)
    assert {n.uri for n in graph.nodes} == {graph.root, normalize_uri(raw)}
    assert [i["uri"] for i in analysis.impact_of_product(Frame(raw), resolve=by_path)] == [
        graph.root
    ]
    assert analysis.stale([Frame(cal)], resolve=by_path) == []
    # Paths still need nothing.
    assert lineage.lineage(cal).root == graph.root

    # The public API passes the tracker's resolver: plugins resolve the object.
    tracker = dpt_core.get_tracker()
    plugin = Frames()
    tracker.pm.register(plugin, name="frames")
    try:
        assert dpt_core.lineage(Frame(cal)).root == graph.root
    finally:
        tracker.pm.unregister(plugin)
