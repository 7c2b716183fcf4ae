"""A stuck master's last words (actors/last_words.py): the file its queries' ERROR frames
are left in for the next master of the session; written, read back, bounded, removed with
the session's other files. Real files in a temporary run directory, and a real proofd
whose session's master is stuck, then closed (the client's side of it, in a lite session:
tests/test_lite_data_threads.py)."""

from __future__ import annotations

import os
import time

import pytest

import pyproof
from pyproof.actors import last_words
from pyproof.actors.master_plane import KEEP_RESULTS
from pyproof.actors.master_query import DROP_STUCK_FRAME_ENV
from pyproof.actors.protocol import ERROR
from pyproof.actors.thread_beats import FAULT_INPUT
from pyproof.cli.daemon import daemon_home
from pyproof.supervision.adoption import last_words_file, leftovers, reconcile, session_files
from pyproof.transport.codec import RemoteError
from pyproof.transport.frames import decode_frame, encode_frame
from tests.conftest import zmumu
from tests.daemon_helpers import Daemon
from tests.test_supervision_adoption import entry


def stuck_frame(query_id: str) -> bytes:
    error = RemoteError(type="MasterStuck", message="stuck", traceback="",
                        context={"thread": "master-plane"})
    return encode_frame(ERROR, {"query": query_id, "error": error}, session="s1")


def test_frames_written_are_read_back_by_the_next_master_in_order(tmp_path):
    run_dir = str(tmp_path)
    assert last_words.read(run_dir, "s1") == {}  # none yet
    assert last_words.write(run_dir, "s1", {"q1": stuck_frame("q1")})
    assert last_words.write(run_dir, "s1", {"q2": stuck_frame("q2"), "q3": stuck_frame("q3")})
    kept = last_words.read(run_dir, "s1")
    assert list(kept) == ["q1", "q2", "q3"]
    frame = decode_frame(kept["q2"])
    assert frame.type == ERROR and frame.payload["query"] == "q2"
    assert frame.payload["error"].type == "MasterStuck"
    assert last_words.read(run_dir, "s2") == {}  # another session's master finds nothing
    assert sorted(os.listdir(run_dir)) == [last_words_file("s1")]  # no temporary file left


def test_only_the_latest_frames_are_kept_as_many_as_a_plane_keeps_results(tmp_path):
    assert last_words.KEEP == KEEP_RESULTS
    run_dir = str(tmp_path)
    for i in range(KEEP_RESULTS + 5):
        last_words.write(run_dir, "s1", {f"q{i}": stuck_frame(f"q{i}")})
    last_words.write(run_dir, "s1", {"q7": stuck_frame("q7")})  # again: now the latest
    kept = last_words.read(run_dir, "s1")
    assert len(kept) == KEEP_RESULTS
    assert list(kept)[-1] == "q7" and "q0" not in kept and "q14" in kept


def test_a_damaged_or_oversized_file_is_ignored_and_replaced(tmp_path):
    run_dir = str(tmp_path)
    path = os.path.join(run_dir, last_words_file("s1"))
    for junk in (b"\xff\x00 not cbor", b"\xa1ab", b"x" * (last_words.MAX_BYTES + 1)):
        with open(path, "wb") as f:
            f.write(junk)
        assert last_words.read(run_dir, "s1") == {}
        assert last_words.write(run_dir, "s1", {"q1": stuck_frame("q1")})
        assert list(last_words.read(run_dir, "s1")) == ["q1"]


def test_a_write_that_cannot_be_made_says_so_and_never_raises(tmp_path):
    gone = str(tmp_path / "removed-run-dir")
    assert not last_words.write(gone, "s1", {"q1": stuck_frame("q1")})
    assert not last_words.write("", "s1", {"q1": stuck_frame("q1")})  # no run directory
    assert not last_words.write(str(tmp_path), "s1", {})  # nothing to say: no file
    assert os.listdir(tmp_path) == []


def test_the_file_is_one_of_the_session_files_removed_when_it_ends():
    assert last_words_file("s1") in session_files("s1")
    plan = reconcile([entry("s1", (10, 100))], {})  # a stale session: its files go
    assert last_words_file("s1") in plan.remove


def test_a_writer_killed_before_its_rename_leaves_a_temporary_file_named_for_removal():
    names = [last_words_file("s1"), f"{last_words_file('s1')}.123.tmp",
             "spanned-s1.cbor.9.tmp", f"{last_words_file('s10')}.1.tmp",  # another session's
             f"{last_words_file('s1')}.tmp", f"{last_words_file('s1')}.12a.tmp", "registry.db"]
    assert leftovers("s1", names) == (f"{last_words_file('s1')}.123.tmp",
                                      "spanned-s1.cbor.9.tmp")


@pytest.fixture
def daemon():
    d = Daemon()
    yield d
    d.stop()


def test_a_sessions_temporary_files_left_by_a_killed_writer_go_when_it_ends(daemon):
    run_dir = os.path.join(daemon_home(daemon.port), "run")
    with pyproof.connect(f"{daemon.url}?workers=1") as session:
        left = os.path.join(run_dir, f"{last_words_file(session.id)}.4242.tmp")
        with open(left, "wb") as f:  # as a master killed between write and rename leaves it
            f.write(b"half")
        other = os.path.join(run_dir, f"{last_words_file('f00')}.4242.tmp")
        with open(other, "wb") as f:  # another session's: kept
            f.write(b"half")
    deadline = time.monotonic() + 10.0
    while os.path.exists(left) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(left) and os.path.exists(other)
    os.unlink(other)


@pytest.mark.parametrize("keep", [0, 1, 3])
def test_merge_keeps_the_last_frames_and_moves_a_repeated_query_last(keep):
    merged = last_words.merge({"a": b"1", "b": b"2"}, {"a": b"3", "c": b"4"}, keep)
    assert list(merged.items()) == [("b", b"2"), ("a", b"3"), ("c", b"4")][-keep:][:keep]


@pytest.fixture
def stuck_daemon(monkeypatch):
    monkeypatch.setenv("PYPROOF_TEST_STUCK_AFTER", "3")
    monkeypatch.setenv(DROP_STUCK_FRAME_ENV, "1")  # the client hears it from the file only
    d = Daemon()
    yield d
    d.stop()


def test_a_real_sessions_last_words_go_when_it_is_closed(stuck_daemon):
    session = pyproof.connect(f"{stuck_daemon.url}?workers=1")
    path = os.path.join(daemon_home(stuck_daemon.port), "run", last_words_file(session.id))
    try:
        with pytest.raises(pyproof.QueryError, match=r"^MasterStuck: the session's master "
                                                     r"data thread master-plane stopped"):
            session.process("tests.sample_selectors:ZmumuMass", dataset=zmumu(),
                            inputs={FAULT_INPUT: "deadlock:master-plane"}, timeout=60,
                            packetizer="basic", progress=False)
        assert os.path.exists(path)
    finally:
        session.close()
    deadline = time.monotonic() + 10.0
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(path)
