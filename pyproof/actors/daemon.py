"""The daemon process: `python -m pyproof.actors.daemon --run-dir D --log-dir L`.

It starts a Thespian system bound to loopback, boots the root supervisor
(gateway + sessions), writes `ready.json` in the run directory, then waits
until told to stop: SIGTERM/SIGINT, or, with --watch-stdin, end of file on
stdin (the client that started it is gone). It then kills its whole process
tree: Thespian's shutdown does not reap orphans and can block on a hung actor.

This process never opens an nng socket itself, so the actors forked from it
may. It runs with umask 077 (so does every actor) and, on start, makes the
sandbox private (see pyproof.sandbox).

The garbage collector is off while the modules load (first thing: imports
make no garbage worth a collection, and each collection walks every object
loaded so far) and whatever is loaded is frozen before the first fork
(`gc.freeze`), so that a collection in a forked process leaves the shared
pages alone instead of writing to all of them (copy on write).

Every actor is forked from Thespian's admin process, itself forked from this
one: the actors' modules are loaded there, in the admin, while its logger
process starts (`_load_actor_modules`, system.start_system), not here first
and then the admin started: the two overlap, and this process, which never
runs an actor, never loads them.
"""

from __future__ import annotations

import gc

if __name__ == "__main__":  # the daemon process (not a module that imports our helpers)
    gc.disable()  # until the modules are loaded: see the module docstring

import argparse
import contextlib
import dataclasses
import getpass
import json
import os
import secrets
import signal
import sys
import threading
import time
import uuid

from pyproof import sandbox
from pyproof.actors import messages as m
from pyproof.actors.registry import keep_open, stop_registered
from pyproof.actors.survival import stop_sessions_too
from pyproof.errors import ProofError
from pyproof.hosts import config as cluster_options
from pyproof.supervision.process_tree import (
    children_of,
    is_alive,
    kill_session,
    kill_tree,
    start_time,
)
from pyproof.transport import auth, sealing
from pyproof.transport.tls import TLSSettings

BOOT_TIMEOUT = 60.0
ROOT = "pyproof.actors.root.Root"
SHUTDOWN_TIMEOUT = 3.0
ROOT_CHECK = 1.0  # seconds between checks that the root supervisor still runs


def _write_json(run_dir: str, name: str, info: dict) -> None:
    tmp = os.path.join(run_dir, f"{name}.tmp")
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, os.path.join(run_dir, name))


def _write_ready(run_dir: str, info: dict, ready_fd: int | None = None) -> None:
    _write_json(run_dir, "ready.json", info)
    if ready_fd is not None:
        # the lite client waits on this pipe (an event, not a poll of the file)
        with contextlib.suppress(OSError):
            os.write(ready_fd, b"\n")
        with contextlib.suppress(OSError):
            os.close(ready_fd)


def _token_key(run_dir: str) -> bytes:
    """The key that signs clients' login tokens: kept in the run directory (0600), so that a
    daemon restarted on the same port (which re-adopts the sessions) honours the tokens of
    their clients; a new one when the directory has none (`daemon stop` removes it)."""
    path = os.path.join(run_dir, "token.key")
    try:
        with open(path, "rb") as f:
            key = f.read()
        if len(key) == 32:
            return key
    except OSError:
        pass
    key = secrets.token_bytes(32)
    sandbox.create_private_file(path)
    with open(path, "wb") as f:
        f.write(key)
    return key


def control_pids(thespian_sessions: list[int]) -> dict:
    """What finds this daemon's control tree: its pid and the Thespian system's sessions,
    each with its start time (a recycled pid is never taken for ours)."""
    me = os.getpid()
    return {"pid": me, "start": start_time(me),
            "thespian_sessions": [[sid, start_time(sid)] for sid in thespian_sessions]}


def _preopen(spec: str | None, *, owner: str, secret: bytes, run_dir: str,
             log_dir: str) -> m.CreateSession | None:
    """The session `--open-session WORKERS:REQUEST_ID` asks for, opened while we boot.

    A lite client would otherwise ask for it only once the gateway runs and it
    has logged in; so its processes start side by side with the control tree's.
    """
    if not spec:
        return None
    workers, _, request_id = spec.partition(":")
    session_id = uuid.uuid4().hex[:12]
    return m.CreateSession(corr=f"preopen-{session_id}", session_id=session_id,
                           workers=int(workers), run_dir=run_dir, log_dir=log_dir, user=owner,
                           request_id=request_id,
                           data_key=sealing.data_key(secret, session_id))


PRIVATIZE_TIMEOUT = 60.0  # seconds the boot waits for `_privatize` at most (a stuck disk)


def _privatize(trees: list[str], failed: list[BaseException]) -> None:
    """Take group and other bits off what is under `trees` (sandbox.make_private_tree: an
    lstat per entry, more than the rest of our own start on a sandbox of 500 entries,
    and it grows with the user's files). Run on a thread once the admin is forked (no
    fork after: see registry.keep_open), side by side with the root's boot, and waited
    for before ready.json is written; what it raised is raised there (into `failed`)."""
    try:
        for top in trees:
            sandbox.make_private_tree(top)
    except BaseException as exc:  # noqa: BLE001 - raised again by main, as before
        failed.append(exc)


_held: list = []  # the daemon's own connection to the session registry (never used)


def _hold_registry(run_dir: str) -> None:
    """Keep the registry open in this process (see registry.keep_open): a failure (a full
    disk, say) only makes the registry's writes slower, the next one reports it."""
    with contextlib.suppress(Exception):
        _held.append(keep_open(run_dir))


def _load_actor_modules() -> None:
    """Run in Thespian's admin process before it creates the first actor (every actor is
    forked from it): the actors' modules are loaded, once, with the collector still off
    (inherited from us), moved to its permanent generation (never walked again, in the
    admin or in any actor forked from it), and collections resume."""
    from pyproof.actors.warmup import preload_actor_modules

    preload_actor_modules()
    gc.freeze()
    gc.enable()


def _load_actor_and_data_modules() -> None:
    """proofd's admin (`--preload-data`): the data modules too (numpy, uproot, awkward,
    hist; actors/warmup.py `preload_data_modules`), frozen with the rest: no session's
    master or worker then imports them or runs a warm-up."""
    from pyproof.actors.warmup import preload_data_modules

    preload_data_modules()
    _load_actor_modules()


def main(argv: list[str] | None = None) -> int:
    t_main = time.time()
    parser = argparse.ArgumentParser(prog="pyproof.actors.daemon")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--log-dir", required=True)
    parser.add_argument("--control", default=None, help="nng address of the control endpoint")
    parser.add_argument("--watch-stdin", action="store_true")
    parser.add_argument("--url", default=None, help="the URL clients use (for ready.json)")
    parser.add_argument("--secret-file", default=None,
                        help="the owner's secret (default: the sandbox's, created 0600)")
    parser.add_argument("--users-dir", default=None,
                        help="a directory of per-user secret files named after the users")
    parser.add_argument("--admins", default=None, help="comma-separated admin users")
    parser.add_argument("--max-sessions-per-user", type=int, default=0, help="0: no limit")
    parser.add_argument("--max-workers-per-user", type=int, default=0, help="0: no limit")
    cluster_options.add_arguments(parser)  # --cluster-secret, --name, --join, --hosts, ...
    parser.add_argument("--open-session", default=None, metavar="WORKERS:REQUEST_ID",
                        help="open a session for the owner while booting (lite: the client's "
                             "open_session with this request id gets it, ready sooner)")
    parser.add_argument("--preload-data", action="store_true",
                        help="load the data modules before the first actor (proofd: every "
                             "session then starts with them; lite starts sooner without)")
    parser.add_argument("--ready-fd", type=int, default=None,
                        help="a pipe to write one line to once ready.json is written")
    parser.add_argument("--session-orphan-grace", type=int, default=0,
                        help="seconds a session runs on with no daemon (0: the default, "
                             "600); then it stops itself")
    parser.add_argument("--session-idle-timeout", type=int, default=None,
                        help="close a session no client used for this many seconds while no "
                             "query ran (default 86400; 0: never)")
    parser.add_argument("--result-ttl", type=int, default=None,
                        help="the same for a session whose client went silent after "
                             "starting its last query: its result is kept this long "
                             "(default 86400; 0: the idle timeout applies)")
    args = parser.parse_args(argv)
    # private by default: whatever this tree writes (logs, sockets, catalog, the
    # selectors' output files) is the user's alone; and what an older version
    # left readable in the sandbox is made so too
    sandbox.private_umask()
    home = sandbox.make_private_dir(sandbox.sandbox_dir())
    for directory in (args.run_dir, args.log_dir):
        sandbox.make_private_dir(directory)
    # (the walk of what an older version left: once the admin is forked, see _privatize)
    trees = [home, *(d for d in (args.run_dir, args.log_dir) if not sandbox.is_inside(d, home))]
    control = args.control or f"ipc://{os.path.join(args.run_dir, 'control.ipc')}"
    # TLS (PYPROOF_TLS_CA/CERT/KEY): the control endpoint and the sessions' data
    # listeners for clients that dial in use it; lite (ipc) needs none
    tls = TLSSettings.from_env()
    if tls.enabled and control.startswith("tcp://"):
        control = tls.address(control)

    try:
        # a daemon that is no cluster member (lite) need not load the hosts' modules
        cluster = cluster_options.cluster_config(
            args, args.url, args.run_dir, args.log_dir) if (
            args.cluster_secret or args.join or args.hosts) else None
    except ProofError as exc:
        _write_ready(args.run_dir, {"error": str(exc)})
        return 1

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.watch_stdin:
        def watch() -> None:
            # os.read on the raw fd: a thread blocked in sys.stdin.read holds the
            # BufferedReader lock, and multiprocessing children (Thespian's admin)
            # deadlock closing the stdin they inherited
            while os.read(0, 1024):
                pass
            stop.set()
        threading.Thread(target=watch, daemon=True).start()

    # the root's boot message, made before the actor system starts: it is sent as soon as
    # the root exists (nothing here needs the system; a bad secret file stops us as before)
    corr = uuid.uuid4().hex
    limits = {"sessions_per_user": args.max_sessions_per_user,
              "workers_per_user": args.max_workers_per_user,
              "orphan_grace": args.session_orphan_grace}
    if args.session_idle_timeout is not None:
        limits["idle_timeout"] = args.session_idle_timeout
    if args.result_ttl is not None:
        limits["result_ttl"] = args.result_ttl
    owner = getpass.getuser()
    secret_file = args.secret_file or str(auth.default_secret_path())
    secret = auth.load_or_create_secret(secret_file)  # refuses a file others can read
    auth_config = {"token_key": _token_key(args.run_dir), "owner": owner,
                   "secret_file": secret_file, "users_dir": args.users_dir,
                   "admins": args.admins.split(",") if args.admins else [owner],
                   "server_id": args.url or control,
                   "tls": dataclasses.asdict(tls) if tls.enabled else None}
    preopen = _preopen(args.open_session, owner=owner, secret=secret,
                       run_dir=args.run_dir, log_dir=args.log_dir)
    boot = m.Boot(corr=corr, control_address=control, run_dir=args.run_dir,
                  log_dir=args.log_dir, daemon_pid=os.getpid(), limits=limits,
                  auth=auth_config, cluster=cluster, preopen=preopen)

    from pyproof.actors.system import start_system

    gc.freeze()  # what we loaded: shared with the admin (and every actor) untouched
    # the admin loads the actors' modules itself (see the module docstring)
    system, port = start_system(args.log_dir, admin_preload=_load_actor_and_data_modules
                                if args.preload_data else _load_actor_modules)
    gc.enable()
    t_system = time.time()
    # the admin double-forks into a session of its own: its first child's pid is
    # that session's id, the handle that finds every actor later; written at once so
    # that whoever stops or restarts us finds the control tree even if the boot fails
    thespian_sessions = children_of(os.getpid())
    requested = False
    try:  # whatever fails from here on (a full disk, say), the finally stops the system
        _write_json(args.run_dir, "pids.json", control_pids(thespian_sessions))
        privatize_failed: list[BaseException] = []
        privatizing = threading.Thread(target=_privatize, args=(trees, privatize_failed),
                                       daemon=True, name="pyproof-private")
        privatizing.start()
        # the session registry, held open for as long as we run (registry.keep_open says
        # why); on a thread: creating it syncs the disk, and the root's start need not wait
        threading.Thread(target=_hold_registry, args=(args.run_dir,), daemon=True,
                         name="pyproof-registry").start()
        root = system.createActor(ROOT)  # by name: loaded in the admin, not here
        reply = system.ask(root, boot, BOOT_TIMEOUT)
        if not isinstance(reply, m.Booted) or reply.corr != corr:
            error = getattr(reply, "error", None) or f"no answer within {BOOT_TIMEOUT:.0f} s"
            _write_ready(args.run_dir, {"error": f"daemon failed to boot: {error}"},
                         args.ready_fd)
            return 1
        privatizing.join(PRIVATIZE_TIMEOUT)  # (done long before, but ready means private)
        if privatize_failed:
            raise privatize_failed[0]
        # t_*: when main() ran, the actor system was up, the root had booted (bench.startup)
        _write_ready(args.run_dir, {"control": control, "pid": os.getpid(), "url": args.url,
                                    "thespian_port": port, "root_pid": reply.root_pid,
                                    "thespian_sessions": thespian_sessions,
                                    "t_main": t_main, "t_system": t_system,
                                    "t_booted": time.time()}, args.ready_fd)
        root_started = start_time(reply.root_pid) if reply.root_pid else None
        while not stop.wait(ROOT_CHECK):
            if root_started is not None and not (is_alive(reply.root_pid) and
                                                 start_time(reply.root_pid) == root_started):
                # the root supervisor gave up (or was killed): without it nothing restarts
                # anything; exit non-zero so that systemd (or whoever runs us) restarts proofd
                print(f"proofd: the root supervisor (pid {reply.root_pid}) is gone; exiting",
                      file=sys.stderr, flush=True)
                return 3
        requested = True
        return 0
    finally:
        done = threading.Event()

        def shutdown() -> None:
            try:
                system.shutdown()
            finally:
                done.set()

        threading.Thread(target=shutdown, daemon=True).start()
        done.wait(SHUTDOWN_TIMEOUT)
        # sessions lead process sessions of their own: they outlive a daemon that dies
        # (a restarted one re-adopts them); a daemon told to stop stops them too: those
        # under its actors, and those it adopted (found in the registry)
        for db in _held:  # the last connection to close then tidies the registry's files
            with contextlib.suppress(Exception):
                db.close()
        if requested:
            stop_sessions_too(thespian_sessions)
            stop_registered(args.run_dir)
        for sid in thespian_sessions:
            kill_session(sid)
        kill_tree(os.getpid(), include_root=False, spare_sessions=not requested)


if __name__ == "__main__":
    sys.exit(main())
