"""The package's shape: no import cycles (function-level imports included), short modules, and
inference independent of the visualisation code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "deblur_cli"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
#: The style guide's bound on a module's length.
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``__init__`` as the package)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``module`` imports anywhere (also inside functions), except
    under ``if TYPE_CHECKING:``. ``from pkg import name`` counts as importing ``pkg.name`` when
    that is a module, else ``pkg`` (its ``__init__``). String values of an ``_EXPORTS`` dict (the
    lazy re-exports of a package ``__init__``) and ``importlib.import_module("...")`` with a
    literal name count too."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()

    def add(name: str) -> None:
        target = _known(name, modules)
        if target is not None and target != module:
            found.add(target)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in modules else base)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
                add(str(node.args[0].value))
        elif (
            isinstance(node, ast.Assign)
            and is_package
            and isinstance(node.value, ast.Dict)
            and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets)
        ):
            for value in node.value.values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    add(value.value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return out


def test_the_graph_sees_function_level_imports_but_not_type_checking_ones(graph):
    # The lazy ``Deblurrer`` of the top-level package is imported inside ``__getattr__``, the
    # gate inside ``Deblurrer.__init__``.
    assert f"{PACKAGE}.inference.deblurrer" in graph[PACKAGE]
    assert f"{PACKAGE}.gate.decision" in graph[f"{PACKAGE}.inference.deblurrer"]
    # ``gate.decision`` names ``BlurMeter`` in annotations only, under ``if TYPE_CHECKING:``.
    assert f"{PACKAGE}.gate.meter" not in graph[f"{PACKAGE}.gate.decision"]
    # Lazy re-exports of a package ``__init__`` are edges to their modules.
    assert f"{PACKAGE}.inference.planning" in graph[f"{PACKAGE}.inference"]


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles(graph):
    cycles = _cycles(graph)
    detail = "\n".join(
        " <-> ".join(c) + "\n    " + "\n    ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in cycles
    )
    assert not cycles, f"import cycles:\n{detail}"


def test_no_import_cycles_between_packages(graph):
    """Packages (``inference``, ``video``, ``hub``...) do not import each other both ways either,
    through any of their modules: each package's place in the layering is clear."""

    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages: dict[str, set[str]] = {}
    for m, targets in graph.items():
        packages.setdefault(package(m), set()).update(package(t) for t in targets if package(t) != package(m))
    cycles = _cycles(packages)
    detail = "\n".join(
        " <-> ".join(c) + "\n    " + "\n    ".join(f"{m} -> {t}" for m, ts in sorted(graph.items()) if package(m) in c
                                               for t in sorted(ts) if package(t) in c and package(t) != package(m))
        for c in cycles
    )  # fmt: skip
    assert not cycles, f"import cycles between packages:\n{detail}"


def test_modules_do_not_import_their_own_package_init(graph):
    """Inside the package, import the defining submodule: a package ``__init__`` re-exports its
    submodules, so importing it from below is a cycle in waiting."""
    bad = sorted(
        f"{m} imports {t}" for m, targets in graph.items() for t in targets if m.startswith(t + ".")
    )
    assert not bad, "\n".join(bad)


def test_inference_does_not_import_visualisation(graph):
    """The engine may record maps through ``viz.recording``; rendering stays on the viz side."""
    bad = sorted(
        f"{m} imports {t}"
        for m, targets in graph.items()
        if m.startswith(f"{PACKAGE}.inference")
        for t in targets
        if t.startswith(f"{PACKAGE}.viz") and t != f"{PACKAGE}.viz.recording"
    )
    assert not bad, "\n".join(bad)


def test_modules_are_short():
    long = sorted(
        (n, str(p.relative_to(ROOT.parent)))
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    )
    assert not long, f"modules over {MAX_LINES} lines: {long}"
