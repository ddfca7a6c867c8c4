"""The shape of the code: no import cycles, the layering between packages, docstrings.

The import graph is built from the source with `ast` (nothing is imported):
every ``import`` and ``from ... import`` statement of every module, whether at
module level, under ``if TYPE_CHECKING:`` or inside a function. All three
count. A ``TYPE_CHECKING`` import is no runtime cycle, and an import inside a
function does not run at import time, but either one only hides a cycle that
is still there in the design: the two modules still cannot be understood, or
split, apart. So none of them may close a cycle. Run this file as a script
to print the cycles of each kind, and the edges of the last two.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The packages whose imports are checked.
PACKAGES = ("xmlrc", "udp2xmpp", "rcclient", "rc2udp", "xmlrc_emitter", "harness")
#: The five product packages: their public modules and classes need a docstring.
PRODUCTS = ("xmlrc", "udp2xmpp", "rcclient", "rc2udp", "xmlrc_emitter")
KINDS = ("module", "type_checking", "function")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


def find_modules() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            name = ".".join(parts)
            modules[name] = Module(name, path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, kind: str) -> Iterator[tuple[str, ast.Import | ast.ImportFrom]]:
    """Every import statement under `node`, with the kind of place it is in."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield kind, child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]), "type_checking")
            for stmt in child.orelse:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]), kind)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _imports(child, "function" if kind == "module" else kind)
        else:
            yield from _imports(child, kind)


def _targets(module: Module, node: ast.Import | ast.ImportFrom, known: Iterable[str]) -> set[str]:
    """The modules of ours `node` imports (``from pkg import mod`` is pkg.mod)."""
    known = set(known)
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.name.split(".")
            if not module.is_package:
                base.pop()
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join([*base, *([node.module] if node.module else [])])
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{alias.name}" for alias in node.names]
        names = [name if name in known else prefix for name in names]
    found = set()
    for name in names:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in known and name != module.name:
            found.add(name)
    return found


def import_graph() -> dict[str, dict[str, set[str]]]:
    """kind -> module -> the modules it imports in places of that kind."""
    modules = find_modules()
    graph: dict[str, dict[str, set[str]]] = {kind: {} for kind in KINDS}
    for module in modules.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
        for kind, node in _imports(tree, "module"):
            graph[kind].setdefault(module.name, set()).update(_targets(module, node, modules))
    return graph


def merged(graph: dict[str, dict[str, set[str]]], kinds: Iterable[str]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for kind in kinds:
        for source, targets in graph[kind].items():
            edges.setdefault(source, set()).update(targets)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def _package(name: str) -> str:
    return name.split(".", 1)[0]


def test_no_import_cycles_of_any_kind() -> None:
    graph = import_graph()
    assert graph["module"], "the graph builder found no imports at all"
    assert cycles(merged(graph, KINDS)) == []


def test_the_core_imports_no_product_and_nothing_imports_the_harness() -> None:
    edges = merged(import_graph(), KINDS)
    wrong = []
    for source, targets in edges.items():
        for target in targets:
            src, dst = _package(source), _package(target)
            if src == "xmlrc" and dst != "xmlrc":
                wrong.append(f"{source} -> {target} (the core imports only itself)")
            if src != "harness" and dst in ("harness", "tests"):
                wrong.append(f"{source} -> {target} (products never import test code)")
            if src == "xmlrc_emitter" and dst not in ("xmlrc", "xmlrc_emitter"):
                wrong.append(f"{source} -> {target} (the emitter imports only xmlrc)")
            # `rcclient audit` reads the wiki's own record through rc2udp's API client
            # and poller (continuation, User-Agent and contact, maxlag, page delay,
            # limits): one polite HTTP client, not two. Only the command-line shell
            # may do so; the library bots import (RCClient, filters, audit.compare)
            # stays free of HTTP, and rc2udp never depends on the reader.
            if src == "rcclient" and dst == "rc2udp" and source != "rcclient.cli":
                wrong.append(f"{source} -> {target} (only rcclient's CLI uses rc2udp)")
            if src == "rc2udp" and dst == "rcclient":
                wrong.append(f"{source} -> {target} (rc2udp never imports rcclient)")
    assert wrong == []


def test_product_modules_never_mention_tests() -> None:
    # `tests` is not in the graph (not one of PACKAGES): look for it by name.
    offenders = []
    for module in find_modules().values():
        if _package(module.name) == "harness":
            continue
        tree = ast.parse(module.path.read_text(encoding="utf-8"))
        for _kind, node in _imports(tree, "module"):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:  # a relative import stays inside its own package
                names = [node.module] if node.level == 0 and node.module else []
            if any(_package(name) in ("tests", "harness") for name in names):
                offenders.append(module.name)
    assert offenders == []


def missing_docstrings() -> list[str]:
    """Public modules and classes of the products without a docstring (and functions
    a package's ``__all__`` exports)."""
    missing = []
    for module in find_modules().values():
        if _package(module.name) not in PRODUCTS:
            continue
        if any(part.startswith("_") for part in module.name.split(".")):
            continue
        tree = ast.parse(module.path.read_text(encoding="utf-8"))
        if not ast.get_docstring(tree):
            missing.append(f"module {module.name}")
        exported: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                exported = {ast.literal_eval(e) for e in getattr(node.value, "elts", [])}
        for node in tree.body:
            public = not getattr(node, "name", "_").startswith("_")
            if isinstance(node, ast.ClassDef) and public and not ast.get_docstring(node):
                missing.append(f"class {module.name}.{node.name}")
            if (
                module.is_package
                and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.name in exported
                and not ast.get_docstring(node)
            ):
                missing.append(f"function {module.name}.{node.name}")
    return missing


def test_every_public_module_and_class_says_what_it_is_for() -> None:
    assert missing_docstrings() == []


def _report() -> None:
    graph = import_graph()
    print("cycles, module-level imports:", cycles(graph["module"]))
    print("cycles, + TYPE_CHECKING:", cycles(merged(graph, KINDS[:2])))
    print("cycles, + inside functions:", cycles(merged(graph, KINDS)))
    for kind in KINDS[1:]:
        print(f"{kind} imports:")
        for source, targets in sorted(graph[kind].items()):
            if targets:
                print(f"  {source} -> {', '.join(sorted(targets))}")
    print("missing docstrings:", *missing_docstrings(), sep="\n  ")


if __name__ == "__main__":
    _report()
