"""The daemon's cluster options (``--cluster-secret``, ``--name``, ``--join``, ``--hosts``,
...) and the hosts actor's configuration made of them."""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import uuid
from typing import Any

from pyproof.hosts.placement import STRATEGIES
from pyproof.transport import auth
from pyproof.transport.tls import TLSSettings

HEARTBEAT = 1.0  # seconds between a joined host's heartbeats
LOST_AFTER = 4.0  # a host silent this long is lost


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster-secret", default=None,
                        help="the cluster's secret file (0600, the same on every host); "
                             "with it this daemon is a host of a cluster")
    parser.add_argument("--name", default=None, help="this host's name (default: hostname)")
    parser.add_argument("--join", default=None, metavar="proof://MASTER:P",
                        help="announce this host to the master daemon at this URL")
    parser.add_argument("--hosts", default=None, metavar="FILE",
                        help="a static list of hosts: 'NAME proof://ADDR:PORT [cores=N] "
                             "[labels=a,b] [data=/path]' per line")
    parser.add_argument("--cores", type=int, default=None,
                        help="cores this host offers (default: all)")
    parser.add_argument("--labels", default="", help="comma-separated labels of this host")
    parser.add_argument("--data-path", action="append", default=[],
                        help="a directory of data files this host holds (repeatable)")
    parser.add_argument("--placement", choices=STRATEGIES, default="round-robin",
                        help="how sessions' workers are spread over the hosts")
    parser.add_argument("--heartbeat", type=float, default=HEARTBEAT, help=argparse.SUPPRESS)
    parser.add_argument("--lost-after", type=float, default=LOST_AFTER, help=argparse.SUPPRESS)


def cluster_config(args: argparse.Namespace, url: str | None, run_dir: str = "",
                   log_dir: str = "") -> dict[str, Any] | None:
    """The hosts actor's config (messages.HostsStart), or None without --cluster-secret.

    Raises a ProofError (SecretFileError, HostListError) naming what is wrong."""
    # here, not at the top: a daemon that is no cluster member (lite) boots without it
    from pyproof.hosts.registry import HostInfo, HostListError, check_name, parse_hosts_file

    if not args.cluster_secret:
        for option in ("join", "hosts"):
            if getattr(args, option):
                raise HostListError(f"--{option} needs --cluster-secret FILE (the cluster's "
                                    f"shared secret, 0600, the same on every host)")
        return None
    auth.read_secret(args.cluster_secret)  # refuses a missing file or one others can read
    if not url or not url.startswith("proof://"):
        raise HostListError("a cluster daemon needs a TCP address others can reach: "
                            "start it with --host ADDR --port P")
    name = check_name(args.name or socket.gethostname().split(".")[0])
    info = HostInfo(name=name, address=url, cores=args.cores or os.cpu_count() or 1,
                    labels=tuple(x for x in args.labels.split(",") if x),
                    data_paths=tuple(os.path.abspath(p) for p in args.data_path))
    HostInfo.from_wire(info.to_wire())  # the same checks a master makes
    listed: list[dict[str, Any]] = []
    if args.hosts:
        try:
            with open(args.hosts, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise HostListError(f"cannot read --hosts file {args.hosts}: "
                                f"{exc.strerror}") from None
        listed = [h.to_wire() for h in parse_hosts_file(text, source=args.hosts)]
    tls = TLSSettings.from_env()
    return {"info": info.to_wire(), "secret_file": os.path.abspath(args.cluster_secret),
            "join": args.join, "listed": listed, "heartbeat": args.heartbeat,
            "lost_after": args.lost_after, "incarnation": uuid.uuid4().hex,
            "placement": args.placement, "run_dir": run_dir, "log_dir": log_dir,
            "tls": dataclasses.asdict(tls) if tls.enabled else None}
