"""Re-adopting sessions after a control process died: which registry entries live, what to kill.

Pure: the shell passes in the registry's entries and a snapshot of the host's
processes (`{pid: start time}`, read from /proc); nothing here reads a clock
or touches a process. A process is named by (pid, start time), never by pid
alone: pids are recycled, and a recycled pid must never be adopted or killed.

A session entry is live when its supervisor process (same pid, same start
time) still runs: the daemon adopts it. Otherwise it is stale: its entry is
deleted, and whichever of its recorded children (master, workers) still run
under their recorded start times are killed, so a session that lost its
supervisor leaves nothing behind. A live session is never killed here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import field

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply

__all__ = ["Entry", "Proc", "Reconciliation", "last_words_file", "leftovers", "reconcile",
           "session_files", "spanned_file"]

SPANNED_PREFIX, SPANNED_SUFFIX = "spanned-", ".cbor"


@dataclass(frozen=True, slots=True, kw_only=True)
class Proc:
    """One process, named so that a recycled pid is never mistaken for it."""

    pid: int
    start: int

    def runs_in(self, running: Mapping[int, int]) -> bool:
        return running.get(self.pid) == self.start


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """A session as the durable registry records it."""

    session_id: str
    user: str
    workers: int
    created: float
    supervisor: Proc
    address: tuple[str, int] | None = None  # the session supervisor's actor address
    children: Mapping[str, Proc] = field(default_factory=dict)  # "master", "worker-0", ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconciliation:
    adopt: tuple[Entry, ...]
    stale: tuple[Entry, ...]
    kill: tuple[Proc, ...]   # leftovers of stale entries that still run
    remove: tuple[str, ...]  # file names (in the run directory) of stale sessions

    def validate(self) -> None:
        adopted = {e.session_id for e in self.adopt}
        assert not adopted & {e.session_id for e in self.stale}
        live = {e.supervisor for e in self.adopt} | {
            c for e in self.adopt for c in e.children.values()}
        assert not live & set(self.kill), "a live session's process would be killed"


def last_words_file(session_id: str) -> str:
    """Where a session's stuck master leaves its queries' errors for the next one
    (actors/last_words.py), in the run directory."""
    return f"last-words-{session_id}.cbor"


def spanned_file(session_id: str) -> str:
    """Where the master's host's hosts actor records a session it spread over hosts
    (hosts/spans.py), in the run directory: a restarted hosts actor re-adopts it."""
    return f"{SPANNED_PREFIX}{session_id}{SPANNED_SUFFIX}"


def session_files(session_id: str) -> tuple[str, ...]:
    """The files a session makes in the run directory, removed when it ends: the sockets its
    master listens on (its data plane, its outbox for clients that dial in, its direct
    route: actors/master_direct.py), its master's last words (actors/last_words.py) and,
    spread over hosts, its hosts actor's record of it (hosts/spans.py)."""
    return (f"master-{session_id}.ipc", f"outbox-{session_id}.ipc", f"direct-{session_id}.ipc",
            last_words_file(session_id), spanned_file(session_id))


def leftovers(session_id: str, names: Iterable[str]) -> tuple[str, ...]:
    """Of a run directory's file `names`, the temporary files of the session's files: each
    is written as `NAME.PID.tmp` and renamed over NAME (actors/last_words.py,
    hosts/spans.py); a writer killed in between leaves it, removed with the session's
    files."""
    ours = set(session_files(session_id))
    found = []
    for name in names:
        base, _, rest = name.rpartition(".")
        stem, _, pid = base.rpartition(".")
        if rest == "tmp" and pid.isdigit() and stem in ours:
            found.append(name)
    return tuple(sorted(found))


def reconcile(entries: Iterable[Entry], running: Mapping[int, int]) -> Reconciliation:
    """Split registry entries into sessions to adopt and stale ones to clean up."""
    adopt: list[Entry] = []
    stale: list[Entry] = []
    for entry in entries:
        if entry.supervisor.runs_in(running) and entry.address is not None:
            adopt.append(entry)
        else:
            stale.append(entry)
    protected = {e.supervisor for e in adopt} | {c for e in adopt for c in e.children.values()}
    kill: list[Proc] = []
    for entry in stale:
        for proc in (entry.supervisor, *entry.children.values()):
            if proc.runs_in(running) and proc not in protected and proc not in kill:
                kill.append(proc)
    remove = tuple(name for e in stale for name in session_files(e.session_id))
    result = Reconciliation(adopt=tuple(adopt), stale=tuple(stale), kill=tuple(kill),
                            remove=remove)
    result.validate()
    return result
