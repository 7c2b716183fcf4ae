"""Locality: which host a worker runs on, and which host holds a query's file.

The adaptive packetizer gives a worker the files of its own host first; this
module names both sides with the cluster's host names (`--name`):

- a worker's host is the `@HOST` suffix of its name (remote workers are
  `worker-N@HOST`, with `#pid` after it on the data plane); a name without
  one is a worker of the master's own host;
- a file's host is the host whose announced `--data-path` root holds it (the
  deepest root, if several do), else the host its dataset record names when
  that is a host of the cluster (a record's default host, this machine's
  hostname, means the master's host), else whatever the record says (a
  storage node no worker runs on: no preference).

The hosts actor writes the layout (this host's name, every known host's data
roots) to `hosts-layout.json` in the daemon's run directory when it changes;
the master reads it when a query starts. Pure functions, except the two that
read and write that file.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Any
from urllib.parse import urlsplit

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply

LAYOUT_FILE = "hosts-layout.json"


@dataclass(frozen=True, slots=True)
class Layout:
    """This host's cluster name, its machine name, and each host's data roots."""

    host: str
    machine: str = ""
    roots: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"host": self.host, "machine": self.machine,
                "roots": {h: list(r) for h, r in self.roots.items()}}

    @classmethod
    def from_wire(cls, data: Any) -> Layout | None:
        if not isinstance(data, dict) or not isinstance(data.get("host"), str):
            return None
        roots = data.get("roots") if isinstance(data.get("roots"), dict) else {}
        return cls(host=data["host"], machine=str(data.get("machine") or ""),
                   roots={str(h): tuple(str(p) for p in r if isinstance(p, str))
                          for h, r in roots.items() if isinstance(r, list)})


def standalone() -> Layout:
    """A daemon outside a cluster: one host, named after the machine."""
    name = socket.gethostname()
    return Layout(host=name, machine=name)


def worker_host(worker: str, local_host: str) -> str:
    """'worker-3@h2#1234' -> 'h2'; 'worker-0#99' (the master's own) -> `local_host`."""
    name = worker.partition("#")[0]
    _, at, host = name.rpartition("@")
    return host if at and host else local_host


def _local_path(path: str) -> str | None:
    """A path on a filesystem (plain, or file://), else None (root://, https://, ...)."""
    if "://" not in path:
        return os.path.normpath(path)
    parts = urlsplit(path)
    return os.path.normpath(parts.path) if parts.scheme == "file" and parts.path else None


def element_host(path: str, record_host: str | None, layout: Layout) -> str | None:
    """The host holding `path` (see the module docstring for the order)."""
    local = _local_path(path)
    if local is not None and os.path.isabs(local):
        best: tuple[int, str] | None = None
        for host, roots in layout.roots.items():
            for root in roots:
                root = os.path.normpath(root)
                inside = local == root or local.startswith(root.rstrip(os.sep) + os.sep)
                if inside and (best is None or len(root) > best[0]):
                    best = (len(root), host)
        if best is not None:
            return best[1]
    if record_host is None:
        return None
    if record_host in layout.roots or record_host == layout.host:
        return record_host
    if layout.machine and record_host in (layout.machine, layout.machine.split(".")[0]):
        return layout.host  # the catalog's default: this machine, i.e. the master's host
    return record_host


def element_hosts(elements: Sequence[Any], layout: Layout) -> dict[int, str]:
    """Index -> host of each element that has one (for the adaptive packetizer)."""
    out: dict[int, str] = {}
    for i, e in enumerate(elements):
        host = element_host(e.path, e.host, layout)
        if host:
            out[i] = host
    return out


def write_layout(run_dir: str, layout: Layout) -> None:
    path = os.path.join(run_dir, LAYOUT_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(layout.to_wire(), f)
    os.replace(tmp, path)


def read_layout(run_dir: str | None) -> Layout:
    """The layout the hosts actor wrote, or this machine alone (no cluster, or not yet)."""
    if run_dir:
        try:
            with open(os.path.join(run_dir, LAYOUT_FILE)) as f:
                layout = Layout.from_wire(json.load(f))
            if layout is not None:
                return layout
        except (OSError, ValueError):
            pass
    return standalone()
