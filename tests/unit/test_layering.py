"""The import graph of nessus_pool, read statically with ``ast`` (nothing is imported, so no
import side effects): no import cycle, and the layer order of /work/shared/STYLE.md.

Every ``import`` counts, also one inside a function (a function-level import that dodges a
cycle is still a cycle), except those under ``if TYPE_CHECKING:``. ``from pkg import name``
is an edge to ``pkg.name`` when that is a module, else to ``pkg``; importing a submodule is not
counted as importing its parent package's ``__init__`` (as import-linter/grimp count them).

A violation is a string ``"<rule>: <importer> -> <imported>"``, or for a cycle
``"cycle: a -> b -> a"`` starting at its smallest module name. The test fails on any
violation that is not in ``KNOWN_VIOLATIONS`` and on any entry of ``KNOWN_VIOLATIONS`` that no
longer occurs, so the set is always exact; its failure message prints the current set."""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Violations on main that other work removes (none left). This set only shrinks: fix an import, then
# delete its line here. Never add to it; a new violation is a design change to discuss.
# (engine.core <-> engine.runner is not here: runner imports core only under TYPE_CHECKING.)
KNOWN_VIOLATIONS: frozenset[str] = frozenset()
#: the composition root: it may import the daemon and the CLI, and nothing imports it (the
#: ``cli`` imports its own parts: ``mcp_cli`` starts ``nessus-pool mcp``)
COMPOSITION_ROOT = ("cli", "__main__", "daemon", "mcp_cli")

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "nessus_pool"
#: enough for any real package; a graph with more elementary cycles than this is reported as such
MAX_CYCLES = 10_000


@dataclass
class ImportGraph:
    """Modules of one package, their imports of each other and of outside modules."""

    package: str
    #: module name -> file
    files: dict[str, Path] = field(default_factory=dict)
    #: (importer, imported module of ours) -> first line number
    edges: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (importer, outside module) -> first line number
    external: dict[tuple[str, str], int] = field(default_factory=dict)

    def imports(self, module: str) -> list[str]:
        return sorted({b for a, b in self.edges if a == module})

    def where(self, importer: str, imported: str) -> str:
        line = self.edges.get((importer, imported)) or self.external.get((importer, imported))
        return f"{self.files[importer]}:{line}"


def _module_name(package_dir: Path, path: Path) -> str:
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, at any depth, skipping ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes_of(other)
        else:
            yield from _import_nodes(child)


def _import_nodes_of(node: ast.stmt) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _import_nodes(node)


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts.pop()
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def build_graph(package_dir: Path) -> ImportGraph:
    """Parse every module under ``package_dir`` and collect its imports."""
    graph = ImportGraph(package=package_dir.name)
    trees: dict[str, tuple[ast.Module, bool]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        name = _module_name(package_dir, path)
        graph.files[name] = path
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        trees[name] = (tree, path.name == "__init__.py")

    def ours(target: str) -> str | None:
        """The module of ours that ``target`` names, or its longest existing parent."""
        parts = target.split(".")
        while parts:
            candidate = ".".join(parts)
            if candidate in graph.files:
                return candidate
            parts.pop()
        return None

    def add(importer: str, target: str, line: int) -> None:
        if target == graph.package or target.startswith(graph.package + "."):
            found = ours(target)
            if found is not None and found != importer:
                graph.edges.setdefault((importer, found), line)
        else:
            graph.external.setdefault((importer, target), line)

    for name, (tree, is_package) in trees.items():
        for node in _import_nodes(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(name, alias.name, node.lineno)
                continue
            base = _resolve_from(name, is_package, node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                add(name, submodule if submodule in graph.files else base, node.lineno)
    return graph


def _strongly_connected(nodes: list[str], succ: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's components, iteratively (no recursion limit to meet)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            if i < len(succ[node]):
                work.append((node, i + 1))
                nxt = succ[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                components.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def find_cycles(graph: ImportGraph) -> list[list[str]]:
    """Every elementary import cycle, each starting at its smallest module name."""
    nodes = sorted(graph.files)
    succ = {n: graph.imports(n) for n in nodes}
    cycles: list[list[str]] = []
    for component in _strongly_connected(nodes, succ):
        if len(component) < 2:
            continue
        members = set(component)
        for start in component:  # cycles through ``start`` and only larger names
            path = [start]
            iters = [iter(succ[start])]
            while iters:
                nxt = next(iters[-1], None)
                if nxt is None:
                    iters.pop()
                    path.pop()
                elif nxt == start:
                    cycles.append([*path, start])
                    if len(cycles) > MAX_CYCLES:
                        raise AssertionError(f"more than {MAX_CYCLES} import cycles")
                elif nxt in members and nxt > start and nxt not in path:
                    path.append(nxt)
                    iters.append(iter(succ[nxt]))
    return sorted(cycles)


def _within(module: str, group: str) -> bool:
    return module == group or module.startswith(group + ".")


def violations(graph: ImportGraph) -> dict[str, str]:
    """Each violation -> where it is (file:line of the import, or the cycle's first import)."""
    pkg = graph.package
    found: dict[str, str] = {}
    for cycle in find_cycles(graph):
        steps = itertools.pairwise(cycle)
        found["cycle: " + " -> ".join(cycle)] = ", ".join(graph.where(a, b) for a, b in steps)

    def forbid(rule: str, importers: list[str], targets: list[str], allowed: list[str]) -> None:
        for importer, imported in graph.edges:
            if (
                any(_within(importer, g) for g in importers)
                and not any(_within(importer, g) for g in allowed)
                and any(_within(imported, g) for g in targets)
            ):
                found[f"{rule}: {importer} -> {imported}"] = graph.where(importer, imported)

    forbid("api-layer", [f"{pkg}.api"], [f"{pkg}.{m}" for m in ("store", "nessus", "daemon")], [])
    forbid(
        "engine-layer", [f"{pkg}.engine"], [f"{pkg}.{m}" for m in ("api", "service", "daemon")], []
    )
    for importer, imported in graph.external:
        if _within(importer, f"{pkg}.engine") and (
            _within(imported, "aiohttp.web") or imported.startswith("aiohttp.web_")
        ):
            found[f"engine-layer: {importer} -> {imported}"] = graph.where(importer, imported)
    forbid(
        "composition-root",
        [pkg],
        [f"{pkg}.{m}" for m in COMPOSITION_ROOT],
        [f"{pkg}.{m}" for m in COMPOSITION_ROOT],
    )
    foundation = [f"{pkg}.{m}" for m in ("models", "errors", "clock")]
    for importer, imported in graph.edges:
        if any(_within(importer, g) for g in foundation) and not any(
            _within(importer, g) and _within(imported, g) for g in foundation
        ):
            found[f"foundation: {importer} -> {imported}"] = graph.where(importer, imported)
    return found


def _report(title: str, items: dict[str, str]) -> list[str]:
    return [title, *(f"  {v}    ({where})" for v, where in sorted(items.items()))]


def check(package_dir: Path, known: frozenset[str]) -> list[str]:
    """Lines describing what is wrong with the package against ``known``; empty when exact."""
    found = violations(build_graph(package_dir))
    new = {v: w for v, w in found.items() if v not in known}
    gone = {v: "no longer occurs: delete it" for v in known if v not in found}
    if not new and not gone:
        return []
    lines = []
    if new:
        lines += _report("import violations not in KNOWN_VIOLATIONS:", new)
    if gone:
        lines += _report("KNOWN_VIOLATIONS entries that no longer occur:", gone)
    lines += ["every import cycle found:"]
    lines += [f"  {v}" for v in sorted(found) if v.startswith("cycle: ")] or ["  none"]
    lines += ["the current set, to paste if the change is intended and the set only shrinks:"]
    lines += ["KNOWN_VIOLATIONS: frozenset[str] = frozenset({"]
    lines += [f"    {v!r}," for v in sorted(found)] + ["})"]
    return lines


# --- the package ---------------------------------------------------------------------------


def test_package_layering_matches_known_violations_exactly() -> None:
    graph = build_graph(PACKAGE_DIR)
    py_files = list(PACKAGE_DIR.rglob("*.py"))
    assert len(graph.files) == len(py_files) > 50
    # the parser must see the wiring it judges, or every rule passes on an empty graph
    assert ("nessus_pool.__main__", "nessus_pool.cli") in graph.edges
    problems = check(PACKAGE_DIR, KNOWN_VIOLATIONS)
    assert not problems, "\n".join(problems)


# --- the checker on small packages written for it ------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "pkg"


PACKAGE = {
    "pkg/__init__.py": "",
    "pkg/__main__.py": "from pkg.cli import main\n",
    "pkg/cli.py": "def main() -> None:\n    from pkg import daemon, mcp_cli\n",
    "pkg/mcp_cli.py": "from pkg.api import stdio\n\ndef main() -> None:\n    import pkg.daemon\n",
    "pkg/daemon.py": "from pkg.api import admin\nfrom pkg import service\n",
    "pkg/errors.py": "",
    "pkg/clock.py": "import time\n",
    "pkg/models.py": "import msgspec\n",
    "pkg/store.py": "from .models import Task\n",
    "pkg/service.py": "from pkg import store\nfrom pkg.engine import core\n",
    "pkg/api/__init__.py": "",
    "pkg/api/admin.py": "from aiohttp import web\nfrom pkg import service\n",
    "pkg/api/stdio.py": "from pkg.api import admin\n",
    "pkg/engine/__init__.py": "",
    "pkg/engine/core.py": "from . import runner\n",
    "pkg/engine/runner.py": (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.engine.core import Engine\n"
        "    from pkg.api import admin\n"
        "else:\n"
        "    import pkg.clock\n"
    ),
}


def test_checker_passes_a_clean_package(tmp_path: Path) -> None:
    pkg = _write(tmp_path, PACKAGE)
    graph = build_graph(pkg)
    # relative, function-level and ``else:`` imports are seen; TYPE_CHECKING ones are not
    assert graph.imports("pkg.store") == ["pkg.models"]
    assert graph.imports("pkg.engine.core") == ["pkg.engine.runner"]
    assert graph.imports("pkg.engine.runner") == ["pkg.clock"]
    assert graph.imports("pkg.cli") == ["pkg.daemon", "pkg.mcp_cli"]
    assert violations(graph) == {}
    assert check(pkg, frozenset()) == []


@pytest.mark.parametrize(
    ("rel", "text", "expected"),
    [
        (
            "pkg/engine/runner.py",
            "def later() -> None:\n    from pkg.engine.core import Engine\n",
            "cycle: pkg.engine.core -> pkg.engine.runner -> pkg.engine.core",
        ),
        ("pkg/api/stdio.py", "import pkg.store\n", "api-layer: pkg.api.stdio -> pkg.store"),
        (
            "pkg/api/stdio.py",
            "from ..daemon import run\n",
            "composition-root: pkg.api.stdio -> pkg.daemon",
        ),
        (
            "pkg/engine/http.py",
            "from aiohttp.web import Request\n",
            "engine-layer: pkg.engine.http -> aiohttp.web",
        ),
        (
            "pkg/engine/mcp.py",
            "from pkg.api import admin\n",
            "engine-layer: pkg.engine.mcp -> pkg.api.admin",
        ),
        (
            "pkg/service2.py",
            "from pkg.cli import main\n",
            "composition-root: pkg.service2 -> pkg.cli",
        ),
        ("pkg/errors.py", "from pkg import clock\n", "foundation: pkg.errors -> pkg.clock"),
        (
            "pkg/api/stdio.py",
            "def run() -> None:\n    from pkg.mcp_cli import main\n",
            "composition-root: pkg.api.stdio -> pkg.mcp_cli",
        ),
    ],
)
def test_checker_names_each_broken_rule(tmp_path: Path, rel: str, text: str, expected: str) -> None:
    pkg = _write(tmp_path, {**PACKAGE, rel: text})
    found = violations(build_graph(pkg))
    assert expected in found
    assert str(tmp_path / rel) + ":" in found[expected]
    problems = check(pkg, frozenset())
    assert f"  {expected}    ({found[expected]})" in problems
    # once known, the same package passes; once fixed, the stale entry fails
    assert check(pkg, frozenset(found)) == []
    clean = _write(tmp_path, PACKAGE)
    if rel not in PACKAGE:
        (tmp_path / rel).unlink()
    stale = check(clean, frozenset({expected}))
    assert f"  {expected}    (no longer occurs: delete it)" in stale


def test_every_cycle_of_a_knot_is_listed(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg import b, c\n",
            "pkg/b.py": "from pkg import a, c\n",
            "pkg/c.py": "import pkg.a\n",
        },
    )
    assert find_cycles(build_graph(pkg)) == [
        ["pkg.a", "pkg.b", "pkg.a"],
        ["pkg.a", "pkg.b", "pkg.c", "pkg.a"],
        ["pkg.a", "pkg.c", "pkg.a"],
    ]
