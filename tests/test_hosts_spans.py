"""The master's host's records of sessions spread over hosts (hosts/spans.py): their file
format, which are re-adopted, and how a part's workers are reconciled after a restart of
the hosts actor; and the actor's pure helpers around them (`span_record`, `new_master` of a
reloaded session). Pure, plus the files in a temporary directory."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyproof.actors import messages as m
from pyproof.actors.hosts import Spanned, new_master, span_record
from pyproof.actors.registry import address_from_wire
from pyproof.hosts import registry as reg
from pyproof.hosts import spans
from pyproof.supervision.adoption import Entry, Proc, reconcile, session_files, spanned_file

names = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
pids = st.integers(1, 4_000_000)


@st.composite
def records(draw) -> spans.SpanRecord:
    hosts = draw(st.lists(names, unique=True, max_size=4))
    parts = {h: spans.Part(
        info=reg.HostInfo(name=h, address=f"proof://10.0.0.{i}:1093", cores=draw(
            st.integers(0, 64)), labels=tuple(draw(st.lists(names, max_size=2)))),
        incarnation=draw(st.from_regex(r"[0-9a-f]{1,32}", fullmatch=True)),
        workers={f"worker-{n}@{h}": p for n, p in draw(st.dictionaries(
            st.integers(0, 20), pids, max_size=3)).items()},
        next_index=draw(st.integers(0, 50))) for i, h in enumerate(hosts)}
    return spans.SpanRecord(
        session_id=draw(st.from_regex(r"[0-9a-f]{1,64}", fullmatch=True)),
        user=draw(st.text(max_size=10)), request_id=draw(st.text(max_size=10)),
        master=draw(st.none() | st.tuples(st.just("127.0.0.1"), st.integers(1, 65535))),
        local=tuple(draw(st.lists(st.from_regex(r"worker-[0-9]{1,2}", fullmatch=True),
                                  unique=True, max_size=3))),
        plan={h: draw(st.integers(0, 8)) for h in ["m", *hosts]}, parts=parts,
        versions=tuple(draw(st.lists(st.from_regex(r"[0-9a-f]{8}", fullmatch=True),
                                     max_size=3))))


@settings(max_examples=200, deadline=None)
@given(records())
def test_a_record_round_trips_through_its_file_format(record):
    assert spans.decode(spans.encode(record)) == record


@pytest.mark.parametrize(("data", "error"), [
    (b"\xff\x00", r"^not CBOR"),
    (spans.cbor2.dumps([1, 2]), r"^not a map$"),
    (spans.cbor2.dumps({"session": ""}), r"^'session' must be a string of at most 64 "),
    (spans.cbor2.dumps({"session": "5e", "master": [1], "local": [], "plan": {},
                        "parts": {}}), r"^'master' must be an \[ip, port\] pair or null$"),
    (spans.cbor2.dumps({"session": "5e", "master": None, "local": [], "plan": {},
                        "parts": {"h2": {"info": {"name": "h3", "address": "proof://a:1"},
                                         "incarnation": "i", "workers": {}}}}),
     r"^part on 'h2' names host 'h3'$"),
    (spans.cbor2.dumps({"session": "5e", "master": None, "local": [], "plan": {},
                        "parts": {"h2": {"info": {"name": "h2", "address": "proof://a:1"},
                                         "incarnation": "i", "workers": {"w@h2": -1}}}}),
     r"^part on 'h2''s pid must be a non-negative integer$"),
    (spans.cbor2.dumps({"session": "5e", "master": None, "local": [], "plan": {"bad name": 1},
                        "parts": {}}), r"^host name 'bad name' is not valid"),
])
def test_a_damaged_record_is_refused_saying_what_is_wrong(data, error):
    with pytest.raises(ValueError, match=error):
        spans.decode(data)


def record(sid: str, **parts: dict[str, int]) -> spans.SpanRecord:
    return spans.SpanRecord(
        session_id=sid, user="ann", request_id="r1", master=("127.0.0.1", 5000),
        local=("worker-0",), plan={"m": 1, **{h: len(w) for h, w in parts.items()}},
        parts={h: spans.Part(info=reg.HostInfo(name=h, address=f"proof://{h}:1093"),
                             incarnation="inc", workers=w, next_index=len(w))
               for h, w in parts.items()})


def test_only_sessions_whose_supervisor_still_runs_are_readopted():
    keep, drop = spans.readopt([record("a1"), record("b2"), record("c3")],
                               {"a1": "addr-a", "c3": "addr-c"})
    assert [r.session_id for r in keep] == ["a1", "c3"] and drop == ["b2"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([f"worker-{i}@h2" for i in range(6)]), pids),
       st.none() | st.dictionaries(st.sampled_from([f"worker-{i}@h2" for i in range(6)]),
                                   pids))
def test_each_recorded_worker_is_either_still_running_or_lost_and_each_running_one_joins(
        recorded, running):
    result = spans.reconcile_part(recorded, running)
    now = running or {}
    assert result.workers == now
    assert dict(result.joined) == now  # all: the master knows them by a dead actor's address
    for worker, pid in recorded.items():
        # exactly one of: the same process runs (joins again), or it is lost (re-queued)
        assert ((worker, pid) in result.lost) != (now.get(worker) == pid)
    assert set(result.lost) <= set(recorded.items())
    assert list(result.lost) == sorted(result.lost)


def test_a_part_gone_from_its_host_loses_every_recorded_worker():
    result = spans.reconcile_part({"worker-0@h2": 7, "worker-1@h2": 8}, None)
    assert result.lost == (("worker-0@h2", 7), ("worker-1@h2", 8))
    assert result.joined == () and result.workers == {}


def test_a_worker_restarted_while_nobody_listened_is_lost_and_its_successor_joins():
    result = spans.reconcile_part({"worker-0@h2": 7, "worker-1@h2": 8},
                                  {"worker-0@h2": 7, "worker-1@h2": 99})
    assert result.lost == (("worker-1@h2", 8),)
    assert result.joined == (("worker-0@h2", 7), ("worker-1@h2", 99))


def test_a_worker_started_again_under_a_new_pid_replaces_the_one_before_which_is_lost():
    # its exit came while its host's hosts actor was down: never heard; its start is
    event = spans.worker_event({"worker-0@h2": 7, "worker-1@h2": 8}, "worker-1@h2", 99, True)
    assert event.lost == (("worker-1@h2", 8),)
    assert event.joined == (("worker-1@h2", 99),)
    assert event.workers == {"worker-0@h2": 7, "worker-1@h2": 99}


def test_a_worker_event_of_a_known_or_unknown_process_loses_nothing_else():
    recorded = {"worker-0@h2": 7}
    assert spans.worker_event(recorded, "worker-0@h2", 7, True) == spans.PartReconciliation(
        joined=(("worker-0@h2", 7),), lost=(), workers=recorded)  # said again: joins again
    assert spans.worker_event(recorded, "worker-0@h2", 7, False) == spans.PartReconciliation(
        joined=(), lost=(("worker-0@h2", 7),), workers={})
    # the exit of a process that is not the one recorded (a late report): nothing changes
    assert spans.worker_event(recorded, "worker-0@h2", 5, False) == spans.PartReconciliation(
        joined=(), lost=(), workers=recorded)
    assert recorded == {"worker-0@h2": 7}  # pure: the record given is not changed


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([f"worker-{i}@h2" for i in range(4)]), pids),
       st.lists(st.tuples(st.sampled_from([f"worker-{i}@h2" for i in range(4)]), pids,
                          st.booleans()), max_size=12))
def test_after_any_worker_events_the_master_has_heard_each_process_join_at_most_once_lost(
        recorded, events):
    # the master's view: every process it was told joined and not yet lost runs now
    known = set(recorded.items())
    workers = dict(recorded)
    for worker_id, pid, alive in events:
        event = spans.worker_event(workers, worker_id, pid, alive)
        assert set(event.lost) <= known  # only processes it knows are declared lost
        known -= set(event.lost)
        known |= set(event.joined)
        workers = event.workers
        assert known == set(workers.items())  # one process per worker id, as its host says


def span(**remote: dict[str, int]) -> Spanned:
    create = m.CreateSession(corr="c", session_id="5e55", workers=3, run_dir="/run",
                             log_dir="/logs", user="ann", request_id="r1")
    return Spanned(create=create, reply_to=None, corr="c", plan={"m": 1, "h2": 2},
                   remote=dict(remote), local=("worker-0",), ready=True)


def test_a_reloaded_session_has_its_master_hear_of_every_remote_worker_even_if_unchanged():
    spanned = span(h2={"worker-0@h2": 7, "worker-1@h2": 8})
    spanned.master, spanned.readopting = "the-master", True
    spanned.sent.add(("q1", "h2"))
    # the supervisor names the master it had: its workers there join again, via this actor
    assert new_master(spanned, "the-master", {}) == [("worker-0@h2", 7), ("worker-1@h2", 8)]
    assert not spanned.readopting and spanned.sent == set()
    assert new_master(spanned, "the-master", {}) == []  # said twice: nothing more


def test_a_spanned_session_is_recorded_with_its_hosts_as_the_registry_knows_them():
    registry = reg.HostRegistry(lost_after=5.0)
    info = reg.HostInfo(name="h2", address="proof://10.0.0.2:1093", cores=4)
    registry.handle(reg.Announce(info=info, incarnation="i2", now=0.0))
    spanned = span(h2={"worker-0@h2": 7})
    spanned.master = address_from_wire(("127.0.0.1", 5001))
    spanned.next_index["h2"] = 3
    got = span_record("5e55", spanned, registry.hosts, {"v2", "v1"})
    assert got == spans.SpanRecord(
        session_id="5e55", user="ann", request_id="r1", master=("127.0.0.1", 5001),
        local=("worker-0",), plan={"m": 1, "h2": 2},
        parts={"h2": spans.Part(info=info, incarnation="i2", workers={"worker-0@h2": 7},
                                next_index=3)}, versions=("v1", "v2"))
    assert spans.decode(spans.encode(got)) == got


def test_records_are_written_atomically_read_back_and_damaged_ones_removed(tmp_path):
    run_dir = str(tmp_path)
    assert spans.write(run_dir, record("a1", h2={"worker-0@h2": 7}))
    assert spans.write(run_dir, record("b2"))
    (tmp_path / spanned_file("c3")).write_bytes(b"\xff damaged")
    (tmp_path / spanned_file("d4")).write_bytes(spans.encode(record("e5")))  # misnamed
    (tmp_path / "registry.db").write_bytes(b"not ours")
    (tmp_path / f"{spanned_file('b2')}.4242.tmp").write_bytes(b"half")  # a writer killed
    assert [r.session_id for r in spans.read_all(run_dir)] == ["a1", "b2"]
    assert sorted(os.listdir(run_dir)) == sorted([spanned_file("a1"), spanned_file("b2"),
                                                  "registry.db"])  # no temporary file left
    spans.remove(run_dir, "a1")
    spans.remove(run_dir, "a1")  # twice: no error
    assert [r.session_id for r in spans.read_all(run_dir)] == ["b2"]


def test_a_record_that_cannot_be_written_is_logged_and_the_session_runs_on(tmp_path):
    assert not spans.write(str(tmp_path / "gone"), record("a1"))


def test_the_record_is_one_of_the_session_files_removed_when_it_ends():
    assert spanned_file("s1") in session_files("s1")
    stale = Entry(session_id="s1", user="ann", workers=1, created=0.0,
                  supervisor=Proc(pid=10, start=100), address=("127.0.0.1", 1))
    assert spanned_file("s1") in reconcile([stale], {}).remove  # its files go
