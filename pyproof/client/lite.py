"""`lite://`: a private local cluster in its own process tree.

The daemon runs as a fresh interpreter (never forked from the client, which
may have used nng), in its own process group, fed a pipe on stdin: when the
client process dies, the pipe closes and the daemon tears its tree down.
Logs go to the sandbox (`$PYPROOF_SANDBOX`, default ~/.pyproof) under
`lite/<session-dir>/logs`, kept for `proofctl logs`, private to the user as
all of the sandbox; the run directory with the sockets is a private
temporary directory, removed at close.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from pyproof.errors import ConnectError
from pyproof.sandbox import lite_sessions_dir, make_private_dir, open_private, sandbox_dir
from pyproof.supervision.process_tree import (
    kill_tree,
    session_members,
    start_time,
    stat_field,
    wait_gone,
)
from pyproof.transport import auth

__all__ = ["LiteCluster", "default_workers", "lite_sessions_dir", "sandbox_dir"]

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
KEEP_SESSION_DIRS = 10
MAX_PREOPEN = 256  # the gateway's MAX_WORKERS: a larger session is refused, not pre-opened


def _write_run_secret(run_dir: str, secret: bytes) -> str:
    """The cluster's secret in the run directory, for the daemon (and its gateway) to read.

    `auth.write_secret` syncs the file to disk (a user's secret must survive a crash);
    this one lives as long as the cluster, in a fresh directory only we can enter
    (mkdtemp: 0700) that nobody else writes to, so neither the sync (10 ms or more
    on the critical path of every `connect`) nor the atomic rename is needed.
    """
    path = os.path.join(run_dir, "secret")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, secret.hex().encode("ascii") + b"\n")
    finally:
        os.close(fd)
    return path


def writers_of(path: str) -> list[int]:
    """This user's processes whose standard output is the file `path`: every process of a
    lite cluster (forked from its daemon, whose output goes there), whatever it left."""
    me, found = os.getpid(), []
    target = os.path.realpath(path)
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            if os.readlink(f"/proc/{name}/fd/1") == target:
                found.append(int(name))
        except OSError:  # gone, or not ours to look at
            continue
    return found


def default_workers() -> int:
    env = os.environ.get("PYPROOF_WORKERS")
    if env:
        return int(env)
    cpus = os.cpu_count() or 2
    return cpus if cpus > 2 else 2


class LiteCluster:
    """Starts the daemon process and reaps everything it started on `close()`."""

    def __init__(self, *, timeout: float = START_TIMEOUT, workers: int | None = None,
                 wait: bool = True) -> None:
        """`workers`: the daemon opens a session of that many workers while it boots,
        side by side with its control tree; `open_session` with `open_request` as its
        request id gets it (see bench/startup.py for what that saves).

        `wait=False`: return as soon as the daemon process is started; `wait_ready()`
        then waits for it (`connect` imports the rest of the client meanwhile)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = make_private_dir(lite_sessions_dir())  # the daemon fixes what is older
        self.session_dir = tempfile.mkdtemp(prefix=f"{stamp}-{os.getpid()}-", dir=base)
        self.log_dir = make_private_dir(os.path.join(self.session_dir, "logs"))
        self.run_dir = tempfile.mkdtemp(prefix=f"pyproof-{os.getpid()}-")
        self.thespian_sessions: list[int] = []
        # a fresh secret per cluster: another local user cannot attach to it
        self.secret = auth.fresh_cluster_secret()
        secret_file = _write_run_secret(self.run_dir, self.secret)
        self._out = open_private(os.path.join(self.log_dir, "daemon.out"), "ab")
        # the daemon writes a line on this pipe once ready.json is there: we wait on an
        # event, not by polling the file
        self.open_request: str | None = None
        preopen: list[str] = []
        if workers is not None and 1 <= workers <= MAX_PREOPEN:  # else the gateway says no
            self.open_request = uuid.uuid4().hex
            preopen = ["--open-session", f"{workers}:{self.open_request}"]
        ready_r, ready_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pyproof.actors.daemon", "--run-dir", self.run_dir,
                 "--log-dir", self.log_dir, "--watch-stdin", "--secret-file", secret_file,
                 "--ready-fd", str(ready_w), *preopen],
                stdin=subprocess.PIPE, stdout=self._out, stderr=subprocess.STDOUT,
                start_new_session=True, pass_fds=(ready_w,),
            )
        finally:
            os.close(ready_w)
        # while the daemon boots, not before, and beside the client's own imports (connect):
        # unlinking an old session's files takes tens of milliseconds on some file systems
        self._pruning: threading.Thread | None = threading.Thread(
            target=self._prune_old_sessions, args=(base,), name="pyproof-prune", daemon=True)
        self._pruning.start()
        self.ready_info: dict = {}
        self.t_ready_seen: float | None = None
        self.control_address = ""
        self._ready_r: int | None = ready_r
        self._timeout = timeout
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait (within the start timeout) until the daemon is ready; at once if it was.

        Raises ConnectError (the cluster closed) if it exits or fails to boot first.
        """
        ready_r, self._ready_r = self._ready_r, None
        if ready_r is None:
            return
        try:
            self.control_address = self._wait_ready(ready_r, self._timeout)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(ready_r)
        self._join_pruning()

    def _join_pruning(self) -> None:
        """The old session directories are gone (or STOP_TIMEOUT passed: a stuck disk)."""
        pruning, self._pruning = self._pruning, None
        if pruning is not None:
            pruning.join(STOP_TIMEOUT)

    def _wait_ready(self, ready_fd: int, timeout: float) -> str:
        ready = os.path.join(self.run_dir, "ready.json")
        deadline = time.monotonic() + timeout
        signalled = False
        waiting_on = [ready_fd]
        while (left := deadline - time.monotonic()) > 0:
            if signalled or os.path.exists(ready):
                with open(ready) as f:
                    info = json.load(f)
                self.ready_info, self.t_ready_seen = info, time.time()
                self.thespian_sessions = list(info.get("thespian_sessions", []))
                if "error" in info:
                    raise ConnectError(f"{info['error']} (logs in {self.log_dir})")
                return info["control"]
            if self.process.poll() is not None:
                raise ConnectError(
                    f"the lite daemon exited with code {self.process.returncode} before it "
                    f"was ready; see {os.path.join(self.log_dir, 'daemon.out')}")
            # woken by the daemon's line; the slice bounds how late a dead daemon is seen
            readable, _, _ = select.select(waiting_on, [], [], min(left, 0.1))
            if readable:
                # a line: ready.json is written; end of file: every holder of the pipe is
                # gone (the daemon died: poll() says so next round)
                signalled = bool(os.read(ready_fd, 64))
                if not signalled:
                    waiting_on = []
        raise ConnectError(f"the lite daemon was not ready within {timeout:.0f} s "
                           f"(logs in {self.log_dir})")

    def close(self) -> None:
        """Kill the whole cluster at once: nothing in it needs an orderly stop.

        `Session.close()` has already closed the session (its supervisor stops
        master and workers and answers once they are gone); what is left (root,
        gateway, sessions supervisor, Thespian's admin and logger) holds no
        state worth a shutdown: Thespian's takes 0.5-1 s, so its process trees
        are killed instead. End of file on stdin still tells a daemon we fail
        to kill (it is not ours any more, say) to stop on its own.
        """
        self._join_pruning()
        if self._ready_r is not None:  # closed before wait_ready
            with contextlib.suppress(OSError):
                os.close(self._ready_r)
            self._ready_r = None
        proc = self.process
        # the actors live in a session of their own (Thespian's admin calls setsid), not
        # under the daemon: every one of them, session supervisors included, descends from
        # the admin, so its tree goes too (cheap: each process's children are listed);
        # both trees are killed, then waited for together (their exits overlap)
        admin = self._admin()
        killed: list[int] = []
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            killed += kill_tree(proc.pid, timeout=0)
        if admin is not None:
            killed += kill_tree(admin, timeout=0)
        wait_gone(killed, timeout=STOP_TIMEOUT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT)
        self._kill_strays()
        if proc.stdin:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        self._out.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _admin(self) -> int | None:
        """The pid of Thespian's admin (the root supervisor's parent), if it still runs in
        this cluster's actor session."""
        root = self.ready_info.get("root_pid")
        sessions = set(self.thespian_sessions)
        if not isinstance(root, int) or stat_field(root, 3) not in sessions:
            return None
        admin = stat_field(root, 1)
        return admin if admin and admin > 1 and stat_field(admin, 3) in sessions else None

    def _kill_strays(self) -> None:
        """Kill whatever of the cluster is left after the trees (usually nothing): processes
        re-parented away from them (an actor whose parent died), found by a pass of /proc
        repeated until one finds nothing (the lite close's cost: a pass reads every
        process's stat file, so it is done once when all went with the trees).

        Those are: the actors' session (Thespian's admin calls setsid); each session
        supervisor's (it calls setsid too: it outlives the control tree), found through
        the session registry, or by its output (one closed while it starts has left the
        control tree's process session, not yet written itself in the registry) and then
        with everything in its session.
        """
        from pyproof.actors.registry import Registry

        sids = {self.process.pid, *self.thespian_sessions}
        with contextlib.suppress(Exception):  # no registry yet, or already gone
            for entry in Registry(self.run_dir).entries():
                sup = entry.supervisor
                if start_time(sup.pid) == sup.start:  # never a stranger's recycled pid
                    sids.add(sup.pid)
        output = os.path.realpath(self._out.name)

        def writes_our_output(pid: int) -> bool:
            try:
                return os.readlink(f"/proc/{pid}/fd/1") == output
            except OSError:
                return False

        me = os.getpid()
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            strays = [p for p in session_members(sids, also=writes_our_output) if p != me]
            if not strays:
                return
            sids.update(p for p in strays if stat_field(p, 3) == p)  # and their sessions
            for pid in strays:
                kill_tree(pid, timeout=STOP_TIMEOUT)

    @staticmethod
    def _prune_old_sessions(base: str) -> None:
        entries = sorted(
            (os.path.join(base, d) for d in os.listdir(base)),
            key=lambda p: os.path.getmtime(p) if os.path.exists(p) else 0,
        )
        for old in entries[:-KEEP_SESSION_DIRS]:
            shutil.rmtree(old, ignore_errors=True)

