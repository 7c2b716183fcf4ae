"""The master daemon's host registry: a pure state machine (events in, changes out).

A host is *listed* (named in a ``--hosts`` file, never heard from), *alive*
(announced itself and was heard from within ``lost_after`` seconds) or *lost*
(silent longer than that). A host that announces itself again with another
``incarnation`` (its daemon restarted) is a new daemon: whatever ran there
is gone, so the shell is told (``HostRestarted``) as it is of a loss.

Time is passed in (``now``, seconds on any monotonic clock); nothing here
reads a clock or opens a socket, so every transition is testable as is.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import shlex
from collections.abc import Iterable
from typing import Any

from pyproof.errors import ProofError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MAX_LABELS = 32
MAX_PATHS = 64
MAX_TEXT = 1024


class HostListError(ProofError):
    """A ``--hosts`` file (or an announced host) is malformed; the message says where."""


class State(enum.Enum):
    LISTED = "listed"
    ALIVE = "alive"
    LOST = "lost"  # silent for longer than lost_after
    LEFT = "left"  # said goodbye (`proofctl daemon stop` on it): not a failure


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostInfo:
    """What a host says of itself when it announces (or what a ``--hosts`` line says)."""

    name: str
    address: str  # proof://ADDR:PORT of its daemon (its cluster endpoint is PORT + 1)
    cores: int = 0
    labels: tuple[str, ...] = ()
    data_paths: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "cores": self.cores,
                "labels": list(self.labels), "data_paths": list(self.data_paths)}

    @classmethod
    def from_wire(cls, value: Any) -> HostInfo:
        """Checks every field (a peer's announcement is input, not truth)."""
        if not isinstance(value, dict):
            raise HostListError("a host announcement must be a map")
        name, address = value.get("name"), value.get("address")
        cores = value.get("cores", 0)
        labels, paths = value.get("labels", []), value.get("data_paths", [])
        check_name(name)
        if not isinstance(address, str) or not address.startswith("proof://") or len(
                address) > MAX_TEXT:
            raise HostListError(f"host {name!r}: address must be proof://host:port, "
                                f"not {address!r}")
        if not isinstance(cores, int) or isinstance(cores, bool) or not 0 <= cores <= 1 << 16:
            raise HostListError(f"host {name!r}: cores must be an integer from 0 to 65536")
        for what, items, cap in (("labels", labels, MAX_LABELS),
                                 ("data_paths", paths, MAX_PATHS)):
            if not isinstance(items, list) or len(items) > cap or not all(
                    isinstance(i, str) and 0 < len(i) <= MAX_TEXT for i in items):
                raise HostListError(f"host {name!r}: {what} must be a list of at most "
                                    f"{cap} non-empty strings")
        return cls(name=name, address=address, cores=cores, labels=tuple(labels),
                   data_paths=tuple(paths))


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise HostListError(f"host name {name!r} is not valid: use letters, digits, '_', "
                            f"'.', '-' (at most 63, starting with a letter or digit)")
    return name


# -- events ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Announce:
    info: HostInfo
    incarnation: str  # the announcing daemon's boot id: a new one means it restarted
    now: float


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    name: str
    incarnation: str
    now: float
    workers: int = 0  # workers the host runs for sessions of this master


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Leave:
    name: str
    incarnation: str
    now: float


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    now: float


Event = Announce | Heartbeat | Leave | Tick


# -- changes (what the shell logs or acts on) ------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostJoined:
    name: str
    rejoined: bool  # it was known before (lost, or listed)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostRestarted:
    """It announced with a new incarnation: what ran there is gone."""

    name: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostLost:
    name: str
    reason: str  # "silent for N s"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostLeft:
    """It said goodbye: nothing new goes there; its workers drain (the shell's part)."""

    name: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AnnounceAgain:
    """Answer to a heartbeat from a host this registry does not know (the master
    restarted, or the host was forgotten): it must announce itself again."""

    name: str


Change = HostJoined | HostRestarted | HostLost | HostLeft | AnnounceAgain


@dataclasses.dataclass(slots=True)
class Host:
    info: HostInfo
    state: State
    incarnation: str = ""
    last_heard: float | None = None
    workers: int = 0
    joins: int = 0
    static: bool = False


class HostRegistry:
    """Hosts by name. ``handle(event)`` returns the changes it caused, in order."""

    def __init__(self, *, lost_after: float, listed: Iterable[HostInfo] = ()) -> None:
        if lost_after <= 0:
            raise ValueError("lost_after must be > 0")
        self.lost_after = lost_after
        self.hosts: dict[str, Host] = {}
        for info in listed:
            self.hosts[info.name] = Host(info=info, state=State.LISTED, static=True)

    def handle(self, event: Event) -> list[Change]:
        if isinstance(event, Announce):
            return self._announce(event)
        if isinstance(event, Heartbeat):
            host = self.hosts.get(event.name)
            if host is None or host.state is not State.ALIVE or (
                    host.incarnation != event.incarnation):
                return [AnnounceAgain(name=event.name)]
            host.last_heard = event.now
            host.workers = event.workers
            return []
        if isinstance(event, Leave):
            host = self.hosts.get(event.name)
            if host is None or host.incarnation != event.incarnation or (
                    host.state is not State.ALIVE):
                return []
            host.state, host.workers = State.LEFT, 0
            return [HostLeft(name=event.name)]
        return self._tick(event.now)

    def _announce(self, event: Announce) -> list[Change]:
        info = event.info
        host = self.hosts.get(info.name)
        if host is None:
            self.hosts[info.name] = Host(info=info, state=State.ALIVE,
                                         incarnation=event.incarnation, last_heard=event.now,
                                         joins=1)
            return [HostJoined(name=info.name, rejoined=False)]
        changes: list[Change] = []
        if host.state is State.ALIVE and host.incarnation == event.incarnation:
            host.info, host.last_heard = info, event.now  # a repeated announce: idempotent
            return changes
        if host.state is State.ALIVE:
            changes.append(HostRestarted(name=info.name))
        host.info, host.state, host.incarnation = info, State.ALIVE, event.incarnation
        host.last_heard, host.joins = event.now, host.joins + 1
        changes.append(HostJoined(name=info.name, rejoined=True))
        return changes

    def _tick(self, now: float) -> list[Change]:
        changes: list[Change] = []
        for name, host in self.hosts.items():
            if host.state is State.ALIVE and host.last_heard is not None and (
                    now - host.last_heard > self.lost_after):
                host.state = State.LOST
                host.workers = 0
                changes.append(HostLost(name=name, reason=f"silent for "
                                                          f"{now - host.last_heard:.1f} s"))
        return changes

    def alive(self) -> list[str]:
        return sorted(n for n, h in self.hosts.items() if h.state is State.ALIVE)

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """One row per host, as `proofctl hosts` shows them (sorted by name)."""
        rows = []
        for name in sorted(self.hosts):
            host = self.hosts[name]
            rows.append({**host.info.to_wire(), "state": host.state.value,
                         "workers": host.workers, "joins": host.joins, "static": host.static,
                         "last_heard": None if host.last_heard is None
                         else round(now - host.last_heard, 3)})
        return rows

    def validate(self) -> None:
        """Invariants (called by tests after every step)."""
        for name, host in self.hosts.items():
            assert host.info.name == name
            assert (host.state is State.LISTED) == (host.last_heard is None)
            assert host.state is State.LISTED or host.incarnation
            assert host.joins >= (0 if host.state is State.LISTED else 1)
            if host.state is not State.ALIVE:
                assert host.workers == 0


def parse_hosts_file(text: str, *, source: str = "--hosts file") -> list[HostInfo]:
    """PROOF's proof.conf, our way: one host a line, ``NAME proof://ADDR:PORT [cores=N]
    [labels=a,b] [data=/path,/other]``; ``#`` starts a comment."""
    hosts: dict[str, HostInfo] = {}
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{source}, line {number}"
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if len(words) < 2:
            raise HostListError(f"{where}: expected 'NAME proof://ADDR:PORT [cores=N] "
                                f"[labels=a,b] [data=/path]', got {line.strip()!r}")
        fields: dict[str, Any] = {"name": words[0], "address": words[1]}
        for word in words[2:]:
            key, _, value = word.partition("=")
            if key == "cores" and value.isdigit():
                fields["cores"] = int(value)
            elif key == "labels" and value:
                fields["labels"] = value.split(",")
            elif key == "data" and value:
                fields["data_paths"] = value.split(",")
            else:
                raise HostListError(f"{where}: unknown field {word!r} (known: cores=N, "
                                    f"labels=a,b, data=/path)")
        try:
            info = HostInfo.from_wire(fields)
        except HostListError as exc:
            raise HostListError(f"{where}: {exc}") from None
        if info.name in hosts:
            raise HostListError(f"{where}: host {info.name!r} is listed twice")
        hosts[info.name] = info
    return list(hosts.values())
