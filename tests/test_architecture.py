"""The import rule of docs/architecture.md: every import points down the layers, and no two modules
import each other through any chain, counting imports inside functions and
``importlib.import_module("vireid....")`` calls with a literal name.

The layers, lowest first (a module may import its own layer and lower ones)::

    1 foundation    errors, registry, config, _compat
    2 parts         data, modeling, evaluation, baselines
    3 registration  builtins (imports every built-in part), plugins (users' parts, after the built-ins)
    4 engine        engine (trainer, checkpoint, distributed, logging, transfer, precision),
                    inference (embedders, feature extraction) and the package's front door ``vireid.load``
    5 workflows     export (writers), retrieval, viz, workflows
    6 serve         serve
    7 cli           cli, ``python -m vireid``
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

LAYERS: dict[str, int] = {
    "vireid.errors": 1, "vireid.registry": 1, "vireid.config": 1, "vireid._compat": 1,
    "vireid.data": 2, "vireid.modeling": 2, "vireid.evaluation": 2, "vireid.baselines": 2,
    "vireid.builtins": 3, "vireid.plugins": 3,
    "vireid.engine": 4, "vireid.inference": 4, "vireid": 4,
    "vireid.export": 5, "vireid.retrieval": 5, "vireid.viz": 5, "vireid.workflows": 5,
    "vireid.serve": 6,
    "vireid.cli": 7, "vireid.__main__": 7,
}
LAYER_NAMES = {1: "foundation", 2: "parts", 3: "registration", 4: "engine/inference", 5: "workflows",
               6: "serve", 7: "cli"}


def find_modules(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Every module of the ``vireid`` package under ``src``: dotted name -> (file, is a package)."""
    modules = {}
    for path in sorted((src / "vireid").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


def layer_of(module: str) -> int:
    """The layer of a module: the longest prefix of its name in :data:`LAYERS`."""
    name = module
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    raise AssertionError(f"module {module} belongs to no layer; add its package to LAYERS in {__file__} "
                         "and to docs/architecture.md")


def _known(name: str, modules: dict) -> str:
    """The module ``name`` refers to (``a.b.func`` -> ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def module_imports(module: str, modules: dict) -> list[tuple[str, int]]:
    """(imported vireid module, line) for every import in ``module``, at any depth of the file."""
    path, is_package = modules[module]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((full if full in modules else base, node.lineno))
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, node.lineno))
    out = []
    for name, line in found:
        if name == "vireid" or name.startswith("vireid."):
            target = _known(name, modules)
            if target and target != module:
                out.append((target, line))
    return out


def import_graph(src: Path = SRC) -> dict[str, dict[str, int]]:
    """module -> {imported module: first line}."""
    modules = find_modules(src)
    graph: dict[str, dict[str, int]] = {}
    for module in modules:
        edges: dict[str, int] = {}
        for target, line in module_imports(module, modules):
            edges.setdefault(target, line)
        graph[module] = edges
    return graph


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """One sentence per import of a higher layer."""
    bad = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            if layer_of(target) > layer_of(module):
                bad.append(f"{module} (layer {layer_of(module)} {LAYER_NAMES[layer_of(module)]}) imports "
                           f"{target} (layer {layer_of(target)} {LAYER_NAMES[layer_of(target)]}) at line {line}")
    return bad


def import_circles(graph: dict[str, dict[str, int]]) -> list[tuple[list[str], list[str]]]:
    """Per group of modules that reach each other through imports (Tarjan's strongly connected
    components): one shortest circle ``[a, b, ..., a]`` through its first member, and all its members."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    circles = []
    for group in groups:
        members = set(group)
        start = group[0]
        # shortest way back to the start inside the group (breadth first)
        previous = {start: None}
        queue = [start]
        end = None
        while queue and end is None:
            node = queue.pop(0)
            for nxt in sorted(graph[node]):
                if nxt == start:
                    end = node
                    break
                if nxt in members and nxt not in previous:
                    previous[nxt] = node
                    queue.append(nxt)
        chain = [start]
        node = end
        while node is not None and node != start:
            chain.insert(1, node)
            node = previous[node]
        circles.append((chain + [start], group))
    return circles


def test_every_module_has_a_layer():
    for module in find_modules():
        layer_of(module)


def test_no_upward_import():
    bad = upward_imports(import_graph())
    assert not bad, "imports that point up the layers (docs/architecture.md):\n  " + "\n  ".join(bad)


def test_no_import_circle():
    graph = import_graph()
    circles = import_circles(graph)
    described = [" -> ".join(f"{m} (line {graph[m][n]})" for m, n in zip(c, c[1:])) + f" -> {c[-1]}"
                 + (f"\n    (one of the circles among {len(group)} modules: {', '.join(group)})" if len(group) > 2 else "")
                 for c, group in circles]
    assert not circles, "import circles (docs/architecture.md):\n  " + "\n  ".join(described)


def test_the_checker_sees_in_function_imports_circles_and_upward_imports(tmp_path):
    """The rule's own check, on a throw-away package: an import inside a function, a relative import and
    an ``importlib.import_module`` call are all counted."""
    pkg = tmp_path / "vireid"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "workflows").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "engine" / "__init__.py").write_text("")
    (pkg / "workflows" / "__init__.py").write_text("")
    (pkg / "engine" / "a.py").write_text("def f():\n    from vireid.workflows.b import g\n")
    (pkg / "workflows" / "b.py").write_text("from ..engine import a\nimport importlib\n"
                                            "def g():\n    importlib.import_module('vireid.workflows.c')\n")
    (pkg / "workflows" / "c.py").write_text("from vireid.workflows import b\nfrom vireid.errors import X\n")
    graph = import_graph(tmp_path)
    assert graph["vireid.engine.a"] == {"vireid.workflows.b": 2}
    assert graph["vireid.workflows.b"] == {"vireid.engine.a": 1, "vireid.workflows.c": 4}
    assert upward_imports(graph) == ["vireid.engine.a (layer 4 engine/inference) imports vireid.workflows.b "
                                     "(layer 5 workflows) at line 2"]
    assert import_circles(graph) == [(["vireid.engine.a", "vireid.workflows.b", "vireid.engine.a"],
                                      ["vireid.engine.a", "vireid.workflows.b", "vireid.workflows.c"])]


CLI_MAY_IMPORT = ("vireid.cli", "vireid.errors", "vireid.workflows", "vireid.serve")


def cli_reaches_past_workflows(src: Path = SRC) -> list[str]:
    """One sentence per import in a ``vireid.cli`` module of anything but the cli itself, the errors,
    a workflow or the server (issue 14: the cli only parses arguments and calls a workflow)."""
    modules = find_modules(src)
    bad = []
    for module in sorted(modules):
        if not (module == "vireid.cli" or module.startswith("vireid.cli.")):
            continue
        for target, line in sorted(set(module_imports(module, modules)), key=lambda edge: edge[1]):
            if not any(target == allowed or target.startswith(allowed + ".") for allowed in CLI_MAY_IMPORT):
                bad.append(f"{module} imports {target} at line {line}; move that logic into a vireid.workflows module")
    return bad


def test_cli_only_parses_arguments_and_calls_a_workflow():
    bad = cli_reaches_past_workflows()
    assert not bad, ("the cli imports only vireid.cli, vireid.errors, vireid.workflows and vireid.serve "
                     "(docs/architecture.md):\n  " + "\n  ".join(bad))


def test_the_cli_checker_sees_imports_inside_functions(tmp_path):
    pkg = tmp_path / "vireid"
    for sub in ("cli", "workflows", "data"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "workflows" / "w.py").write_text("")
    (pkg / "data" / "d.py").write_text("")
    (pkg / "cli" / "c.py").write_text("from vireid.errors import X\nfrom vireid.workflows import w\n"
                                      "def f():\n    from vireid.data.d import g\n")
    assert cli_reaches_past_workflows(tmp_path) == [
        "vireid.cli.c imports vireid.data.d at line 4; move that logic into a vireid.workflows module"]
