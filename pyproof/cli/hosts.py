"""`proofctl hosts`: the hosts of a cluster as its master daemon knows them."""

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


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hosts", help="the cluster's hosts: name, address, state, cores, "
                                     "workers in use, last heard")
    add_url_argument(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(func=cmd_hosts)
