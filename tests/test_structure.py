"""The shape of the code that issue #14 set, kept by a test so that it does not drift back.

No Python module of portal/ or workers/ over 600 lines, no function over 80 lines, no import cycle
between first-party modules (imports at module level), and few first-party imports inside
functions, each with a comment that says why it cannot be at the top. The code is read with `ast`,
never imported, so the test is fast and sees modules that no other test loads."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("portal", "workers")
FIRST_PARTY = (*PACKAGES, "config")
MODULE_LINES = 600
FUNCTION_LINES = 80
IMPORTS_IN_FUNCTIONS = 15


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: list[str]

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def _modules() -> dict[str, Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            source = path.read_text(encoding="utf-8")
            found[".".join(parts)] = Module(".".join(parts), path, ast.parse(source), source.splitlines())
    return found


MODULES = _modules()


def _imported_names(module: Module, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The first-party modules an import statement loads (`from a import b` loads a.b when b is a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.name.split(".")
            if not module.is_package:
                base.pop()
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in MODULES else prefix for alias in node.names]
    return [name for name in names if name.split(".")[0] in FIRST_PARTY]


def _owner(name: str) -> str | None:
    """The module of ours that a dotted name points into."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _walk_imports(module: Module):
    """(import node, inside a function?) for every import outside `if TYPE_CHECKING:` blocks."""

    def visit(nodes, in_function):
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node, in_function
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from visit(node.body, True)
            elif isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                continue
            else:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt) or isinstance(child, ast.ExceptHandler):
                        yield from visit([child] if isinstance(child, ast.stmt) else child.body, in_function)

    yield from visit(module.tree.body, False)


def test_no_module_is_over_600_lines():
    long = {name: len(m.lines) for name, m in MODULES.items() if len(m.lines) > MODULE_LINES}
    assert long == {}


def test_no_function_is_over_80_lines():
    long = []
    for name, module in MODULES.items():
        for node in ast.walk(module.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert long == []


def test_imports_inside_functions_are_few_and_each_says_why():
    inside, unexplained = [], []
    for name, module in MODULES.items():
        for node, in_function in _walk_imports(module):
            if not in_function or not _imported_names(module, node):
                continue
            where = f"{name}:{node.lineno}"
            inside.append(where)
            line, before = module.lines[node.lineno - 1], module.lines[node.lineno - 2].strip()
            if "#" not in line.split("import", 1)[1] and not before.startswith("#"):
                unexplained.append(where)
    assert unexplained == [], "a first-party import inside a function needs a comment that says why"
    assert len(inside) <= IMPORTS_IN_FUNCTIONS, inside


def test_no_import_cycle_between_first_party_modules():
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, module in MODULES.items():
        for node, in_function in _walk_imports(module):
            if in_function:
                continue
            for target in _imported_names(module, node):
                owner = _owner(target)
                if owner and owner != name:
                    graph[name].add(owner)
    cycles = _strongly_connected(graph)
    assert cycles == []


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module, iteratively (no recursion limit to meet)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_checks_see_what_they_look_for():
    """The walkers find known shapes in a made-up module: a cycle, a long function, an import inside."""
    source = "import portal.b\n\ndef f():\n    from portal import c  # breaks a cycle\n" + "    x = 1\n" * 80
    module = Module("portal.a", ROOT / "portal" / "a.py", ast.parse(source), source.splitlines())
    imports = list(_walk_imports(module))
    assert [(n.lineno, inside) for n, inside in imports] == [(1, False), (4, True)]
    assert _strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _strongly_connected({"a": {"b"}, "b": set()}) == []
    function = next(n for n in ast.walk(module.tree) if isinstance(n, ast.FunctionDef))
    assert function.end_lineno - function.lineno + 1 > FUNCTION_LINES


def test_no_merge_conflict_markers_are_left_in_the_tree():
    """A merge resolved in a hurry once left <<<<<<< in static/app.css: the browser ignored the
    rules after it, and no other test looks at the style sheet."""
    root = Path(__file__).resolve().parents[1]
    left = []
    for folder in ("portal", "workers", "templates", "static", "tests", "docs", "migrations"):
        for path in (root / folder).rglob("*"):
            if path.suffix not in {".py", ".html", ".css", ".js", ".md", ".txt", ".yaml", ".yml", ".cfg"}:
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line == "=======":
                    left.append(f"{path.relative_to(root)}:{number}")
    for name in ("README.md", "Makefile", "config.py", "wsgi.py"):
        text = (root / name).read_text()
        if "\n<<<<<<< " in text or "\n>>>>>>> " in text:
            left.append(name)
    assert left == []
