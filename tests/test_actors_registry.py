"""The session registry's connections: who copies the WAL back into the database, and when.

SQLite does it (with two fsyncs: 10-30 ms on a disk) when the last connection to
the file closes; a lite session's start and close must not wait for that.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pyproof.actors.registry import Registry, keep_open, registry_path
from pyproof.supervision.adoption import Entry, Proc


def _entry(session_id: str) -> Entry:
    return Entry(session_id=session_id, user="u", workers=2, created=time.time(),
                 supervisor=Proc(pid=1, start=1), address=("127.0.0.1", 1))


def test_while_a_connection_is_kept_open_the_writes_leave_the_wal_alone(tmp_path) -> None:
    run_dir = str(tmp_path)
    held = keep_open(run_dir)
    try:
        registry = Registry(run_dir)
        registry.put(_entry("s1"))
        registry.set_child("s1", "master", Proc(pid=2, start=3))
        # not copied back (that would have truncated or removed it) by the writers' closes
        assert os.path.getsize(registry_path(run_dir) + "-wal") > 0
        assert [e.children for e in registry.entries()] == [{"master": Proc(pid=2, start=3)}]
    finally:
        held.close()
    assert not os.path.exists(registry_path(run_dir) + "-wal")  # the last close copied it


def test_reading_a_registry_whose_writer_was_killed_does_not_copy_its_wal_back(tmp_path) -> None:
    run_dir = str(tmp_path)
    Registry(run_dir).put(_entry("s0"))
    # a daemon SIGKILLed while it held the registry: its last writes are only in the WAL
    code = ("import os, time\n"
            "from pyproof.actors.registry import Registry, keep_open\n"
            "from pyproof.supervision.adoption import Entry, Proc\n"
            f"held = keep_open({run_dir!r})\n"
            f"Registry({run_dir!r}).put(Entry(session_id='s1', user='u', workers=1, "
            "created=time.time(), supervisor=Proc(pid=1, start=1)))\n"
            "os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    wal = registry_path(run_dir) + "-wal"
    size = os.path.getsize(wal)
    assert size > 0
    assert [e.session_id for e in Registry(run_dir).entries()] == ["s0", "s1"]
    assert os.path.getsize(wal) == size  # read only: a lite client's close does not wait


def test_a_registry_not_yet_created_has_no_entries(tmp_path) -> None:
    assert Registry(str(tmp_path)).entries() == []
