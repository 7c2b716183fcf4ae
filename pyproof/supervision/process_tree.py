"""Kill whole process trees, and make children die with their parents (Linux).

Thespian leaves a SIGKILLed actor's children running as orphans and does not
reap them on shutdown; these helpers are how pyproof keeps "no orphans, ever".
Descendants are found through /proc (the per-thread `children` files, or a
scan of every /proc/<pid>/stat where the kernel lacks them), so no
third-party dependency is needed.

This is the shell side of supervision: it touches processes and the clock,
so the pure core never imports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable, Iterable

__all__ = [
    "PR_SET_PDEATHSIG",
    "children_of",
    "descendants_of",
    "is_alive",
    "kill_tree",
    "set_parent_death_signal",
]

PR_SET_PDEATHSIG = 1
_MAX_ROUNDS = 1000


def _children_files_work() -> bool:
    tid = os.getpid()
    return os.path.exists(f"/proc/{tid}/task/{tid}/children")


_HAS_CHILDREN_FILES = _children_files_work()


def _children_from_stat(pid: int) -> list[int]:
    """Direct children of `pid` by scanning the ppid field of every /proc/<pid>/stat."""
    kids: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            kids.append(int(name))
    return kids


def children_of(pid: int) -> list[int]:
    """Direct children of `pid` (all its threads), read from /proc."""
    if not _HAS_CHILDREN_FILES:
        return _children_from_stat(pid)
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
    seen: set[int] = set()
    frontier = [pid]
    while frontier:
        nxt: list[int] = []
        for p in frontier:
            for child in children_of(p):
                if child not in seen:
                    seen.add(child)
                    found.append(child)
                    nxt.append(child)
        frontier = nxt
    return found


def stat_field(pid: int, index: int) -> int | None:
    """Field `index` of /proc/PID/stat counted after the command name (0 is the state,
    3 the session id, 19 the start time), as an int; None if the process is gone."""
    fields = _stat_fields(pid)
    try:
        return int(fields[index]) if fields else None
    except (IndexError, ValueError):
        return None


def cpu_ticks(pid: int) -> int | None:
    """CPU time (user + system, all threads) `pid` has used, in clock ticks; None if gone."""
    fields = _stat_fields(pid)
    try:
        return int(fields[11]) + int(fields[12]) if fields else None
    except (IndexError, ValueError):
        return None


def state_and_cpu(pid: int) -> tuple[str, int] | None:
    """(state letter, CPU ticks used) of `pid` in one read of /proc; None if gone.
    'T' or 't': stopped (SIGSTOP, a debugger); 'Z': a zombie."""
    fields = _stat_fields(pid)
    try:
        return (fields[0], int(fields[11]) + int(fields[12])) if fields else None
    except (IndexError, ValueError):
        return None


def run_wait(pid: int) -> int | None:
    """Time the main thread of `pid` spent runnable, waiting on a run queue for a CPU, in
    ns (second field of /proc/PID/schedstat); None if gone or the kernel does not say."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks: (pid, start) names a process, pids recycle."""
    return stat_field(pid, 19)


def is_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _is_session_leader(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[3] == str(pid)


def _freeze(roots: list[int], *, spare_sessions: bool = False) -> list[int]:
    """SIGSTOP `roots` and all their descendants, top-down; the frozen pids, parents first.

    With `spare_sessions`, a descendant that leads a session of its own (a
    pyproof session supervisor, which calls setsid) is left alone, with its
    subtree: a session outlives the control process it was started from.

    Each process is stopped before its children are read, so none of them can
    fork or be re-parented unseen; a fork already in flight when a parent was
    stopped shows up in the next round, which repeats until nothing new turns up.
    """
    me = os.getpid()
    victims: list[int] = []
    seen: set[int] = set()
    frontier = list(roots)
    for _ in range(_MAX_ROUNDS):
        while frontier:
            nxt: list[int] = []
            for p in frontier:
                if p in seen or p == me:
                    continue
                seen.add(p)
                if spare_sessions and p not in roots and _is_session_leader(p):
                    continue
                _signal(p, signal.SIGSTOP)
                victims.append(p)
                nxt.extend(children_of(p))
            frontier = nxt
        frontier = [c for p in victims for c in children_of(p) if c not in seen]
        if not frontier:
            break
    return victims


def kill_tree(
    pid: int,
    sig: int = signal.SIGKILL,
    *,
    include_root: bool = True,
    timeout: float = 5.0,
    reap: bool = True,
    spare_sessions: bool = False,
) -> list[int]:
    """Send `sig` to `pid` and every descendant; wait (bounded) until they are gone.

    The tree is frozen with SIGSTOP first, top-down, so nobody forks or gets
    re-parented while it is collected; then every process gets `sig` (and
    SIGCONT, so a polite signal can be handled). Survivors of a signal other
    than SIGKILL are SIGKILLed, with their own descendants, once `timeout`
    seconds have passed. Zombies that are our own children (or re-parented
    to us as a subreaper) are reaped. Returns the pids that were signalled,
    parents first. `include_root=False` spares `pid` itself (e.g. ourselves).
    `reap=False` leaves the zombies of our own children to whoever waits for
    them (Thespian must see its child exit to report ChildActorExited).
    `spare_sessions=True` leaves descendants that lead their own session (and
    their subtrees) running: how control processes die without their sessions.
    `timeout=0` with SIGKILL: signal every process and return at once (`wait_gone`
    waits for several trees together).
    """
    roots = [pid] if include_root else children_of(pid)
    victims = _freeze(roots, spare_sessions=spare_sessions)
    for p in victims:
        _signal(p, sig)
    if sig != signal.SIGKILL:
        for p in victims:
            _signal(p, signal.SIGCONT)
    pending = wait_gone(victims, timeout=timeout, reap=reap)
    if pending and sig != signal.SIGKILL:
        for p in pending:
            victims.extend(v for v in kill_tree(p, timeout=timeout, reap=reap,
                                                spare_sessions=spare_sessions)
                           if v not in victims)
    if reap:
        for p in victims:
            _reap(p)
    return victims


def wait_gone(pids: list[int], *, timeout: float, reap: bool = True) -> list[int]:
    """Wait (at most `timeout` seconds; 0: not at all) until none of `pids` is alive (a
    zombie counts as gone), reaping those that are our children unless `reap` is False;
    returns those still alive."""
    deadline = time.monotonic() + timeout
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        if reap:
            for p in pending:
                _reap(p)
        pending = [p for p in pending if is_alive(p)]
        if pending:
            time.sleep(0.002)
    return pending


def set_parent_death_signal(sig: int = signal.SIGKILL, *, parent: int | None = None) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies.

    The kernel sends it when the *thread* that created this process exits,
    so create children from a long-lived thread (the main one). Call it first
    thing in a child. Pass `parent` (the parent's pid, read
    before forking) to close the race where the parent dies before the call:
    if it has, this process signals itself at once. Returns False where prctl
    is unavailable (not Linux).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if ok and parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return ok


_STAT_READ = 1024  # /proc/PID/stat is one line of about 300 bytes (a 64-byte name at most)


def _stat_fields(pid: int | str) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, session, ...

    Read with os.read, not open(): a scan of /proc (`session_members`) reads every
    process's file, and a text file object costs twice the whole read."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, _STAT_READ)
    except OSError:
        return None
    finally:
        os.close(fd)
    end = data.rfind(b")")
    return data[end + 1:].decode("ascii", "replace").split() if end >= 0 else None


def session_members(sid: int | Iterable[int], *,
                    also: Callable[[int], bool] | None = None) -> list[int]:
    """Live processes whose session id is `sid` (or one of several, in one pass of /proc),
    and those of the others for which `also(pid)` is true.

    Thespian's admin double-forks and calls setsid(), so the actor system
    lives in a session of its own, detached from the process that started it:
    its session id is the only handle that finds every actor.
    """
    sids = {sid} if isinstance(sid, int) else set(sid)
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if not fields or fields[0] in ("Z", "X"):
            continue
        pid = int(entry)
        if int(fields[3]) in sids or (also is not None and also(pid)):
            members.append(pid)
    return members


def kill_session(sid: int | Iterable[int], *, timeout: float = 5.0,
                 also: Callable[[int], bool] | None = None) -> list[int]:
    """SIGKILL every process of session `sid` (or of several), frozen first; wait until
    they are gone. Several sessions are killed together: each round reads /proc once.
    `also(pid)`: processes outside those sessions to kill too (see `session_members`)."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        members = [p for p in session_members(sid, also=also) if p != os.getpid()]
        if not members:
            break
        for p in members:
            _signal(p, signal.SIGSTOP)
        for p in members:
            _signal(p, signal.SIGKILL)
            _reap(p)
        killed.extend(m for m in members if m not in killed)
        time.sleep(0.002)
    return killed


PR_SET_CHILD_SUBREAPER = 36


def detach_session() -> bool:
    """Lead a new session (setsid): killing the session of the process that started us, or
    its process tree with `spare_sessions`, then leaves us and our children running.
    False if we already lead one (or setsid is refused)."""
    try:
        os.setsid()
    except OSError:
        return False
    return True


def become_subreaper() -> bool:
    """Orphans of our descendants are re-parented to us (Linux), so they can be found and
    reaped: what test fixtures and the stress harness use to prove nothing leaks."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_children() -> None:
    """Collect every exited child of ours (zombies), without waiting."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def cmdline(pid: int) -> str:
    """The command line of `pid`, for messages ("?" if it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


def lead_process_group() -> bool:
    """Lead a new process group (setpgid): what the processes we start (and theirs) inherit,
    so `kill_group(our pid)` finds them after we are gone, even re-parented."""
    try:
        os.setpgid(0, 0)
    except OSError:
        return False
    return True


def kill_group(pgid: int) -> bool:
    """SIGKILL every process of process group `pgid`; False if there was none."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def reap_orphans(keep: set[int]) -> list[int]:
    """Reap exited children of ours that are not in `keep` (orphans re-parented to us as a
    subreaper), never waiting, and never touching the children in `keep` (whose exit
    statuses belong to someone else, e.g. Thespian)."""
    reaped = []
    for child in children_of(os.getpid()):
        if child in keep or is_alive(child):
            continue
        with contextlib.suppress(ChildProcessError, OSError):
            if os.waitpid(child, os.WNOHANG)[0] == child:
                reaped.append(child)
    return reaped
