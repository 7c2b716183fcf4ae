"""End to end on a real lite cluster: an edited selector always runs as edited.

One session, its workers alive across queries; the selector (or a helper module
it imports) is rewritten between queries, and every query's outputs follow.
"""

from __future__ import annotations

import time
import uuid

import pytest

SELECTOR = """\
import pyproof
{imports}

class Scaled(pyproof.Selector):
    def begin(self, ctx):
        ctx.outputs["x"] = 0

    def process(self, cycles, ctx):
        ctx.outputs["x"] += {factor} * len(cycles)
"""


@pytest.mark.parametrize("by", ["file", "module"])
def test_a_selector_edited_between_queries_runs_as_edited(session, tmp_path, monkeypatch, by):
    name = f"scaled_{uuid.uuid4().hex[:8]}"
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / f"{name}.py"
    ref = f"{path}:Scaled" if by == "file" else f"{name}:Scaled"
    got = []
    for factor in (1, 3, 7):
        path.write_text(SELECTOR.format(imports="", factor=factor))
        got.append(session.process(ref, cycles=40, progress=False).outputs["x"])
    assert got == [40, 120, 280]


def test_a_helper_module_edited_between_queries_runs_as_edited(session, tmp_path, monkeypatch):
    helper = f"helper_{uuid.uuid4().hex[:8]}"
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "sel.py"
    path.write_text(SELECTOR.format(imports=f"from {helper} import FACTOR", factor="FACTOR"))
    got = []
    for factor in (1, 3, 7):
        (tmp_path / f"{helper}.py").write_text(f"FACTOR = {factor}\n")
        got.append(session.process(f"{path}:Scaled", cycles=40, progress=False).outputs["x"])
    assert got == [40, 120, 280]


def test_a_selector_file_rewritten_after_it_was_read_runs_as_it_was_read(session, tmp_path):
    # importing version 1 (as the client does, after reading it) rewrites the file to
    # version 7: workers reading the file from disk would run 7, the sent code runs 1
    path = tmp_path / "sel.py"
    seven = SELECTOR.format(imports="", factor=7)
    path.write_text(SELECTOR.format(
        imports=f"with open(__file__, 'w') as f:\n    f.write({seven!r})", factor=1))
    result = session.process(f"{path}:Scaled", cycles=40, progress=False)
    # the workers run that code too (rewriting the file), and one that got no packet may
    # still be at it when the result is in (a query takes milliseconds): wait for it
    deadline = time.monotonic() + 10
    while path.read_text() != seven and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.read_text() == seven
    assert result.outputs["x"] == 40
    assert session.process(f"{path}:Scaled", cycles=40, progress=False).outputs["x"] == 280
