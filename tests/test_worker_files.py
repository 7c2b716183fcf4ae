"""A worker keeps its ROOT files open across queries: bounded, and a rewritten file is
opened afresh (its size or mtime changed)."""

from __future__ import annotations

import os

import numpy as np
import uproot

import pyproof
from pyproof.actors.worker_loop import OpenFiles


def write(path, n: int, start: int = 0) -> str:
    with uproot.recreate(path) as f:
        f["t"] = {"x": np.arange(start, start + n, dtype=np.int64)}
    return str(path)


def test_an_open_file_is_reused_until_it_is_rewritten(tmp_path):
    path = write(tmp_path / "a.root", 10)
    files = OpenFiles()
    handle, tree = files.tree(path, "t")
    assert tree.num_entries == 10
    assert files.tree(path, "t")[0] is handle  # the next packet or query opens nothing
    write(path, 25)  # another size (and mtime): the old handle would read stale metadata
    new, tree = files.tree(path, "t")
    assert new is not handle and tree.num_entries == 25
    assert handle.file.closed and len(files) == 1
    files.close()
    assert new.file.closed and len(files) == 0


def test_a_file_rewritten_with_the_same_size_is_seen_by_its_mtime(tmp_path):
    path = write(tmp_path / "a.root", 10)
    files = OpenFiles()
    handle, _ = files.tree(path, "t")
    size = os.path.getsize(path)
    write(path, 10)  # the same content again: the same size
    assert os.path.getsize(path) == size
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    new, _ = files.tree(path, "t")
    assert new is not handle and handle.file.closed
    files.close()


def test_at_most_limit_files_stay_open_the_least_recently_used_closed_first(tmp_path):
    paths = [write(tmp_path / f"f{i}.root", 5) for i in range(4)]
    files = OpenFiles(limit=2)
    handles = [files.tree(p, "t")[0] for p in paths[:2]]
    files.tree(paths[0], "t")  # used again: paths[1] is now the least recently used
    files.tree(paths[2], "t")
    assert len(files) == 2
    assert handles[1].file.closed and not handles[0].file.closed
    files.tree(paths[3], "t")
    assert len(files) == 2 and handles[0].file.closed
    files.close()


def test_an_evicted_file_is_opened_again_at_its_next_use(tmp_path):
    path = write(tmp_path / "a.root", 3)
    files = OpenFiles()
    handle, _ = files.tree(path, "t")
    files.evict(path)  # what a failed read does
    assert handle.file.closed and len(files) == 0
    assert files.tree(path, "t")[0] is not handle
    files.close()


def test_a_second_query_on_the_same_file_opens_nothing_on_the_worker(tmp_path):
    """Bytes read count opening a file and its metadata: only the first query pays them."""
    path = write(tmp_path / "a.root", 2000)
    with pyproof.connect("lite://?workers=1") as session:
        first = session.process("tests.sample_selectors:EntryList", dataset=[f"{path}:t"])
        second = session.process("tests.sample_selectors:EntryList", dataset=[f"{path}:t"])
        assert first.outputs["count"] == second.outputs["count"] == 2000
        assert 0 < second.stats.bytes_read < first.stats.bytes_read
        write(path, 30, start=7)  # rewritten: the worker reads the new file
        third = session.process("tests.sample_selectors:EntryList", dataset=[f"{path}:t"])
        assert sorted(third.outputs["x"].tolist()) == list(range(7, 37))


def test_a_local_file_is_read_on_the_workers_own_thread_and_its_bytes_are_charged(tmp_path):
    import threading

    path = write(tmp_path / "a.root", 1000)
    files = OpenFiles()
    try:
        handle, tree = files.tree(path, "t")
        before = {t.ident for t in threading.enumerate()}
        assert tree["x"].array(entry_start=100, entry_stop=300, library="np").tolist() == \
            list(range(100, 300))
        # no hand-over per read to uproot's asyncio thread (its default source): none started
        assert {t.ident for t in threading.enumerate()} <= before
        assert type(handle.file.source).__name__ == "MultithreadedFileSource"
        assert files.charge(path) > 0
    finally:
        files.close()
