"""A selector's print(), stderr and logging land in its worker's log, named, and in errors."""

from __future__ import annotations

import json

import pytest

import pyproof
from pyproof.cli.main import main as proofctl
from pyproof.logs import format_record, keep_record, read_records
from tests.conftest import zmumu
from tests.scikit_selectors import Chatty


def test_prints_stderr_and_logging_of_a_selector_go_to_its_workers_log(session):
    result = session.process(Chatty, dataset=zmumu(), progress=False, packetizer="basic",
                             packetizer_params={"packet_entries": 500})
    assert result.outputs["n"] == 2304
    records = read_records(session.log_dir)
    prints = [r for r in records if r.get("event") == "selector_output"]
    starts = set()
    for r in prints:
        assert r["actor"].startswith("worker-") and r["session"] == session.id
        if r["stream"] == "stdout" and r["line"].startswith("hello from "):
            # each line names the worker that printed it, in the line and in the record
            assert r["line"].startswith(f"hello from {r['actor']} packet [")
            start, stop = r["line"].split("[")[1].rstrip(")").split(", ")
            starts.add((int(start), int(stop)))
    assert sum(stop - start for start, stop in starts) == 2304  # every packet printed
    assert any(r["stream"] == "stderr" and r["line"].startswith("warned on stderr [")
               for r in prints)
    logged = [r for r in records if r.get("event") == "selector_log"]
    assert logged and all(r["level"] == "warning" and r["logger"] == "analysis" for r in logged)
    assert format_record(prints[0]).endswith(f"{prints[0]['stream']}: {prints[0]['line']}")


def test_proofctl_logs_shows_one_workers_output_at_a_level(session, capsys):
    session.process(Chatty, dataset=zmumu(), progress=False)
    # a worker that ran packets (the packetizer may have given one worker all of them)
    worker = next(r["actor"] for r in read_records(session.log_dir)
                  if r.get("event") == "selector_log")
    capsys.readouterr()
    assert proofctl(["logs", session.id, "--worker", worker.split("-")[1],
                     "--level", "warning"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(f" {worker} " in line for line in lines)
    assert any("analysis: a logged warning at " in line for line in lines)
    assert not any("stdout: hello" in line for line in lines)  # info: below the level
    assert proofctl(["logs", session.id, "--worker", worker, "--json"]) == 0
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert records and {r["actor"] for r in records} == {worker}
    assert any(r.get("line", "").startswith(f"hello from {worker}") for r in records)


def test_follow_keeps_reading_what_is_appended(session, capsys):
    assert proofctl(["logs", session.id, "--follow", "0.3", "--level", "warning"]) == 0
    assert " analysis: a logged warning at " in capsys.readouterr().out


def test_a_failing_workers_last_output_is_in_the_query_error(session):
    with pytest.raises(pyproof.QueryError,
                       match=r"^ValueError: failing on purpose\n"
                             r"  in file .*uproot-Zmumu\.root, tree events, entries \[\d+, \d+\), "
                             r"on worker-\d, stage='process'\n"
                             r"  last output of the worker:\n"
                             r"(    \| .*\n){4}"
                             r"    \| stdout: about to fail: the last words\n"
                             r"  \(remote traceback: err\.remote\.traceback\)$") as info:
        # small packets: the failing worker has printed a few lines before entry 1234
        session.process(Chatty, dataset=zmumu(), progress=False, inputs={"fail_at": 1234},
                        packetizer="basic", packetizer_params={"packet_entries": 100})
    output = info.value.remote.context["output"]
    assert output[-1] == "stdout: about to fail: the last words"
    assert any(line.startswith("WARNING analysis: a logged warning at ") for line in output)


def test_keep_record_filters_by_session_worker_and_level():
    record = {"actor": "worker-3", "session": "s1", "level": "info"}
    assert keep_record(record, session="s1", worker="3", level="info")
    assert keep_record(record, worker="worker-3", level="debug")
    assert not keep_record(record, worker="1")
    assert not keep_record(record, session="s2")
    assert not keep_record(record, level="warning")
