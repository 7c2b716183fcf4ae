"""Forks that wait for a loading thread before they begin, not inside `os.fork`'s hooks.

A process that imports on a thread (the admin's preload, an actor's warm-up) must not
fork meanwhile: the child would inherit the import locks that thread holds, held for
ever there. Waiting in an `os.register_at_fork(before=...)` hook is not enough:

- `os.fork` runs the `before` hooks from a copy of the list taken as it starts, but the
  `after_in_parent` hooks from the list as it is afterwards. A module that the wait let
  the thread import, and that registers a pair of hooks (concurrent.futures' shutdown
  lock, say), gets its `after_in_parent` run without its `before`: "Exception ignored
  ... release unlocked lock" on the fork's parent.
- `before` hooks run latest registered first: one registered after ours runs before our
  wait and may take a lock the loading thread needs (logging's), which then stands still
  until the wait's bound.

Every fork that matters here goes through multiprocessing's fork start method: Thespian
creates each actor with a `multiprocessing.Process`, and so do selectors' Pools. So
`gate(wait)` also makes `multiprocessing.popen_fork.Popen._launch` call `wait` before
it forks, when no hook has run yet. An `os.register_at_fork` hook stays, for a direct
`os.fork` (where the issues above remain, bounded by the wait's own bound).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

_waits: list[Callable[[], None]] = []
_lock = threading.Lock()
_installed = False


def _wait_all() -> None:
    for wait in list(_waits):
        wait()


def gate(wait: Callable[[], None]) -> None:
    """From now on, every fork of this process calls `wait` first (it must return at once
    when there is nothing to wait for, and bound its own wait). Forked children inherit
    the gate: each `wait` must also return at once in a child.

    Its `os.register_at_fork` hook is registered now, at each call: `before` hooks run
    latest registered first, so a wait registered as its loading starts runs before the
    hooks of modules imported earlier."""
    global _installed
    with _lock:
        if wait not in _waits:
            _waits.append(wait)
        first, _installed = not _installed, True
    if first:
        from multiprocessing import popen_fork

        launch = popen_fork.Popen._launch

        def gated_launch(self, process_obj):
            _wait_all()
            return launch(self, process_obj)

        popen_fork.Popen._launch = gated_launch
    os.register_at_fork(before=wait)
