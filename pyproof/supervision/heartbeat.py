"""Heartbeats: what a child's actor thread is doing, readable by its supervisor without a message.

A ping over Thespian costs both processes a wake-up, a pickle and a TCP
round trip (about 0.3-0.8 ms of CPU each way): seven children pinged twice a
second made an idle lite cluster use 4% of a core. Instead, every actor
process keeps a tiny shared page (a memfd, so nothing is left behind when the
process dies) where its actor thread stamps when its current message handler
began, and clears it when the handler returns. The supervisor maps the page
(found through /proc/<pid>/fd, same user) and reads it on its own timer: a
child between messages and not frozen needs no ping; one stuck in a handler,
or frozen (SIGSTOP), is pinged, and the watchdog's deadline logic applies as
before (supervision/watchdog.py decides; this module only reads and writes).

The page has three float64 slots, each written with one aligned store:

    entered       monotonic time its current handler began (0.0: between messages)
    watched       monotonic time its supervisor last looked (a session
                  supervisor that nobody looks at for long is an orphan)
    wants_pings   1.0: ping me every interval anyway (an actor whose health is
                  more than its actor thread, e.g. a master with data threads)

CLOCK_MONOTONIC is system-wide, so the times compare across processes.
"""

from __future__ import annotations

import contextlib
import mmap
import os

__all__ = ["Beat", "Watcher", "beat", "find"]

_SLOTS = 3
_ENTERED, _WATCHED, _WANTS_PINGS = range(_SLOTS)
_SIZE = 8 * _SLOTS


def _name(pid: int) -> str:
    # the pid in the name: a forked child inherits its parent's page and must not be
    # taken for it
    return f"pyproof-heartbeat-{pid}"


class Beat:
    """A process's own page (the child's side): written by its actor thread only."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.fd = os.memfd_create(_name(self.pid), os.MFD_CLOEXEC)
        os.ftruncate(self.fd, _SIZE)
        self._map = mmap.mmap(self.fd, _SIZE)
        self._slots = memoryview(self._map).cast("d")

    def enter(self, now: float) -> None:
        """A message handler begins (run on the actor thread)."""
        self._slots[_ENTERED] = now

    def leave(self) -> None:
        """The handler returned (or the process is about to end)."""
        self._slots[_ENTERED] = 0.0

    def watched(self) -> float:
        """When our supervisor last read this page (monotonic; 0.0: never)."""
        return self._slots[_WATCHED]

    def want_pings(self, wanted: bool) -> None:
        self._slots[_WANTS_PINGS] = 1.0 if wanted else 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._slots.release()
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


_beat: Beat | None = None


def beat() -> Beat:
    """This process's page, made on first use (a forked child drops its parent's)."""
    global _beat
    if _beat is not None and _beat.pid != os.getpid():
        _beat.close()
        _beat = None
    if _beat is None:
        _beat = Beat()
    return _beat


class Watcher:
    """A supervisor's view of one child's page (read, plus the `watched` stamp)."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        with open(f"/proc/{pid}/fd/{fd}", "r+b", buffering=0) as f:
            self._map = mmap.mmap(f.fileno(), _SIZE)
        self._slots = memoryview(self._map).cast("d")

    def read(self, now: float) -> tuple[float | None, bool]:
        """(when its current handler began, or None between messages; whether it wants
        pings anyway), and stamps that we looked at `now`."""
        self._slots[_WATCHED] = now
        entered = self._slots[_ENTERED]
        return (entered or None), self._slots[_WANTS_PINGS] != 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._slots.release()
            self._map.close()


def find(pid: int) -> Watcher | None:
    """The page of process `pid`, or None (not a pyproof actor, gone, not ours to read)."""
    target = f"/memfd:{_name(pid)} (deleted)"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return Watcher(pid, int(fd))
        except (OSError, ValueError):
            continue
    return None
