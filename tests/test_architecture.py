"""The package's architecture, checked: layers, no import circles, a numpy-only deploy path.

Every ``import`` in ``festgym/`` is read from the source (top-level and function-local ones alike;
imports under ``if TYPE_CHECKING:`` count as type-only). The checks:

* **No circles**: the graph of runtime imports between files has no cycle.
* **Layers**: a module imports only from its own layer or lower ones (:data:`LAYERS`, lowest
  first), for types too. Type-only imports are left out of the circle check: they may point back
  within a layer (a view naming the entity it shows).
* **The deploy path**: the folders of :data:`DEPLOY_PATH` import nothing from festgym beyond
  themselves and the base layer, and each of their modules imports with numpy, nvidia-ml-py and
  prometheus-client alone (pandas, YAML, Gymnasium, matplotlib, SciPy, torch made unimportable).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from isolation import HEAVY, blocking

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "festgym"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("festgym.errors", "festgym.config", "festgym.memo", "festgym.compiled", "festgym.signals", "festgym.plots",
     "festgym.resources"),
    ("festgym.control", "festgym.devices"),
    ("festgym.profiles", "festgym.deploy"),
    ("festgym.sim",),
    ("festgym.scenario",),
    ("festgym.policies",),
    ("festgym.envs", "festgym.simhost"),
    ("festgym.jobs",),
    ("festgym.cli", "festgym.__main__", "festgym"),
)
"""Packages and modules by layer, lowest first. ``festgym`` itself (its ``__init__``) is the top:
it registers the environments."""

BASE = LAYERS[0]
DEPLOY_PATH = ("festgym.control", "festgym.devices", "festgym.deploy")
"""The folders a GPU host runs (``pip install festgym[deploy]`` needs numpy, nvidia-ml-py and
prometheus-client only)."""
BLOCKED = HEAVY


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> list[tuple[str, bool]]:
    """(imported festgym module, type-only) for every import in ``module``'s source."""
    path = MODULES[module]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, type_only) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node, path.name == "__init__.py")
            for alias in node.names:  # `from package import module` imports the module
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in MODULES else target, type_only))
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(ast.parse(path.read_text(), str(path)), False)
    return [(name, type_only) for name, type_only in found if name == "festgym" or name.startswith("festgym.")]


GRAPH = {module: imports_of(module) for module in MODULES}


def layer_of(module: str) -> int:
    best, depth = None, -1
    for k, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = k, len(prefix)
    assert best is not None, f"{module} is in no layer of tests/test_architecture.py: LAYERS"
    return best


def test_every_module_is_in_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_import_circles():
    runtime = {m: sorted({t for t, type_only in deps if not type_only and t in MODULES and t != m})
               for m, deps in GRAPH.items()}
    cycles = _cycles(runtime)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c + c[:1]) for c in cycles)


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return out


def test_imports_point_down_the_layers():
    wrong = []
    for module, deps in GRAPH.items():
        for target, type_only in deps:
            if target not in MODULES:
                wrong.append(f"{module} imports {target}, which does not exist")
            elif layer_of(target) > layer_of(module):
                wrong.append(f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
                             + (" for types" if type_only else ""))
    assert not wrong, "\n".join(wrong)


ENTITIES = ("festgym.sim.instance", "festgym.sim.gpu", "festgym.sim.ledger", "festgym.sim.events", "festgym.sim.queues",
            "festgym.sim.observation")
"""The simulator's entities and what they book into: none may know the event loop, not even by type
(an instance reaches it only through the declared ``InstanceHost``; the views, which show the
simulator's state to policies, are not entities)."""


def test_entities_do_not_know_the_loop():
    wrong = [f"{m} imports {t}" for m in ENTITIES for t, _ in GRAPH[m] if t == "festgym.sim.simulator"]
    assert not wrong, "\n".join(wrong)


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


DEPLOY_MODULES = [m for m in MODULES if _in(m, DEPLOY_PATH)]


def test_the_deploy_path_imports_only_itself_and_the_base():
    wrong = [f"{m} imports {t}" for m in DEPLOY_MODULES for t, type_only in GRAPH[m]
             if not type_only and not _in(t, DEPLOY_PATH + BASE) and t != "festgym"]
    assert not wrong, "\n".join(wrong)


BLOCKER = blocking(BLOCKED)


def test_every_deploy_path_module_imports_with_numpy_alone():
    code = BLOCKER + "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in DEPLOY_MODULES) + \
        "import festgym.cli.main\nprint('ok')\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("blocked", BLOCKED[:3])
def test_the_blocker_blocks(blocked):
    done = subprocess.run([sys.executable, "-c", BLOCKER + f"import {blocked}"], capture_output=True, text=True)
    assert done.returncode != 0 and "blocked" in done.stderr
