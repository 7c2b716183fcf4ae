"""Several processes on one catalog lose nothing; a SIGKILL mid-register corrupts nothing.

Children are started with the 'spawn' context, each join is bounded, and
every child is killed and reaped in `finally` whatever happens.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable, Sequence
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

import pytest

from pyproof.datasets.catalog import Catalog
from pyproof.datasets.errors import QuotaExceededError
from pyproof.datasets.records import FileRecord

SPAWN = multiprocessing.get_context("spawn")
JOIN_TIMEOUT = 60.0
PROCESSES = 8
ROUNDS = 4


def _urls(tag: str, n: int) -> list[FileRecord]:
    return [FileRecord(url=f"root://eos.cern.ch//{tag}/f{i}.root", size=1) for i in range(n)]


def _run_children(target: Callable[..., None], args: Sequence[tuple[Any, ...]]) -> list[int]:
    """Start one spawned child per args tuple, wait (bounded) and reap them all."""
    children = [SPAWN.Process(target=target, args=a, daemon=True) for a in args]
    try:
        for child in children:
            child.start()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for child in children:
            child.join(max(deadline - time.monotonic(), 0.1))
        hung = [c.pid for c in children if c.is_alive()]
        assert not hung, f"children {hung} did not finish within {JOIN_TIMEOUT} s"
        return [c.exitcode for c in children]
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
            child.join(5.0)
            child.close()


def _check_consistent(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        for dataset_id, count, top in conn.execute(
            "SELECT dataset_id, COUNT(*), MAX(idx) FROM files GROUP BY dataset_id"
        ):
            assert top == count - 1, f"dataset {dataset_id}: file indexes have holes"
        orphans = conn.execute(
            "SELECT COUNT(*) FROM files WHERE dataset_id NOT IN (SELECT id FROM datasets)"
        ).fetchone()[0]
        assert orphans == 0
    finally:
        conn.close()


# ---- 8 writers at once ---------------------------------------------------------------


def _writer(db: str, k: int) -> None:
    with Catalog(db, user=f"u{k}", group="cms", admin=True) as cat:
        for r in range(ROUNDS):
            cat.register(f"own{r}", _urls(f"u{k}/own{r}", 3 + r))
            cat.register("/cms/shared/all", _urls(f"u{k}/shared{r}", 5), update=True)
            cat.register("grow", _urls(f"u{k}/grow", r + 1), overwrite=True)
    # the same processes race for a small quota: 16 attempts, room for 10
    with Catalog(db, user=f"u{k}", group="small") as cat:
        for r in range(2):
            with contextlib.suppress(QuotaExceededError):
                cat.register(f"d{r}", _urls(f"u{k}/d{r}", 1), trust=True)


def test_eight_processes_registering_and_updating_at_once_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "catalog.sqlite"
    with Catalog(db, user="root", group="admins", admin=True) as admin:
        admin.set_quota("small", 10)
    codes = _run_children(_writer, [(str(db), k) for k in range(PROCESSES)])
    assert codes == [0] * PROCESSES
    _check_consistent(db)
    with Catalog(db, user="check", group="cms") as cat:
        shared = cat.show("/cms/shared/all").files
        assert len(shared) == PROCESSES * ROUNDS * 5
        assert len({f.url for f in shared}) == len(shared)
        for k in range(PROCESSES):
            for r in range(ROUNDS):
                urls = [f.url for f in cat.show(f"u{k}/own{r}").files]
                assert urls == [f.url for f in _urls(f"u{k}/own{r}", 3 + r)]
                mine = [f.url for f in shared if f"/u{k}/shared{r}/" in f.url]
                assert mine == [f.url for f in _urls(f"u{k}/shared{r}", 5)]
            assert cat.info(f"u{k}/grow").n_files == ROUNDS
        assert len(cat.list("/cms")) == PROCESSES * (ROUNDS + 1) + 1
        # concurrent registrations never overshoot a quota, and fill it
        assert cat.quota("small").used == 10
        assert len(cat.list("/small")) == 10


# ---- SIGKILL in the middle of a big register ------------------------------------------


class _StallingCatalog(Catalog):
    """Inserts the files, then signals and waits to be killed before committing."""

    inserted: Any = None

    def _insert_files(self, conn: sqlite3.Connection, *args: Any) -> None:
        super()._insert_files(conn, *args)
        if self.inserted is not None:
            self.inserted.set()
            time.sleep(JOIN_TIMEOUT)  # killed long before this ends


def _stalling_writer(db: str, inserted: Any, files: int) -> None:
    with _StallingCatalog(db, user="alice", group="cms") as cat:
        cat.register("before#events", _urls("before", 10))
        cat.register("grow#events", _urls("grow", 10))
        cat.inserted = inserted
        cat.register("big#events", _urls("big", files))


def test_a_process_killed_in_the_middle_of_a_big_register_leaves_the_catalog_consistent(
    tmp_path: Path,
) -> None:
    db = tmp_path / "catalog.sqlite"
    inserted = SPAWN.Event()
    child = SPAWN.Process(target=_stalling_writer, args=(str(db), inserted, 40_000), daemon=True)
    try:
        child.start()
        assert inserted.wait(JOIN_TIMEOUT), "the child never reached the insert"
        # 40 000 rows do not fit SQLite's page cache: uncommitted pages sit in the WAL now
        assert os.path.getsize(f"{db}-wal") > 1_000_000
        os.kill(child.pid, signal.SIGKILL)
        child.join(JOIN_TIMEOUT)
        assert child.exitcode == -signal.SIGKILL
    finally:
        if child.is_alive():
            child.kill()
        child.join(5.0)
        child.close()
    _check_consistent(db)
    with Catalog(db, user="alice", group="cms") as cat:
        assert [i.name.name for i in cat.list()] == ["before", "grow"]
        assert cat.info("before").n_files == 10
        cat.register("grow", _urls("grow-more", 5), update=True)  # writable again
        assert cat.info("grow").n_files == 15


def _looping_writer(db: str, started: Any) -> None:
    with Catalog(db, user="alice", group="cms") as cat:
        n = 0
        while True:
            cat.register(f"d{n}#t", _urls(f"d{n}", 2000 + n))
            cat.register("all#t", _urls(f"all{n}", 100), update=True)
            started.set()
            n += 1


def test_a_writer_killed_at_a_random_moment_leaves_only_whole_registrations(
    tmp_path: Path,
) -> None:
    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(0.2, 1.5)
    print(f"seed={seed} kill after {delay:.3f} s of writing")
    db = tmp_path / "catalog.sqlite"
    started = SPAWN.Event()
    child = SPAWN.Process(target=_looping_writer, args=(str(db), started), daemon=True)
    try:
        child.start()
        assert started.wait(JOIN_TIMEOUT), "the child never committed"
        time.sleep(delay)  # the kill lands at a seeded random moment of the write loop
        os.kill(child.pid, signal.SIGKILL)
        child.join(JOIN_TIMEOUT)
    finally:
        if child.is_alive():
            child.kill()
        child.join(5.0)
        child.close()
    _check_consistent(db)
    with Catalog(db, user="alice", group="cms") as cat:
        infos = {i.name.name: i for i in cat.list()}
        numbered = sorted(int(name[1:]) for name in infos if name.startswith("d"))
        assert len(numbered) >= 1 and numbered == list(range(len(numbered)))
        for n in numbered:
            assert infos[f"d{n}"].n_files == 2000 + n
        if "all" in infos:
            assert infos["all"].n_files % 100 == 0
            assert infos["all"].n_files // 100 in (len(numbered), len(numbered) - 1)


@pytest.fixture(autouse=True)
def _no_children_left() -> Any:
    yield
    assert multiprocessing.active_children() == []
    # 'spawn' starts multiprocessing's resource tracker, a helper that would outlive the
    # test; stop it (it is restarted on demand) so the leak check sees nothing of ours
    resource_tracker._resource_tracker._stop()
