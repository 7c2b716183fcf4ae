"""Where a session's workers run: PROOF's scheduler options as a pure function.

``place(workers, hosts, ...)`` spreads ``workers`` over the alive hosts:

- ``round-robin`` (the default): one worker per host in turn, the master's
  host first, skipping hosts at their cap;
- ``least-loaded``: each worker to the host with the lowest share of its
  cores in use (workers of other sessions counted), ties to the master's host,
  then by name;
- an explicit list, ``"h2:4,h3:4"``: exactly that (``workers`` is its sum).

A host's cap is its cores (what it announced, ``--cores``) less the workers
it already runs. Asking for more than the caps allow is an error that says
how many fit.
"""

from __future__ import annotations

import re

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.errors import ProofError

STRATEGIES = ("round-robin", "least-loaded")
_EXPLICIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*:\d+(,[A-Za-z0-9][A-Za-z0-9_.-]*:\d+)*$")


class PlacementError(ProofError):
    """The workers asked for cannot be placed on the cluster's hosts; says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    name: str
    cores: int
    used: int = 0  # workers it runs already

    @property
    def free(self) -> int:
        return max(0, self.cores - self.used)


def is_explicit(text: str) -> bool:
    return bool(_EXPLICIT.match(text))


def parse_explicit(text: str) -> dict[str, int]:
    """``"h2:4,h3:4"`` -> ``{"h2": 4, "h3": 4}`` (PlacementError if malformed)."""
    if not is_explicit(text):
        raise PlacementError(f"workers={text!r}: use a number, or host:count pairs "
                             f"(e.g. h2:4,h3:4)")
    out: dict[str, int] = {}
    for item in text.split(","):
        name, _, count = item.partition(":")
        if name in out:
            raise PlacementError(f"workers={text!r} names host {name!r} twice")
        out[name] = int(count)
    return out


def place(workers: int, hosts: list[Candidate], *, local: str,
          strategy: str = "round-robin", explicit: dict[str, int] | None = None
          ) -> dict[str, int]:
    """{host: workers} over `hosts` (the alive ones; `local` is the master's host)."""
    by_name = {h.name: h for h in hosts}
    if explicit is not None:
        for name, count in explicit.items():
            if name not in by_name:
                known = ", ".join(sorted(by_name)) or "none"
                raise PlacementError(f"host {name!r} is not alive in this cluster (alive: "
                                     f"{known}); `proofctl hosts` lists them")
            if count > by_name[name].free:
                raise PlacementError(f"host {name!r} has room for {by_name[name].free} more "
                                     f"workers ({by_name[name].cores} cores, "
                                     f"{by_name[name].used} in use), not {count}")
        return {n: c for n, c in explicit.items() if c > 0}
    if strategy not in STRATEGIES:
        raise PlacementError(f"unknown placement {strategy!r}: use one of "
                             f"{', '.join(STRATEGIES)}")
    room = sum(h.free for h in hosts)
    if workers > room:
        raise PlacementError(f"{workers} workers do not fit on the cluster's "
                             f"{len(hosts)} alive hosts: room for {room} (one per core not "
                             f"in use)")
    order = sorted(hosts, key=lambda h: (h.name != local, h.name))
    given = {h.name: 0 for h in order}
    if strategy == "round-robin":
        while workers:
            for h in order:
                if workers and given[h.name] < h.free:
                    given[h.name] += 1
                    workers -= 1
    else:
        for _ in range(workers):
            best = min((h for h in order if given[h.name] < h.free),
                       key=lambda h: ((h.used + given[h.name]) / max(h.cores, 1),
                                      h.name != local, h.name))
            given[best.name] += 1
    return {n: c for n, c in given.items() if c}
