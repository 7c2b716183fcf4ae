"""Chaos and load harness for proofd (seeded, replayable; also run in CI).

- `stress.chaos`: concurrent clients run queries with exact known answers
  while random actors (gateway, masters, workers) are SIGKILLed or SIGSTOPped.
- `stress.connect_storm`: hundreds of clients connect at once; the gateway
  must answer all of them (or refuse them clearly) and stay healthy.
- `stress.selectors`: the selectors both run, with integer-exact outputs.

This module holds what both share: a daemon in a private sandbox, the
flattened live supervision tree, and the leak audit run after the daemon is
stopped. The harness makes its process a child subreaper, so anything the
daemon orphans is re-parented here and is found (and killed) by the audit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import tempfile
import time
from typing import Any

from pyproof.actors.system import spare_port
from pyproof.cli.daemon import DaemonInfo, start_daemon, stop_daemon
from pyproof.client.control import ControlClient
from pyproof.supervision.process_tree import (  # noqa: F401 (become_subreaper: re-exported)
    become_subreaper,
    children_of,
    cmdline,
    descendants_of,
    is_alive,
    kill_session,
    kill_tree,
    reap_children,
    session_members,
    start_time,
    stat_field,
)

TREE_DEADLINE = 5.0
AUDIT_GRACE = 5.0

_HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(_HERE)
DATA = os.path.join(REPO, "tests", "data")  # the real ROOT files the tests ship


def data_file(name: str) -> str:
    path = os.path.join(DATA, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"test data file not found: {path} (see tests/data/README.md)")
    return path


def session_of(pid: int) -> int | None:
    return stat_field(pid, 3)


def flatten_tree(root: dict[str, Any]) -> dict[str, int]:
    """'root', 'sessions', 'gateway', 'session-<id>', '<id>/master', '<id>/worker-N' -> pid."""
    found: dict[str, int] = {}
    if not root:
        return found
    found["root"] = root["pid"]
    for child in root.get("children", []):
        if child.get("pid"):
            found[child["id"]] = child["pid"]
        if child["id"] == "sessions" and child.get("tree"):
            for session in child["tree"].get("children", []):
                if session.get("pid"):
                    found[f"session-{session['id']}"] = session["pid"]
                for leaf in (session.get("tree") or {}).get("children", []):
                    if leaf.get("pid"):
                        found[f"{session['id']}/{leaf['id']}"] = leaf["pid"]
    return found


def socket_files(top: str) -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(path).st_mode) or name.endswith(".ipc"):
                    found.append(path)
    return sorted(found)


class SandboxDaemon:
    """A proofd on a free loopback port, in a temp sandbox removed by `stop()`.

    `pids()` reads the live tree (and remembers every process it ever saw,
    for the audit); `stop()` stops the daemon and returns the audit.
    """

    def __init__(self, **limits: int) -> None:
        self.sandbox = tempfile.mkdtemp(prefix="pyproof-stress-")
        self._old_sandbox = os.environ.get("PYPROOF_SANDBOX")
        os.environ["PYPROOF_SANDBOX"] = self.sandbox
        self.port = spare_port()
        self.limits = limits
        self.seen: dict[int, int | None] = {}  # pid -> start time, every actor ever seen
        try:
            self.info: DaemonInfo = start_daemon(self.port, **limits)
        except BaseException:
            self._restore_env()
            shutil.rmtree(self.sandbox, ignore_errors=True)
            raise
        self.url = self.info.url
        self.sessions = (self.info.pid, *self.info.thespian_sessions)
        self.control = ControlClient(f"tcp://127.0.0.1:{self.port}", attempt_timeout=2.0)
        self.stopped = False

    def tree(self, deadline: float = TREE_DEADLINE) -> dict[str, Any]:
        return self.control.call("tree", deadline=deadline)["tree"]

    def pids(self, deadline: float = TREE_DEADLINE) -> dict[str, int]:
        found = flatten_tree(self.tree(deadline))
        for pid in found.values():
            if pid not in self.seen:
                self.seen[pid] = start_time(pid)
        return found

    def owns(self, pid: int) -> bool:
        """True if `pid` is a live process of this daemon (not a recycled pid): of its
        control tree's process sessions, or an actor seen in its live tree (sessions lead
        process sessions of their own)."""
        if not is_alive(pid):
            return False
        return pid == self.info.pid or session_of(pid) in self.sessions or (
            pid in self.seen and self.seen[pid] == start_time(pid))

    def control_pids(self) -> dict[str, int]:
        """The control tree's processes: 'main', 'admin', 'logger', 'root', 'sessions',
        'gateway' (the admin is the root's parent; the logger its other child)."""
        pids = self.pids()
        found = {"main": self.info.pid}
        for key in ("root", "sessions", "gateway"):
            if key in pids:
                found[key] = pids[key]
        admin = stat_field(pids["root"], 1) if "root" in pids else None
        if admin and admin > 1 and session_of(admin) in self.sessions:
            found["admin"] = admin
            for child in children_of(admin):
                if child != pids.get("root") and is_alive(child):
                    found["logger"] = child
                    self.seen.setdefault(child, start_time(child))
            self.seen.setdefault(admin, start_time(admin))
        return found

    def restart(self) -> float:
        """Start the daemon again on its port (as systemd would after it died): what is left
        of its control tree is stopped, its sessions re-adopted. Returns the seconds taken."""
        t0 = time.monotonic()
        self.info = start_daemon(self.port, **self.limits)
        self.sessions = (*self.sessions, self.info.pid, *self.info.thespian_sessions)
        return time.monotonic() - t0

    def stale_socket_files(self) -> list[str]:
        """Socket files of the run directory no live session explains (closed sessions')."""
        try:
            live = {k.split("/")[0] for k in self.pids() if "/" in k}
        except Exception:
            return []
        run = os.path.join(self.info.home, "run")
        # a session's master listens on master-SID.ipc and, for queries sent to it
        # directly, on direct-SID.ipc
        return [p for p in socket_files(run)
                if not any(os.path.basename(p) in (f"master-{sid}.ipc", f"direct-{sid}.ipc")
                           for sid in live)]

    def stop(self) -> dict[str, Any]:
        """Stop the daemon, then audit: processes that survived it, socket files left."""
        if self.stopped:
            return {}
        self.stopped = True
        with contextlib.suppress(Exception):
            self.control.close()
        t0 = time.monotonic()
        stop_daemon(self.port)
        stop_seconds = time.monotonic() - t0
        audit = self.audit()
        audit["stop_seconds"] = round(stop_seconds, 2)
        keep = os.environ.get("PYPROOF_STRESS_KEEP_LOGS")  # a directory: keep the logs there
        if keep:
            shutil.copytree(self.info.log_dir, os.path.join(keep, f"proofd-{self.port}"),
                            dirs_exist_ok=True)
        self._restore_env()
        shutil.rmtree(self.sandbox, ignore_errors=True)
        return audit

    def audit(self) -> dict[str, Any]:
        deadline = time.monotonic() + AUDIT_GRACE
        while True:
            reap_children()
            leaked = self._survivors()
            if not leaked or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        described = [f"{pid}: {cmdline(pid)}" for pid in sorted(leaked)]
        for pid in leaked:  # the harness cleans up after a leak, and reports it
            kill_tree(pid)
        for sid in self.sessions:
            kill_session(sid)
        reap_children()
        return {"processes_leaked": len(leaked), "leaked": described,
                "socket_files_left": socket_files(self.sandbox)}

    def _survivors(self) -> set[int]:
        alive: set[int] = set()
        for sid in self.sessions:
            alive.update(session_members(sid))
        alive.update(pid for pid, started in self.seen.items()
                     if is_alive(pid) and start_time(pid) == started)
        alive.update(pid for pid in descendants_of(os.getpid()) if is_alive(pid))
        alive.discard(os.getpid())
        return alive

    def _restore_env(self) -> None:
        if self._old_sandbox is None:
            os.environ.pop("PYPROOF_SANDBOX", None)
        else:
            os.environ["PYPROOF_SANDBOX"] = self._old_sandbox


def run_audited(daemon: SandboxDaemon, drive: Any, failures: Any,
                cleanup: Any = None) -> dict[str, Any]:
    """`drive(daemon)`'s report, then the daemon stopped and audited whatever happened.

    `cleanup()` runs before the stop (thaw what the run froze, stop its threads);
    `failures(report)` lists what makes the run fail; `ok` is that list being empty.
    """
    started = time.monotonic()
    report: dict[str, Any] = {}
    try:
        report = drive(daemon)
    finally:
        if cleanup is not None:
            cleanup()
        audit = daemon.stop()
    report.update(audit)
    report["wall_seconds"] = round(time.monotonic() - started, 2)
    report["failures"] = failures(report) + audit_failures(report)
    report["ok"] = not report["failures"]
    return report


def audit_failures(report: dict[str, Any]) -> list[str]:
    """What the stop-and-audit found wrong (every run fails on these)."""
    failures = []
    if report.get("processes_leaked"):
        failures.append(f"{report['processes_leaked']} process(es) leaked")
    if report.get("socket_files_left"):
        failures.append(f"{len(report['socket_files_left'])} socket file(s) left")
    return failures


def sigcont(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGCONT)


def process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
