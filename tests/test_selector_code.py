"""Selectors are loaded by the content of their code: an edit is re-imported, what was sent runs.

Pure-ish unit tests in this process: real files in tmp_path, real imports.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import uuid

import pytest

import pyproof
import pyproof.selector as selector_mod
from pyproof.query.spec import QuerySpec, SpecError
from pyproof.selector import SelectorCode, load_selector, selector_code
from tests.conftest import at_once

SELECTOR = """\
import pyproof
{imports}

class Scaled(pyproof.Selector):
    def process(self, events, ctx):
        pass

    def factor(self):
        return {factor}
"""


def write(path, text: str) -> None:
    # the same size and (likely) the same second as the version before it: an mtime-keyed
    # .pyc would call it unchanged
    path.write_text(text)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_an_edited_selector_file_is_imported_afresh(tmp_path):
    path = tmp_path / "sel.py"
    ref = f"{path}:Scaled"
    factors = []
    for factor in ("x1", "x3", "x7"):
        write(path, SELECTOR.format(imports="", factor=repr(factor)))
        factors.append(load_selector(ref)().factor())
    assert factors == ["x1", "x3", "x7"]


def test_an_edited_helper_module_the_selector_imports_is_imported_afresh(tmp_path, monkeypatch):
    helper = unique("helper")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "sel.py"
    write(path, SELECTOR.format(imports=f"import {helper}", factor=f"{helper}.FACTOR"))
    ref = f"{path}:Scaled"
    factors = []
    for factor in ("x1", "x3", "x7"):
        write(tmp_path / f"{helper}.py", f"FACTOR = {factor!r}\n")
        if factor == "x1":  # as a user's script would: leaves a .pyc behind
            importlib.import_module(helper)
        factors.append(load_selector(ref)().factor())
    assert factors == ["x1", "x3", "x7"]
    # the helper's importers get the new module too
    assert sys.modules[helper].FACTOR == "x7"


def test_a_selector_by_module_name_and_its_package_helpers_follow_edits(tmp_path, monkeypatch):
    package = unique("ana")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    write(tmp_path / package / "sel.py",
          SELECTOR.format(imports="from .consts import FACTOR", factor="FACTOR"))
    ref = f"{package}.sel:Scaled"
    factors = []
    for factor in ("x1", "x3"):
        write(tmp_path / package / "consts.py", f"FACTOR = {factor!r}\n")
        factors.append(load_selector(ref)().factor())
    assert factors == ["x1", "x3"]


def test_the_code_sent_runs_whatever_the_disk_holds_later(tmp_path):
    path = tmp_path / "sel.py"
    write(path, SELECTOR.format(imports="", factor="'x1'"))
    ref = f"{path}:Scaled"
    code = selector_code(ref)
    write(path, SELECTOR.format(imports="", factor="'x7'"))
    assert load_selector(ref, code)().factor() == "x1"
    os.remove(path)
    wire = SelectorCode.from_wire(ref, code.to_wire(), code.digest)
    assert load_selector(ref, wire)().factor() == "x1"


def test_sources_that_do_not_match_their_hash_are_refused(tmp_path):
    path = tmp_path / "sel.py"
    write(path, SELECTOR.format(imports="", factor="'x1'"))
    code = selector_code(f"{path}:Scaled")
    tampered = [[None, str(path), SELECTOR.format(imports="", factor="'x9'")]]
    with pytest.raises(pyproof.SelectorError,
                       match=r"the sources sent do not match their hash [0-9a-f]{16}"):
        SelectorCode.from_wire(code.ref, tampered, code.digest)
    assert isinstance(pyproof.SelectorError("x"), pyproof.ProofError)


def test_only_the_users_own_imported_modules_are_part_of_the_code(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    helper, lazy, unused = unique("helper"), unique("lazy"), unique("unused")
    for name in (helper, lazy, unused):
        (tmp_path / f"{name}.py").write_text("X = 1\n")
    path = tmp_path / "sel.py"
    path.write_text(f"import numpy\nimport os.path\nimport pyproof\nfrom {helper} import X\n"
                    f"def f():\n    import {lazy}\n")
    code = selector_code(f"{path}:S")
    assert [(name, os.path.basename(p)) for name, p, _ in code.sources] == [
        (None, "sel.py"), (helper, f"{helper}.py"), (lazy, f"{lazy}.py")]
    # a module found in the Python installation is never the user's
    assert selector_code("tests.sample_selectors:ZmumuMass").sources[0][0] == \
        "tests.sample_selectors"
    assert selector_code("pyproof.demo:DimuonMass").sources == ()
    assert selector_code("numpy:ndarray").sources == ()


def test_the_hash_changes_with_any_of_the_sources(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    helper = unique("helper")
    (tmp_path / f"{helper}.py").write_text("X = 1\n")
    path = tmp_path / "sel.py"
    path.write_text(f"import {helper}\n")
    first = selector_code(f"{path}:S").digest
    assert selector_code(f"{path}:S").digest == first
    (tmp_path / f"{helper}.py").write_text("X = 2\n")
    assert selector_code(f"{path}:S").digest != first


def test_two_threads_loading_one_new_selector_file_both_get_the_same_class(tmp_path):
    path = tmp_path / "slow.py"
    # a slow module body: the second thread arrives while the first still runs it
    path.write_text("import time\nimport pyproof\ntime.sleep(0.5)\n\n"
                    "class Slow(pyproof.Selector):\n    pass\n")
    ref = f"{path}:Slow"
    got = at_once(2, lambda: load_selector(ref), timeout=10)
    assert len(got) == 2 and all(isinstance(c, type) for c in got), got
    assert got[0] is got[1]


def test_the_gateway_accepts_the_code_and_checks_its_shape():
    spec = {"selector": "m:S", "cycles": 1, "inputs": {}, "branches": None,
            "concatenate": [], "client_address": "tcp://x", "packetizer": None,
            "packetizer_params": None, "sys_path": [], "selector_hash": "ab",
            "selector_sources": [[None, "/a.py", "x = 1"], ["m", "/m.py", ""]]}
    checked = QuerySpec.from_wire(spec)
    assert checked.selector_sources == ((None, "/a.py", "x = 1"), ("m", "/m.py", ""))
    assert QuerySpec.from_wire(checked.to_wire()) == checked
    with pytest.raises(SpecError, match=r"^selector_sources element must be "
                                        r"\[module, path, source\]$"):
        QuerySpec.from_wire({**spec, "selector_sources": [["m", "/m.py"]]})


def _age(*paths, seconds: float = 60.0) -> None:
    """Set the mtime of `paths` `seconds` in the past (as files not edited lately are)."""
    past = time.time() - seconds
    for path in paths:
        os.utime(path, (past, past))


def test_code_read_before_is_reused_until_a_file_or_a_directory_changes(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    helper = unique("helper")
    (tmp_path / f"{helper}.py").write_text("X = 1\n")
    path = tmp_path / "sel.py"
    path.write_text(f"import {helper}\nimport {helper}_later\n")
    _age(tmp_path / f"{helper}.py", path, tmp_path)
    parsed: list[str] = []
    real = selector_mod._imported_names
    monkeypatch.setattr(selector_mod, "_imported_names",
                        lambda source, package: parsed.append(source) or real(source, package))
    first = selector_code(f"{path}:S")
    assert len(parsed) == 2 and len(first.sources) == 2
    parsed.clear()
    assert selector_code(f"{path}:S") is first and parsed == []  # nothing read again
    # the helper edited: same size, mtime set back to what it was (ctime still moves)
    stat = os.stat(tmp_path / f"{helper}.py")
    (tmp_path / f"{helper}.py").write_text("X = 2\n")
    os.utime(tmp_path / f"{helper}.py", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = selector_code(f"{path}:S")
    assert second.digest != first.digest and "X = 2\n" in {s[2] for s in second.sources}
    _age(tmp_path / f"{helper}.py", tmp_path)
    assert selector_code(f"{path}:S") is not second  # read once more, then trusted
    parsed.clear()
    assert selector_code(f"{path}:S").digest == second.digest and parsed == []
    # a module the selector imports appears next to it: the directory changed
    (tmp_path / f"{helper}_later.py").write_text("Y = 1\n")
    third = selector_code(f"{path}:S")
    assert f"{helper}_later" in {s[0] for s in third.sources}


def test_code_of_files_written_just_now_is_read_again_every_time(tmp_path, monkeypatch):
    # the same size written within one timestamp tick keeps the mtime: never trusted
    path = tmp_path / "sel.py"
    path.write_text("A = 1\n")
    first = selector_code(f"{path}:S")
    stat = os.stat(path)
    path.write_text("A = 2\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert selector_code(f"{path}:S").digest != first.digest
