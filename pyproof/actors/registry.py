"""The durable session registry: SQLite (WAL) in the daemon's run directory.

Each session supervisor writes its own row when it starts (session id, owner,
its pid and start time, its actor address) and records its children's pids
and start times as they start; it deletes its row when it stops cleanly. So
after any control process dies (the sessions supervisor, the root, the
Thespian admin, the daemon's main process), a new sessions supervisor finds
every session that still runs, and `pyproof.supervision.adoption` decides
which entries are live (adopted) and which are stale (cleaned up).

Why Thespian addresses and not the master's nng plane: control messages to
a session (start/stop query, status, results, close) already go through its
supervisor as actor messages, and the supervisor's watchdog pings over the
same path; an adopted session is then supervised exactly like a session the
daemon started, without a second control protocol in the master. Thespian's
TCP addresses are (ip, port) pairs that any actor on this host can send to,
whichever actor system created them (its admin may be gone); only the pair
is stored, never a pickle (the daemon never unpickles).

Every connection is opened per operation (SQLite connections must not cross
a fork, and actors are forked), with a bounded busy timeout; the daemon
process also keeps one open while it runs (`keep_open`: see why there).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from pyproof.supervision.adoption import Entry, Proc

FILE = "sessions.db"
BUSY_TIMEOUT = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    workers INTEGER NOT NULL,
    created REAL NOT NULL,
    pid INTEGER NOT NULL,
    start INTEGER NOT NULL,
    address TEXT,
    children TEXT NOT NULL DEFAULT '{}',
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS remote_parts (
    session_id TEXT PRIMARY KEY,
    master TEXT NOT NULL,
    master_url TEXT NOT NULL
)
"""


def registry_path(run_dir: str) -> str:
    return os.path.join(run_dir, FILE)


def address_to_wire(ref: Any) -> tuple[str, int] | None:
    """The (ip, port) of a Thespian TCP actor address, or None for other transports."""
    details = getattr(ref, "addressDetails", None)
    sockname = getattr(details, "sockname", None)
    if not sockname:
        return None
    return str(sockname[0]), int(sockname[1])


def address_from_wire(address: tuple[str, int] | list) -> Any:
    """The Thespian actor address at (ip, port); equal to the one the actor itself has."""
    from thespian.actors import ActorAddress
    from thespian.system.transport.IPBase import TCPv4ActorAddress

    return ActorAddress(TCPv4ActorAddress(str(address[0]), int(address[1]), external=True))


def keep_open(run_dir: str) -> sqlite3.Connection:
    """Open (creating it) the registry of `run_dir`: a connection for the caller to keep.

    SQLite copies the WAL into the database file, with two fsyncs (10-30 ms on a
    disk), whenever the last connection to it closes; each `Registry` operation
    opens and closes its own, so with nobody else holding the file, every write
    paid that, and a session's start writes four rows one after the other. The
    daemon process keeps one connection for as long as it runs (opened once it
    forked the actor system; it forks nothing after): those writes then take a
    millisecond. Nothing is less durable: commits are as before (WAL,
    synchronous=NORMAL); checkpoints happen as the WAL grows, or at the last close.
    """
    db = sqlite3.connect(registry_path(run_dir), timeout=BUSY_TIMEOUT, isolation_level=None,
                         check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)
    return db


class Registry:
    """The sessions a daemon's run directory knows of."""

    def __init__(self, run_dir: str) -> None:
        self.path = registry_path(run_dir)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            yield db
        finally:
            db.close()

    def put(self, entry: Entry) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO sessions (session_id, user, workers, created, pid, "
                "start, address, children, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (entry.session_id, entry.user, entry.workers, entry.created,
                 entry.supervisor.pid, entry.supervisor.start,
                 json.dumps(list(entry.address)) if entry.address else None,
                 json.dumps({k: [p.pid, p.start] for k, p in entry.children.items()}),
                 time.time()))

    def set_child(self, session_id: str, child_id: str, proc: Proc | None) -> None:
        """Record (or, with None, forget) one child process of a session."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT children FROM sessions WHERE session_id = ?",
                             (session_id,)).fetchone()
            if row is None:
                db.execute("COMMIT")
                return
            children = json.loads(row[0])
            if proc is None:
                children.pop(child_id, None)
            else:
                children[child_id] = [proc.pid, proc.start]
            db.execute("UPDATE sessions SET children = ?, updated = ? WHERE session_id = ?",
                       (json.dumps(children), time.time(), session_id))
            db.execute("COMMIT")

    def set_workers(self, session_id: str, workers: int) -> None:
        """A session's worker count, after workers were added or removed on the fly."""
        with self._db() as db:
            db.execute("UPDATE sessions SET workers = ?, updated = ? WHERE session_id = ?",
                       (workers, time.time(), session_id))

    def set_remote(self, session_id: str, master: str, master_url: str) -> None:
        """This host runs a part of `session_id` for the master host `master`
        (actors/hosts.py re-opens its tunnel after a restart from this)."""
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO remote_parts (session_id, master, master_url) "
                       "VALUES (?, ?, ?)", (session_id, master, master_url))

    def remote_parts(self) -> dict[str, tuple[str, str]]:
        """session id -> (master host, its URL), for the session parts run here."""
        if not os.path.exists(self.path):
            return {}
        with self._db() as db:
            rows = db.execute("SELECT session_id, master, master_url FROM remote_parts")
            return {sid: (master, url) for sid, master, url in rows.fetchall()}

    def remove(self, session_id: str) -> None:
        if not os.path.exists(self.path):
            return
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
            db.execute("DELETE FROM remote_parts WHERE session_id = ?", (session_id,))

    def entries(self) -> list[Entry]:
        """Every session recorded. Read on a read-only connection: its close never copies
        the WAL back into the database (with two fsyncs, as the last writer's close does),
        which a lite client's close, reading this just before removing it all, would wait
        for."""
        if not os.path.exists(self.path):
            return []
        db = sqlite3.connect(f"{pathlib.Path(self.path).as_uri()}?mode=ro", uri=True,
                             timeout=BUSY_TIMEOUT)
        try:
            rows = db.execute("SELECT session_id, user, workers, created, pid, start, address, "
                              "children FROM sessions ORDER BY created").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # created this instant: its schema comes next
                return []
            raise
        finally:
            db.close()
        entries = []
        for sid, user, workers, created, pid, start, address, children in rows:
            kids = {k: Proc(pid=int(v[0]), start=int(v[1]))
                    for k, v in json.loads(children or "{}").items()}
            addr = json.loads(address) if address else None
            entries.append(Entry(session_id=sid, user=user, workers=int(workers),
                                 created=float(created), supervisor=Proc(pid=pid, start=start),
                                 address=(str(addr[0]), int(addr[1])) if addr else None,
                                 children=kids))
        return entries


def running_processes(entries: list[Entry]) -> dict[int, int]:
    """{pid: start time} of the registered processes that still run (a /proc snapshot)."""
    from pyproof.supervision.process_tree import is_alive, start_time

    running: dict[int, int] = {}
    for entry in entries:
        for proc in (entry.supervisor, *entry.children.values()):
            started = start_time(proc.pid)
            if started is not None and is_alive(proc.pid):
                running[proc.pid] = started
    return running


def stop_registered(run_dir: str) -> list[int]:
    """Kill every registered session's processes (a daemon stopping for good); the pids.

    Only processes whose start time matches the registry's are touched. Each
    session supervisor leads its own process session: whatever its selectors
    started and left behind (double-forked daemons) is in that session too.
    """
    from pyproof.supervision.process_tree import kill_session, kill_tree, start_time

    registry = Registry(run_dir)
    killed: list[int] = []
    for entry in registry.entries():
        sup = entry.supervisor
        if start_time(sup.pid) == sup.start:
            killed += kill_tree(sup.pid)
            killed += kill_session(sup.pid)
        for proc in entry.children.values():
            if start_time(proc.pid) == proc.start:
                killed += kill_tree(proc.pid)
        registry.remove(entry.session_id)
    return killed
