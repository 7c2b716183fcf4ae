"""Imports run one way: lower layers never import higher ones (pure cores import no shell)."""

from __future__ import annotations

import ast
import pathlib

import pytest

import pyproof

ROOT = pathlib.Path(pyproof.__file__).parent

# (package or module, what it must never import)
RULES = [
    ("transport", ("pyproof.datasets", "pyproof.actors", "pyproof.client", "pyproof.query")),
    ("query", ("pyproof.actors", "pyproof.client", "pynng", "threading", "time", "thespian")),
    ("datasets/cluster_verify.py", ("pyproof.client",)),
    ("datasets/records.py", ("pyproof.client", "pyproof.actors")),
]


def imports(path: pathlib.Path) -> set[str]:
    """Every module `path` imports, TYPE_CHECKING blocks included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


@pytest.mark.parametrize(("where", "forbidden"), RULES)
def test_a_lower_layer_imports_nothing_above_it(where, forbidden):
    target = ROOT / where
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert files
    for path in files:
        bad = sorted(m for m in imports(path)
                     if any(m == f or m.startswith(f"{f}.") for f in forbidden))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
