"""`proofctl hosts` (the hosts of a cluster as its master daemon knows them) and
`proofctl workers ls|add|rm SESSION` (a cluster session's workers, on the fly)."""

from __future__ import annotations

import argparse
from typing import Any

from pyproof.cli.admin import _call, _out, add_url_argument


def cmd_hosts(args: argparse.Namespace) -> int:
    data = _call(args, "hosts")

    def human(d: dict[str, Any]) -> None:
        print(f"{'host':16s} {'address':28s} {'state':7s} {'cores':>5s} {'workers':>7s} "
              f"last heard")
        for h in d.get("hosts", []):
            heard = "never" if h.get("last_heard") is None else f"{h['last_heard']:.1f} s ago"
            me = " (this daemon)" if h["name"] == d.get("name") else ""
            print(f"{h['name']:16s} {h['address']:28s} {h['state']:7s} {h['cores']:>5} "
                  f"{h['workers']:>7} {heard}{me}")
        joined = d.get("joined")
        if joined:
            print(f"joined to {joined['master']}: {joined['state']}"
                  + (f" ({joined['error']})" if joined.get("error") else ""))
    return _out(args, data, human)


def cmd_workers(args: argparse.Namespace) -> int:
    """proofctl workers ls|add|rm SESSION: a session's workers, on the fly (in a cluster, on
    any of its hosts; else on the daemon's own)."""
    if args.op == "ls":
        data = _call(args, "list_workers", session=args.session)
    elif args.op == "add":
        data = _call(args, "add_workers", {"count": args.count, "host": args.host or ""},
                     session=args.session)
    else:
        payload = {"names": args.names} if args.names else {"count": args.count}
        data = _call(args, "remove_workers", payload, session=args.session)

    def human(d: dict[str, Any]) -> None:
        for key in ("added", "removed"):
            if key in d:
                print(f"{key} {len(d[key])} worker(s): {' '.join(d[key])}")
        for error in d.get("errors", []):
            print(f"not added: {error}")
        if "workers" in d and args.op == "ls":
            print(f"{'worker':24s} host")
            for w in d["workers"]:
                print(f"{w['name']:24s} {w.get('host') or '-'}")
    return _out(args, data, human)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hosts", help="the cluster's hosts: name, address, state, cores, "
                                     "workers in use, last heard")
    add_url_argument(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(func=cmd_hosts)
    w = sub.add_parser("workers", help="a cluster session's workers: ls, add N [--host H], "
                                       "rm N | rm --names W ...")
    w.add_argument("op", choices=("ls", "add", "rm"))
    w.add_argument("session")
    w.add_argument("count", type=int, nargs="?", default=1)
    w.add_argument("--host", default=None, help="add: on this host")
    w.add_argument("--names", nargs="+", default=None, help="rm: these workers")
    add_url_argument(w)
    w.add_argument("--json", action="store_true")
    w.add_argument("--timeout", type=float, default=60.0)
    w.set_defaults(func=cmd_workers)
