"""One real Thespian actor system in the test process, for tests of actor shells.

`in_process_system` starts it (`start_system`: loopback, a free port), yields it, and
then kills the process sessions its admin made (it double-forks into one of its own,
see actors/daemon.py) and restores the environment variables `start_system` sets.

Its actors are forked from the test process. Earlier tests leave garbage there (clients'
nng sockets in reference cycles); a collection in a forked actor would close such an
inherited socket, and nng aborts the process ("nng is not fork-reentrant safe"): the
actor vanished mid-test. So the test process collects before the system starts, as the
daemon freezes what it loaded before it forks (actors/daemon.py).
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator

from pyproof.actors.system import start_system
from pyproof.supervision.process_tree import children_of, kill_session

ENV = ("THESPLOG_FILE", "THESPLOG_THRESHOLD", "THESPIAN_BASE_IPADDR")


@contextlib.contextmanager
def in_process_system(log_dir: str, **options: object) -> Iterator[object]:
    """`options`: passed on to `start_system` (admin_preload)."""
    saved = {name: os.environ.get(name) for name in ENV}
    before = set(children_of(os.getpid()))
    gc.collect()  # no garbage (an nng socket) for a forked actor to collect: see above
    system, _ = start_system(log_dir, **options)  # type: ignore[arg-type]
    sessions = [pid for pid in children_of(os.getpid()) if pid not in before]
    try:
        yield system
    finally:
        kill_session(sessions)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

