"""Kill whole process trees, and make children die with their parents (Linux).

Thespian leaves a SIGKILLed actor's children running as orphans and does not
reap them on shutdown; these helpers are how pyproof keeps "no orphans, ever".
Descendants are found through /proc, so no third-party dependency is needed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time

PR_SET_PDEATHSIG = 1


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (all its threads), read from /proc."""
    kids: list[int] = []
    task_dir = f"/proc/{pid}/task"
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"{task_dir}/{tid}/children") as f:
                kids.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return kids


def descendants_of(pid: int) -> list[int]:
    """All descendants of `pid`, parents before children."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        nxt: list[int] = []
        for p in frontier:
            for child in children_of(p):
                if child not in found:
                    found.append(child)
                    nxt.append(child)
        frontier = nxt
    return found


def is_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_tree(pid: int, *, include_root: bool = True, timeout: float = 5.0) -> list[int]:
    """SIGKILL `pid` and every descendant; wait (bounded) until they are gone.

    The tree is frozen with SIGSTOP first so nobody forks or gets reparented
    while we collect it. Returns the pids that were signalled. Zombies that
    are our own children are reaped.
    """
    victims: list[int] = []
    frontier = [pid] if include_root else children_of(pid)
    # freeze top-down, collecting as we go, so no child escapes by re-parenting
    while frontier:
        nxt: list[int] = []
        for p in frontier:
            if p in victims or p == os.getpid():
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGSTOP)
            victims.append(p)
            nxt.extend(children_of(p))
        frontier = nxt
    for p in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for p in victims:
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(p, os.WNOHANG)
            if not is_alive(p):
                break
            time.sleep(0.005)
    return victims


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies.

    Returns False where prctl is unavailable (not Linux).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, session, ..."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def session_members(sid: int) -> list[int]:
    """Live processes whose session id is `sid`.

    Thespian's admin double-forks and calls setsid(), so the actor system
    lives in a session of its own, detached from the process that started it:
    its session id is the only handle that finds every actor.
    """
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields and fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            members.append(int(entry))
    return members


def kill_session(sid: int, *, timeout: float = 5.0) -> list[int]:
    """SIGKILL every process of session `sid` (frozen first), waiting until they are gone."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        members = [p for p in session_members(sid) if p != os.getpid()]
        if not members:
            break
        for p in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGSTOP)
        for p in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(p, os.WNOHANG)
        killed.extend(m for m in members if m not in killed)
        time.sleep(0.01)
    return killed
