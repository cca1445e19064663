"""Tier 1: the layering of the vmmpy package, from its source (ast), nothing imported.

Rules:
- Only the binding layer calls libvmm: ``vmmpy/_ffi.py`` (loads it), ``errors.py`` (``_check``: return codes
  to exceptions), ``machine.py`` (Machine), ``serial.py`` (Serial, VirtioConsole), ``screen.py`` (Screen),
  ``input.py`` (Keyboard, Tablet) and ``net.py`` (Network, the NICs) may import ``ffi``/``lib`` (``vmmpy._ffi``
  or the extension ``vmmpy._vmm``). Everything else (events, cli, window, the pytest plugin, ...) goes through
  their Python API.
- The imports among vmmpy's modules form no cycle, counting imports inside functions; only those under
  ``if TYPE_CHECKING:`` (never executed) are left out.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(os.environ.get("VMMPY_ROOT", ROOT), "vmmpy")
BINDING = {"vmmpy._ffi", "vmmpy.errors", "vmmpy.machine", "vmmpy.serial", "vmmpy.screen", "vmmpy.input", "vmmpy.net"}
LIBVMM = {"vmmpy._ffi", "vmmpy._vmm"}


def _modules() -> dict[str, str]:
    return {
        "vmmpy" if f == "__init__.py" else f"vmmpy.{f[:-3]}": os.path.join(PKG, f)
        for f in sorted(os.listdir(PKG))
        if f.endswith(".py")
    }


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(path: str, module: str) -> set[str]:
    """The modules `module` imports at run time (anywhere but under `if TYPE_CHECKING:`)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if module == "vmmpy" else module.rsplit(".", 1)[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .x import y
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # from vmmpy import errors: a module
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods) | {"vmmpy._vmm"}
    return {m: {i for i in _imports(p, m) if i in known and i != m} for m, p in mods.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (c := dfs(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := dfs(n)):
            return c
    return None


def test_graph_sees_the_imports():
    g = _graph()
    assert {"vmmpy.errors", "vmmpy._ffi", "vmmpy.input", "vmmpy.screen"} <= g["vmmpy.machine"]
    assert "vmmpy.window" in g["vmmpy.cli"]  # a function-level import counts
    assert "vmmpy.machine" not in g["vmmpy.screen"]  # a TYPE_CHECKING one does not


def test_cycle_finder():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    # the package's __init__ imports its public names: leave out the edges *to* it (a submodule's
    # `from vmmpy.x import y` runs vmmpy/__init__.py first, which Python handles: it is the parent)
    g = {m: deps - {"vmmpy"} for m, deps in _graph().items()}
    cycle = _cycle(g)
    assert cycle is None, "import cycle among vmmpy modules: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", sorted(set(_modules()) - BINDING))
def test_only_the_binding_layer_uses_libvmm(module):
    uses = _graph()[module] & LIBVMM
    assert not uses, f"{module} imports {sorted(uses)}: call the Python API (Machine, m.screen, ...) instead"
