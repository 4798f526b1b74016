"""The package's import graph, read with ``ast`` (module-level and function-level imports alike):
no import cycle between modules, and no import from a lower layer to a higher one (the layers of
README.md's "Layout" section)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "latentjax"

# Lowest first. A module belongs to the first layer with a prefix matching its dotted name.
LAYERS = (
    ("errors", "paths"),
    ("config", "configs", "models", "losses", "diffusion", "data", "parallel"),
    ("run", "factory"),
    ("convert", "eval"),
    ("train",),
    ("generate", "plan"),
    ("demo", "api", "pipeline", "probe"),
    ("commands", "__main__", "__init__"),
)
# Imports that run upwards, each with its reason (README.md lists them too).
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 2:
            parts = parts[:-1]  # latentjax/train/__init__.py is latentjax.train
        out[".".join(parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The latentjax modules ``path`` imports, wherever the import statement stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from latentjax.train import loop`` imports the module latentjax.train.loop.
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                for a in node.names
            ]
        else:
            continue
        found.update(n for n in names if n == "latentjax" or n.startswith("latentjax."))
    return found


def _layer(module: str) -> int:
    rest = module.removeprefix("latentjax.").removeprefix("latentjax")
    head = rest.split(".")[0] or "__init__"
    for rank, prefixes in enumerate(LAYERS):
        if head in prefixes:
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS (and README's layout)")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_every_module_has_a_layer():
    for module in _graph():
        _layer(module)


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    upward = [
        f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
        for a, targets in _graph().items()
        for b in targets
        if _layer(b) > _layer(a) and (a, b) not in ALLOWED_UPWARD
    ]
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("from latentjax.commands import main\n", "commands"),  # upward from models
        ("def f():\n    from latentjax.train import loop\n", "train"),  # inside a function
    ],
)
def test_the_check_sees_module_and_function_level_imports(tmp_path, source, bad):
    path = tmp_path / "probe.py"
    path.write_text(source)
    found = _imports(path, _modules())
    assert any(
        m.startswith(f"latentjax.{bad}") and _layer(m) > _layer("latentjax.models") for m in found
    )
