"""Starting, finding and stopping `proofd`, the shared daemon (used by proofctl and tests)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from pyproof.errors import ConnectError, ProofError
from pyproof.sandbox import daemon_home, make_private_dir, open_private
from pyproof.supervision.process_tree import is_alive, kill_tree

DEFAULT_PORT = 1093  # PROOF's own port
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
LEAVE_TIMEOUT = 60.0  # a joined host's workers drain (hosts.py LEAVE_DRAIN) within this


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    url: str
    pid: int
    home: str
    log_dir: str
    thespian_sessions: tuple[int, ...]


def _ready(port: int) -> dict | None:
    """What the daemon on `port` wrote when it became ready (None: nothing readable)."""
    try:
        with open(os.path.join(daemon_home(port), "run", "ready.json")) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def read_info(port: int) -> DaemonInfo | None:
    home = daemon_home(port)
    info = _ready(port)
    if info is None or "error" in info or not is_alive(int(info["pid"])):
        return None
    return DaemonInfo(url=info["url"], pid=int(info["pid"]), home=home,
                      log_dir=os.path.join(home, "logs"),
                      thespian_sessions=tuple(info.get("thespian_sessions", ())))


def start_daemon(port: int = DEFAULT_PORT, *, host: str = "127.0.0.1",
                 max_sessions_per_user: int = 0, max_workers_per_user: int = 0,
                 session_orphan_grace: int = 0, session_idle_timeout: int | None = None,
                 result_ttl: int | None = None,
                 users_dir: str | None = None, admins: str | None = None,
                 foreground: bool = False, timeout: float = START_TIMEOUT,
                 cluster_args: list[str] | None = None) -> DaemonInfo:
    """Start proofd on host:port in the background (or run it here with foreground=True).

    `cluster_args`: the daemon's cluster options (--cluster-secret, --name, --join, ...,
    see pyproof/hosts/config.py), passed as they are."""
    running = read_info(port)
    if running is not None:
        raise ConnectError(f"proofd already runs at {running.url} (pid {running.pid})")
    home = daemon_home(port)
    run_dir, log_dir = os.path.join(home, "run"), os.path.join(home, "logs")
    # a previous daemon on this port died: stop what is left of its control tree, but
    # keep its sessions (and their files and registry): the new daemon re-adopts them
    stop_control_leftovers(run_dir)
    make_private_dir(run_dir)  # the daemon makes the rest of the sandbox private
    make_private_dir(log_dir)
    args = [sys.executable, "-m", "pyproof.actors.daemon", "--run-dir", run_dir,
            "--log-dir", log_dir, "--control", f"tcp://{host}:{port}",
            "--url", f"proof://{host}:{port}",
            "--max-sessions-per-user", str(max_sessions_per_user),
            "--max-workers-per-user", str(max_workers_per_user),
            "--session-orphan-grace", str(session_orphan_grace),
            "--preload-data"]  # a long-lived daemon: its sessions start with numpy and co.
    if session_idle_timeout is not None:
        args += ["--session-idle-timeout", str(session_idle_timeout)]
    if result_ttl is not None:
        args += ["--result-ttl", str(result_ttl)]
    if users_dir:
        args += ["--users-dir", users_dir]
    if admins:
        args += ["--admins", admins]
    args += cluster_args or []
    if foreground:
        os.execv(sys.executable, args)
    with open_private(os.path.join(log_dir, "daemon.out"), "ab") as out:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    ready = os.path.join(run_dir, "ready.json")
    while time.monotonic() < deadline:
        exited = process.poll() is not None
        # an error it wrote before exiting says more than its exit code: read that first
        if os.path.exists(ready):
            with open(ready) as f:
                status = json.load(f)
            if "error" in status:
                try:  # it stops itself after writing the error: wait for it (bounded)
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    kill_tree(process.pid)
                    process.wait(STOP_TIMEOUT)
                stop_daemon(port)
                raise ConnectError(f"proofd failed to start: {status['error']}")
            info = read_info(port)
            if info is not None and not exited:
                info_process[info.pid] = process
                return info
        if exited:
            stop_control_leftovers(run_dir)  # what it started before it died
            raise ConnectError(f"proofd exited with code {process.returncode} while starting; "
                               f"see {os.path.join(log_dir, 'daemon.out')}")
        time.sleep(0.02)
    kill_tree(process.pid)
    process.wait(STOP_TIMEOUT)
    stop_control_leftovers(run_dir)
    raise ConnectError(f"proofd did not become ready within {timeout:.0f} s; "
                       f"see {os.path.join(log_dir, 'daemon.out')}")


# Popen objects of daemons this process started, so stop_daemon can reap them
info_process: dict[int, subprocess.Popen] = {}


def leave_cluster(port: int = DEFAULT_PORT, *, timeout: float = LEAVE_TIMEOUT) -> dict:
    """Before a joined host's daemon stops: it tells its master it leaves and drains its
    workers of the master's sessions (actors/hosts.py). The daemon's answer: {"left": None}
    when it is no cluster member, else {"left": MASTER_URL, "workers": [...], "drained":
    bool, "master_error": str}; {"error": ...} if it could not be asked (the stop goes on)."""
    from pyproof.client.control import dial_daemon

    info = _ready(port)
    if not info or not info.get("url") or not is_alive(int(info.get("pid", 0))):
        return {"left": None}
    try:
        control = dial_daemon(info["url"], connect_within=5.0)
    except ProofError as exc:
        return {"error": str(exc)}
    try:
        return control.call("leave_cluster", deadline=timeout)
    except ProofError as exc:
        return {"error": str(exc)}
    finally:
        control.close()


def stop_control_leftovers(run_dir: str) -> list[int]:
    """Kill what a dead daemon left of its control tree (see pyproof.actors.survival)."""
    from pyproof.actors.survival import stop_control_leftovers as stop

    return stop(run_dir)


def stop_daemon(port: int = DEFAULT_PORT, *, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop proofd on `port`: SIGTERM, then kill whatever is left, its sessions too (found
    in its registry, so even those of a daemon that died). False if none ran."""
    from pyproof.actors.registry import Registry, stop_registered
    from pyproof.actors.survival import stop_sessions_too

    home = daemon_home(port)
    run_dir = os.path.join(home, "run")
    info = _ready(port) or _control(run_dir)
    if info is None:
        if not Registry(run_dir).entries():
            return False
        info = {}
    pid = int(info.get("pid", 0))
    if pid and is_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while is_alive(pid) and time.monotonic() < deadline:
            process = info_process.get(pid)
            if process is not None and process.poll() is not None:
                break
            time.sleep(0.02)
        if is_alive(pid):
            kill_tree(pid)
    process = info_process.pop(pid, None)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    sids = [sid[0] if isinstance(sid, list) else sid
            for sid in (pid, *info.get("thespian_sessions", ())) if sid]
    stop_sessions_too(sids)
    stop_registered(run_dir)
    stop_control_leftovers(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


def _control(run_dir: str) -> dict | None:
    """pids.json: written by a daemon as soon as its actor system runs (before ready.json)."""
    try:
        with open(os.path.join(run_dir, "pids.json")) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
