"""Imports run one way: layers → encoders / text → models / data → training / export / bench → commands.

A module may import (at the top or inside a function) only modules of its own level or below, and
no chain of top-level imports comes back to where it started. The foundation modules (errors,
registry, io, logs, version, _tf) sit below everything.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
# nlpkit sub-package -> level; modules directly under nlpkit/ are level 0.
LEVELS = {"layers": 1, "encoders": 2, "text": 2, "models": 3, "data": 3, "training": 4, "export": 4, "bench": 4}


def _modules():
    """{dotted name: path} of every module of the nlpkit package."""
    modules = {}
    for path in (ROOT / "nlpkit").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


def _level(name):
    parts = name.split(".")
    return LEVELS.get(parts[1], 0) if len(parts) > 1 else None  # None: the package root (it re-exports)


def _imports(path, top_level_only):
    """nlpkit modules imported by the file (`from a import b` counts as a.b where that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                         for a in node.names)
    return {name for name in found if name in MODULES}


def test_no_module_imports_from_a_higher_level():
    upward = [
        f"{name} (level {_level(name)}) imports {target} (level {_level(target)})"
        for name, path in sorted(MODULES.items()) if _level(name) is not None
        for target in sorted(_imports(path, top_level_only=False))
        if _level(target) is not None and _level(target) > _level(name)
    ]
    assert not upward, "\n".join(upward)


def test_no_cycle_of_top_level_imports():
    # A package's __init__ importing its own submodules is how it re-exports them, not a cycle.
    graph = {name: {t for t in _imports(path, top_level_only=True) if not t.startswith(name + ".")}
             for name, path in MODULES.items()}
    cycles = []

    def visit(name, chain):
        for target in sorted(graph[name]):
            if target in chain:
                cycles.append(" -> ".join(chain[chain.index(target):] + [target]))
            elif target not in done:
                visit(target, chain + [target])
        done.add(name)

    done = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_the_imports():
    # the analysis itself: a known downward import and a known package re-export are found
    assert "nlpkit.layers.attention.registry" in _imports(MODULES["nlpkit.layers.blocks.encoder"], True)
    assert "nlpkit.layers.blocks.encoder" in _imports(MODULES["nlpkit.layers"], True)
