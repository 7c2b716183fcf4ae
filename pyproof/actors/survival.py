"""Start and stop that cannot be fooled: what a dead daemon left behind, and how to end it.

A daemon's control tree (its main process, the Thespian admin and logger, the
root, sessions supervisor and gateway) lives in two process sessions: the
main process's own (it is started with setsid) and the one the Thespian admin
double-forks into. Both are written to `pids.json` in the run directory as
soon as the actor system runs, before the boot can fail. Sessions lead
process sessions of their own, so killing those two sessions ends the control
tree and nothing else: the sessions (their sockets, their registry rows) are
left for the next daemon to re-adopt.
"""

from __future__ import annotations

import contextlib
import json
import os

from pyproof.supervision.process_tree import (
    is_alive,
    kill_session,
    kill_tree,
    session_members,
    start_time,
)

CONTROL_FILES = ("ready.json", "ready.json.tmp", "pids.json", "pids.json.tmp", "control.ipc")


def read_control(run_dir: str) -> dict | None:
    for name in ("pids.json", "ready.json"):
        try:
            with open(os.path.join(run_dir, name)) as f:
                info = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        if "pid" in info:
            return info
    return None


def control_sessions(info: dict) -> list[int]:
    """The process sessions of a daemon's control tree: its own, and Thespian's."""
    sids = [int(info["pid"])]
    for item in info.get("thespian_sessions", ()):
        sids.append(int(item[0] if isinstance(item, list) else item))
    return sids


def stop_control_leftovers(run_dir: str) -> list[int]:
    """Kill every process left of the control tree recorded in `run_dir`; remove its control
    files (never a session's). Returns the pids killed."""
    info = read_control(run_dir)
    killed: list[int] = []
    if info is not None:
        pid = int(info["pid"])
        recorded = info.get("start")
        if is_alive(pid) and (recorded is None or start_time(pid) == recorded):
            killed += kill_tree(pid, spare_sessions=True)
        for sid in control_sessions(info):
            killed += kill_session(sid)
    for name in CONTROL_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(run_dir, name))
    return killed


def stop_sessions_too(sids: list[int]) -> list[int]:
    """Kill the process sessions `sids` *and* every process tree under their members: the
    session supervisors the control tree started lead sessions of their own, so a plain
    `kill_session` would spare them (what a daemon stopping for good must not do)."""
    killed: list[int] = []
    for sid in sids:
        for member in session_members(sid):
            killed += kill_tree(member)
        killed += kill_session(sid)
    return killed
