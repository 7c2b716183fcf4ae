"""Bad input on a real lite cluster: each gets a clear error naming the culprit,
no hang, and the session stays usable for the next query."""

from __future__ import annotations

import pytest

import pyproof
from tests.conftest import data_file, zmumu
from tests.sample_selectors import ZmumuMass


def still_works(session) -> None:
    result = session.process(ZmumuMass, dataset=zmumu())
    assert result.stats.entries == 2304


def test_a_missing_file_is_named(session, tmp_path):
    missing = tmp_path / "nope.root"
    with pytest.raises(pyproof.QueryError, match=r"file not found: .*nope\.root") as info:
        session.process(ZmumuMass, dataset=[zmumu(), f"{missing}:events"])
    assert info.value.remote.context["file"] == str(missing)
    still_works(session)


def test_a_wrong_tree_name_is_named_with_the_trees_in_the_file(session):
    path = data_file("uproot-Zmumu.root")
    with pytest.raises(pyproof.QueryError,
                       match=r"no tree 'evnts' in .*uproot-Zmumu\.root \(trees in the file: "
                             r"events\)"):
        session.process(ZmumuMass, dataset=f"{path}:evnts")
    still_works(session)


def test_a_branch_that_does_not_exist_is_named(session):
    with pytest.raises(pyproof.QueryError,
                       match=r"no branch 'nonexistent_branch' in tree 'events' of "
                             r".*uproot-Zmumu\.root \(nearest: "):
        session.process("tests.sample_selectors:MissingBranch", dataset=zmumu())
    still_works(session)


def test_a_selector_that_raises_names_file_and_entry_range_and_carries_the_traceback(session):
    with pytest.raises(pyproof.QueryError, match=r"ZeroDivisionError") as info:
        session.process("tests.sample_selectors:RaisesInProcess", dataset=zmumu(),
                        inputs={"bad_entry": 1000}, packetizer="basic",
                        packetizer_params={"packet_entries": 100})
    remote = info.value.remote
    assert remote.context["file"] == data_file("uproot-Zmumu.root")
    assert remote.context["tree"] == "events"
    assert remote.context["entry_start"] <= 1000 < remote.context["entry_stop"]
    assert remote.context["worker"].startswith("worker-")
    assert "the selector divided by zero" in remote.traceback
    assert "in process" in remote.traceback
    message = str(info.value)
    assert "uproot-Zmumu.root" in message and "entries [" in message
    still_works(session)


def test_an_import_path_that_does_not_resolve_fails_on_the_client(session):
    with pytest.raises(pyproof.SelectorError, match=r"no_such_module"):
        session.process("no_such_module:Sel", dataset=zmumu())
    with pytest.raises(pyproof.SelectorError, match=r"has no selector 'Nope'"):
        session.process("tests.sample_selectors:Nope", dataset=zmumu())
    still_works(session)


def test_inputs_that_cannot_be_encoded_are_refused_naming_the_key(session):
    with pytest.raises(pyproof.InputError, match=r"inputs cannot be sent to workers: .*cut"):
        session.process(ZmumuMass, dataset=zmumu(), inputs={"cut": object()})
    still_works(session)


def test_a_selector_defined_in_a_function_is_refused():
    class Local(pyproof.Selector):
        pass

    with pytest.raises(pyproof.SelectorError, match=r"defined inside a function"):
        pyproof.selector.selector_ref(Local)


def test_dataset_and_cycles_are_exclusive(session):
    with pytest.raises(pyproof.InputError, match=r"exactly one of dataset=, cycles= and files="):
        session.process(ZmumuMass)


def test_outputs_that_cannot_be_sent_fail_the_query_naming_the_output(session):
    with pytest.raises(pyproof.QueryError, match=r"thing"):
        session.process("tests.sample_selectors:UnsendableOutput", dataset=zmumu(),
                        timeout=60)
    still_works(session)


def test_a_query_stopped_by_timeout_lets_the_next_one_start_at_once(session):
    with pytest.raises(pyproof.QueryError, match=r"did not finish within"):
        session.process("tests.sample_selectors:SlowCount", dataset=zmumu(),
                        inputs={"sleep": 0.5}, packetizer="basic",
                        packetizer_params={"packet_entries": 50}, timeout=1.0)
    still_works(session)


def test_a_script_without_a_main_guard_gets_a_clear_error_instead_of_nested_clusters(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "import pyproof\n"
        "class Count(pyproof.Selector):\n"
        "    branches = ['M']\n"
        "    def process(self, events, ctx):\n"
        "        pass\n"
        "with pyproof.connect('lite://?workers=1') as session:\n"
        f"    session.process(Count, dataset={zmumu()!r}, progress=False)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert "called inside a worker" in out.stderr and "__main__" in out.stderr
