"""The shell of data-thread heartbeats (the decision is `supervision.threads.stuck_threads`).

Data threads stamp here (`stamp`, `touch`, `idle`, `forget`: each call is
about the calling thread, found by its name); the actor thread, answering its
supervisor's ping, asks `stuck(now)`. Stamps are plain assignments (atomic
under the GIL) and no lock is taken, so a thread deadlocked on any lock
cannot stop the check itself. Thread CPU times come from the kernel
(/proc/self/task/<tid>/stat), so a thread busy in one long C call is told from a
blocked one.
"""

from __future__ import annotations

import os
import threading
import time

from pyproof.actors.base import TEST_HOOKS
from pyproof.actors.warmup import silence_excused_until
from pyproof.supervision.threads import Beat, Stuck, stuck_threads
from pyproof.supervision.watchdog import MAX_BUSY

STUCK_AFTER = 15.0
"""Seconds a data thread may go without a stamp while it should be running. Every wait
in a data thread's loop is bounded well under this (a receive 2 s, a reply 5 s, a final
frame's grace 2 s per chunk); longer means it is deadlocked or blocked for good."""
if TEST_HOOKS and os.environ.get("PYPROOF_TEST_STUCK_AFTER"):  # tests: find it sooner
    STUCK_AFTER = float(os.environ["PYPROOF_TEST_STUCK_AFTER"])


class ThreadBeats:
    """Heartbeats of the data threads of one process (the master's plane and merges)."""

    def __init__(self) -> None:
        # thread name -> (stamped, active, thread id (the kernel's))
        self._threads: dict[str, tuple[float, bool, int]] = {}
        self._samples: dict[str, tuple[float, float]] = {}  # checker's: name -> (stamp, cpu)

    # -- the data threads (each about itself) ------------------------------------------
    def stamp(self, *, active: bool = True) -> None:
        """The calling thread turns its loop (active: it should keep turning it)."""
        self._threads[threading.current_thread().name] = (
            time.monotonic(), active, threading.get_native_id())

    def touch(self) -> None:
        """Stamp the calling thread if it is watched (a long job's steps, e.g. chunk sends)."""
        entry = self._threads.get(threading.current_thread().name)
        if entry is not None and entry[2] == threading.get_native_id():
            self.stamp(active=entry[1])

    def idle(self) -> None:
        """The calling thread waits for work: not watched until its next `stamp`."""
        self.stamp(active=False)

    def forget(self) -> None:
        """The calling thread ends."""
        self._threads.pop(threading.current_thread().name, None)

    # -- the checker (the actor thread) --------------------------------------------------
    def beats(self) -> list[Beat]:
        beats = []
        # a thread waiting for the warm-up at an import (actors/import_guard.py) is not
        # stuck: no silence counts before it ends, or its deadline passes (a real
        # deadlock is found once either has)
        excused = silence_excused_until()
        for name, (stamped, active, tid) in dict(self._threads).items():
            stamped = max(stamped, excused)
            cpu_now = _thread_cpu(tid)
            # the CPU time at the previous check of this same stamp (checks come every
            # ping, far more often than `STUCK_AFTER`); none yet: not busy
            sample = self._samples.get(name)
            before = sample[1] if sample is not None and sample[0] == stamped else None
            if cpu_now is not None:
                self._samples[name] = (stamped, cpu_now)
            beats.append(Beat(name=name, stamped=stamped, active=active, cpu_before=before,
                              cpu_now=cpu_now))
        for name in set(self._samples) - set(self._threads):
            del self._samples[name]
        return beats

    def stuck(self, now: float, *, bound: float | None = None,
              max_busy: float = MAX_BUSY) -> list[Stuck]:
        return stuck_threads(self.beats(), now, bound=STUCK_AFTER if bound is None else bound,
                             max_busy=max_busy)


TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _thread_cpu(tid: int) -> float | None:
    """CPU seconds (user + system) of a live thread of this process, read from the kernel
    (safe for a thread that ended: None, as off Linux). 10 ms resolution is plenty."""
    try:
        with open(f"/proc/self/task/{tid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, ValueError, IndexError):
        return None


# -- fault injection (tests and stress.chaos only) ------------------------------------------
FAULT_INPUT = "_pyproof_test_fault"
"""A query input that, in a master started with PYPROOF_TEST_HOOKS=1 (tests, the chaos
harness), deadlocks one of its data threads: "deadlock:master-plane" (the thread serving
workers, at the query's first packet request) or "deadlock:merge" (the query's merge
thread, at its first merge). Anywhere else the input is an ordinary input, ignored."""
FAULT_HOLD = 300.0  # a deadlock, but every wait has a bound: the master is killed long before


def injected_fault(inputs: dict) -> str | None:
    """The deadlock a query asks for, if this process honours test hooks."""
    fault = inputs.get(FAULT_INPUT) if TEST_HOOKS else None
    return fault if isinstance(fault, str) else None


def deadlock() -> None:
    """A real self-deadlock (a thread taking a plain lock it holds), bounded by FAULT_HOLD."""
    lock = threading.Lock()
    with lock:
        lock.acquire(timeout=FAULT_HOLD)
