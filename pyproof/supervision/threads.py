"""Data-thread heartbeats: which of a process's own threads are stuck (pure, time passed in).

The supervisor's watchdog pings an actor's message loop; a master's data
threads (the thread serving workers on nng, the merge threads) run beside
that loop, and a deadlocked one would go unnoticed: the actor answers pings
while its query waits for ever. So each data thread stamps a monotonic time
(and its own CPU time) at every turn of its loop (every wait in it is
bounded), and the actor's answer to a ping asks `stuck_threads` whether any
thread that should be running has been silent too long.

A thread silent past `bound` whose CPU time went up since the last check is busy
(one long C call: decoding or merging a huge output holds it for seconds),
not stuck, for up to `max_busy` seconds; a deadlocked or blocked thread uses
no CPU and is stuck on time. The same rule as the watchdog's busy-vs-hung
(watchdog.py), for threads.
"""

from __future__ import annotations

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply

__all__ = ["Beat", "Stuck", "stuck_threads"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Beat:
    """One data thread as seen now."""

    name: str
    stamped: float
    """Monotonic time of its last stamp."""
    active: bool
    """It should be turning its loop (an idle merge thread waits for work: not active)."""
    cpu_before: float | None = None
    """Its own CPU seconds at the previous check (or its stamp, if later); None: unknown,
    it counts as not busy."""
    cpu_now: float | None = None
    """Its CPU seconds now (None: unknown, or the thread has ended)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stuck:
    name: str
    silent: float
    """Seconds since its last stamp."""


def stuck_threads(beats: list[Beat] | tuple[Beat, ...], now: float, *, bound: float,
                  max_busy: float) -> list[Stuck]:
    """The active threads silent for over `bound` s and not busy (or busy over `max_busy`)."""
    stuck = []
    for beat in beats:
        silent = now - beat.stamped
        if not beat.active or silent <= bound:
            continue
        busy = (beat.cpu_before is not None and beat.cpu_now is not None
                and beat.cpu_now > beat.cpu_before)
        if busy and silent <= max_busy:
            continue
        stuck.append(Stuck(name=beat.name, silent=silent))
    return stuck
