"""proofctl's daemon and admin commands: daemon start/stop, status, tree, sessions, kill, reset.

Every command that talks to a daemon reaches the one named by `--url
proof://host:port`, else `$PYPROOF_URL`, else proof://127.0.0.1:1093, the way
`pyproof.connect` does: over TLS when `$PYPROOF_TLS_CA` is set.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

from pyproof.cli.daemon import DEFAULT_PORT, leave_cluster, start_daemon, stop_daemon
from pyproof.client.control import ControlClient, daemon_host_port, dial_daemon
from pyproof.errors import ConnectError, ProofError

DEFAULT_URL = f"proof://127.0.0.1:{DEFAULT_PORT}"
ENV_URL = "PYPROOF_URL"
CONNECT_WITHIN = 1.0  # a refused connection is said at once; a restarting gateway gets 1 s


def daemon_url(args: argparse.Namespace, default: str | None = DEFAULT_URL) -> str | None:
    """--url, else $PYPROOF_URL, else `default`: the one rule of every command."""
    return getattr(args, "url", None) or os.environ.get(ENV_URL) or default


def local_daemon_port(url: str, what: str) -> int:
    """The port of the daemon at `url`, which must run on this host; `what` says why
    (it reads the daemon's files, or signals its process)."""
    host, port = daemon_host_port(url)
    if not _is_this_host(host):
        raise ConnectError(f"{what}, and {host} is another host: run it there")
    return port


def _is_this_host(host: str) -> bool:
    """True if `host` names an address of this machine (we can bind to it)."""
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind((address[0], 0))
                return True
            except OSError:
                continue
    return False


def _control(args: argparse.Namespace) -> ControlClient:
    return dial_daemon(daemon_url(args), attempt_timeout=2.0, connect_within=CONNECT_WITHIN)


def _call(args: argparse.Namespace, kind: str, payload: dict | None = None, *,
          session: str | None = None) -> dict[str, Any]:
    control = _control(args)
    try:
        return control.call(kind, payload, session=session, deadline=args.timeout)
    finally:
        control.close()


def _out(args: argparse.Namespace, data: Any, human) -> int:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        human(data)
    return 0


def cmd_daemon_start(args: argparse.Namespace) -> int:
    info = start_daemon(args.port, host=args.host,
                        max_sessions_per_user=args.max_sessions_per_user,
                        max_workers_per_user=args.max_workers_per_user,
                        users_dir=args.users_dir, admins=args.admins,
                        session_orphan_grace=args.session_orphan_grace,
                        session_idle_timeout=args.session_idle_timeout,
                        result_ttl=args.result_ttl, foreground=args.foreground,
                        cluster_args=_cluster_args(args))
    print(f"proofd running at {info.url} (pid {info.pid}); logs in {info.log_dir}")
    return 0


def _cluster_args(args: argparse.Namespace) -> list[str]:
    """The cluster options given, as the daemon takes them (see pyproof/hosts/config.py)."""
    out: list[str] = []
    for option in ("cluster_secret", "name", "join", "hosts", "cores", "labels",
                   "heartbeat", "lost_after", "placement"):
        value = getattr(args, option, None)
        if value not in (None, ""):
            out += [f"--{option.replace('_', '-')}", str(value)]
    for path in getattr(args, "data_path", None) or []:
        out += ["--data-path", path]
    return out


def cmd_daemon_stop(args: argparse.Namespace) -> int:
    port = args.port or local_daemon_port(
        daemon_url(args), "proofctl daemon stop signals a daemon on this host")
    left = leave_cluster(port)  # a joined host leaves its cluster first (drained)
    if left.get("left"):
        drained = "drained" if left.get("drained") else "not all drained in time"
        print(f"left the cluster of {left['left']} ({len(left.get('workers') or [])} "
              f"workers {drained})")
    elif left.get("error"):
        print(f"warning: could not leave the cluster first: {left['error']}", file=sys.stderr)
    if stop_daemon(port):
        print(f"proofd on port {port} stopped")
        return 0
    raise ConnectError(f"no proofd started by proofctl runs on port {port} of this host")


def _sessions(args: argparse.Namespace) -> dict[str, Any]:
    return _call(args, "status").get("sessions", {})


def cmd_sessions(args: argparse.Namespace) -> int:
    def human(sessions: dict[str, Any]) -> None:
        print(f"{'session':14s} {'user':12s} {'workers':>7s} {'state':8s} created")
        for sid, info in sorted(sessions.items(), key=lambda kv: kv[1].get("created", 0)):
            state = "alive" if info.get("alive") else f"ended ({info.get('ended', '?')})"
            created = time.strftime("%H:%M:%S", time.localtime(info.get("created", 0)))
            print(f"{sid:14s} {info.get('user', ''):12s} {info.get('workers', 0):>7} "
                  f"{state:8s} {created}")
    return _out(args, _sessions(args), human)


def print_tree(tree: dict[str, Any]) -> None:
    def show(node: dict[str, Any], depth: int) -> None:
        name = node.get("id") or node.get("name")
        restarts = node.get("restarts", 0)
        state = node.get("state", "running")
        print(f"{'  ' * depth}{name}  pid={node.get('pid')}  {state}  restarts={restarts}")
        for child in node.get("children", []):
            sub = child.get("tree")
            if sub:
                show({**sub, "id": child["id"], "state": child["state"],
                      "restarts": child["restarts"]}, depth + 1)
            else:
                show(child, depth + 1)
    show(tree, 0)


def cmd_tree(args: argparse.Namespace) -> int:
    return _out(args, _call(args, "tree")["tree"], print_tree)


def count_restarts(tree: dict[str, Any]) -> int:
    total = 0
    for child in tree.get("children", []):
        total += child.get("restarts", 0) or 0
        if child.get("tree"):
            total += count_restarts(child["tree"])
    return total


def cmd_status(args: argparse.Namespace) -> int:
    tree = _call(args, "tree")["tree"]
    sessions = _sessions(args)
    alive = {s: i for s, i in sessions.items() if i.get("alive")}
    status = {"url": daemon_url(args),
              "root_pid": tree.get("pid"), "sessions": len(alive),
              "workers": sum(i.get("workers", 0) for i in alive.values()),
              "restarts": count_restarts(tree)}

    def human(s: dict[str, Any]) -> None:
        print(f"proofd at {s['url']}: root pid {s['root_pid']}, {s['sessions']} sessions, "
              f"{s['workers']} workers, {s['restarts']} restarts")
    return _out(args, status, human)


def cmd_kill(args: argparse.Namespace) -> int:
    # closing is idempotent on the daemon (a retried close must succeed), so an
    # unknown id is caught here, against the sessions this user may see
    sessions = _sessions(args)
    if args.session not in sessions:
        known = ", ".join(sorted(sessions)) or "none"
        raise ProofError(f"no session {args.session!r} at {daemon_url(args)} (yours: {known}); "
                         "`proofctl sessions` lists them")
    _call(args, "close_session", session=args.session)
    return _out(args, {"closed": [args.session]},
                lambda _: print(f"session {args.session} closed"))


def cmd_reset(args: argparse.Namespace) -> int:
    """PROOF's reset: close the user's sessions (--hard: every session)."""
    import getpass

    me = getpass.getuser()
    closed = []
    for sid, info in _sessions(args).items():
        if info.get("alive") and (args.hard or info.get("user") == me):
            _call(args, "close_session", session=sid)
            closed.append(sid)
    return _out(args, {"closed": closed}, lambda _: print(
        f"closed {len(closed)} session(s): {' '.join(closed)}".rstrip(": ")))


def add_url_argument(parser: argparse.ArgumentParser, default: str = DEFAULT_URL) -> None:
    parser.add_argument("--url", default=None,
                        help=f"the daemon, proof://host:port (default: ${ENV_URL}, else {default})")


def add_commands(sub: argparse._SubParsersAction) -> None:
    daemon = sub.add_parser("daemon", help="start or stop proofd, the shared daemon")
    dsub = daemon.add_subparsers(dest="daemon_command", required=True)
    start = dsub.add_parser("start", help="start proofd (in the background by default)")
    start.add_argument("--port", type=int, default=DEFAULT_PORT)
    start.add_argument("--host", default="127.0.0.1")
    start.add_argument("--foreground", action="store_true")
    start.add_argument("--max-sessions-per-user", type=int, default=0)
    start.add_argument("--max-workers-per-user", type=int, default=0)
    start.add_argument("--users-dir", default=None,
                       help="directory of per-user secret files (0600), named after the users")
    start.add_argument("--admins", default=None, help="comma-separated admin users")
    from pyproof.hosts.config import add_arguments as add_cluster_arguments

    add_cluster_arguments(start)  # --cluster-secret, --name, --join, --hosts, ...
    start.add_argument("--session-idle-timeout", type=int, default=None, metavar="SECONDS",
                       help="close sessions no client used for this long (default 86400; "
                            "0: never)")
    start.add_argument("--result-ttl", type=int, default=None, metavar="SECONDS",
                       help="keep a session whose client went silent mid-query (and its "
                            "result) this long (default 86400)")
    start.add_argument("--session-orphan-grace", type=int, default=0, metavar="SECONDS",
                       help="a session whose daemon is gone stops itself after this long "
                            "(default 600)")
    start.set_defaults(func=cmd_daemon_start)
    stop = dsub.add_parser("stop", help="stop proofd (on this host)")
    stop.add_argument("--port", type=int, default=None,
                      help=f"its port (default: the port of --url, ${ENV_URL}, or {DEFAULT_PORT})")
    add_url_argument(stop)
    stop.set_defaults(func=cmd_daemon_stop)

    def admin(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        add_url_argument(p)
        p.add_argument("--json", action="store_true")
        p.add_argument("--timeout", type=float, default=10.0)
        p.set_defaults(func=func)
        return p

    admin("status", cmd_status, "daemon, sessions, workers, restarts")
    admin("tree", cmd_tree, "the live supervision tree with pids and restart counts")
    admin("sessions", cmd_sessions, "list sessions")
    admin("kill", cmd_kill, "close a session").add_argument("session")
    from pyproof.cli.queries import add_command as add_queries

    add_queries(admin)
    admin("reset", cmd_reset, "close your sessions (--hard: all)").add_argument(
        "--hard", action="store_true")
