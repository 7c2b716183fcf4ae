"""Packages for the package tests, written as real directories and zips."""

from __future__ import annotations

import os
import zipfile

SELECTORS = """\
import importlib.resources
import os
import sys
import time

import pyproof

import {name}


class Scale(pyproof.Selector):
    def begin(self, ctx):
        ctx.outputs["x"] = 0
        ctx.outputs["setups"] = [[os.getpid(), {name}.SETUP_CALLS, {name}.VERSION]]
        order = getattr(sys.modules.get("_setup_order"), "names", [])
        ctx.outputs["order"] = [[os.getpid(), *order]]

    def process(self, cycles, ctx):
        time.sleep(ctx.inputs.get("sleep", 0))
        data = importlib.resources.files("{name}").joinpath("data/factor.txt")
        ctx.outputs["x"] += int(data.read_text()) * len(cycles)
"""

SETUP = """\
requires = {requires!r}


def setup(ctx):
    import {name}
    {name}.SETUP_CALLS += 1
    {name}.SETUP_ORDER = list(getattr({name}, "SETUP_ORDER", []))
    import sys
    sys.modules.setdefault("_setup_order", type(sys)("_setup_order"))
    order = sys.modules["_setup_order"].__dict__.setdefault("names", [])
    order.append(ctx.package)
"""


def write_package(root: str, name: str, *, factor: int = 3, version: int = 1,
                  requires: list[str] | None = None, setup: bool = True) -> str:
    """A package directory `root/name` with a selector module and a data file."""
    path = os.path.join(root, name)
    os.makedirs(os.path.join(path, "data"), exist_ok=True)
    with open(os.path.join(path, "__init__.py"), "w") as f:
        f.write(f"VERSION = {version}\nSETUP_CALLS = 0\n")
    with open(os.path.join(path, "selectors.py"), "w") as f:
        f.write(SELECTORS.format(name=name))
    with open(os.path.join(path, "data", "factor.txt"), "w") as f:
        f.write(str(factor))
    if setup:
        with open(os.path.join(path, "pyproof_setup.py"), "w") as f:
            f.write(SETUP.format(name=name, requires=list(requires or [])))
    return path


def zip_dir(directory: str, target: str) -> str:
    """Zip `directory` as its own top-level folder (as `zip -r` would)."""
    base = os.path.dirname(directory)
    with zipfile.ZipFile(target, "w") as zf:
        for root, _, files in os.walk(directory):
            for file in files:
                full = os.path.join(root, file)
                zf.write(full, os.path.relpath(full, base))
    return target
