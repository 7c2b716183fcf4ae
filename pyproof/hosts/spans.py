"""The master's host's records of the sessions it spread over hosts, kept in the run directory.

The hosts actor (actors/hosts.py) is supervised: a crash restarts it from a clean
state. Its sessions spread over hosts must outlive that (the project's promise: a
crash restarts only the faulty actor), so it keeps one small file per such
session (`adoption.spanned_file`): who owns it, its master's actor address, its
workers on this host, and per other host its part (that host's announcement and
incarnation, its workers `{worker id: pid}`, the next worker index), the package
versions its queries granted. A restarted hosts actor reloads them (`readopt`:
those whose session supervisor still runs), answers the other hosts' checks that
those sessions run, tells each session supervisor where it is now (it answers
with its master), and asks each part's host which workers still run there
(`reconcile_part`): the master re-learns every worker there through the new
actor, and forgets those gone meanwhile, exactly once.

What each part was told (which queries) is not kept: telling a part a query again
is harmless (it keeps each query once), and a record saying "told" for a tell
that died with the actor in its link's queue would lose a query there.

A part's host may restart too (its daemon, or its hosts actor): the parts re-adopted
there are reported to the master's host (`reconcile_part` again), and a worker heard to
start under a new pid replaces the one before, whose exit may never have been heard
(`worker_event`).

The file is one of the session's files (`adoption.session_files`): removed when the
session ends. Pure `encode`/`decode`/`readopt`/`reconcile_part`/`worker_event` under thin
shells (`write`, `read_all`, `remove`) that never raise: like `last_words.py`, a new
file is written and renamed over the old one (a kill between leaves a `.tmp` file:
removed by the next `read_all`, or with the session's files, `adoption.leftovers`),
not fsynced (the reader is the next process on the same host).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import cbor2

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.hosts.registry import HostInfo, HostListError, check_name
from pyproof.logs import get_logger
from pyproof.supervision.adoption import SPANNED_PREFIX, SPANNED_SUFFIX, spanned_file
from pyproof.supervision.session_file import write_whole

MAX_BYTES = 1 << 20  # a record of 256 hosts' parts is some 60 KiB: larger is not ours
MAX_PARTS = 1024
MAX_WORKERS = 4096  # per part
MAX_VERSIONS = 1024
MAX_ID = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Part:
    """A session's part on another host, as the master's host knows it."""

    info: HostInfo  # that host's announcement (where to reach it)
    incarnation: str  # its daemon's boot id then: another one means its parts are gone
    workers: Mapping[str, int]  # worker id -> pid (on that host)
    next_index: int = 0  # the next worker added there is worker-N@host


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanRecord:
    """One session spread over hosts, as its file holds it."""

    session_id: str
    user: str
    request_id: str  # the client's open request: a retry after a restart gets this session
    master: tuple[str, int] | None  # the master's actor address (registry.address_to_wire)
    local: tuple[str, ...]  # its workers on the master's host
    plan: Mapping[str, int]  # host -> workers placed at the start
    parts: Mapping[str, Part]
    versions: tuple[str, ...] = ()  # package versions the other hosts may pull


@dataclass(frozen=True, slots=True, kw_only=True)
class PartReconciliation:
    """What the master must hear of a part after a restart of the hosts actor: every worker
    still running there joins again (the actor that speaks for them is a new one), and those
    the record names but that no longer run are lost (their work is re-queued)."""

    joined: tuple[tuple[str, int], ...]
    lost: tuple[tuple[str, int], ...]
    workers: dict[str, int]  # the part's workers from now on


def encode(record: SpanRecord) -> bytes:
    return cbor2.dumps({
        "session": record.session_id, "user": record.user, "request_id": record.request_id,
        "master": list(record.master) if record.master else None,
        "local": list(record.local), "plan": dict(record.plan),
        "parts": {host: {"info": part.info.to_wire(), "incarnation": part.incarnation,
                         "workers": dict(part.workers), "next": part.next_index}
                  for host, part in record.parts.items()},
        "versions": list(record.versions)})


def _text(value: Any, what: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or len(value) > MAX_ID or (not value and not empty):
        raise ValueError(f"{what} must be a string of at most {MAX_ID} characters")
    return value


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 31:
        raise ValueError(f"{what} must be a non-negative integer")
    return value


def _workers(value: Any, what: str) -> dict[str, int]:
    if not isinstance(value, dict) or len(value) > MAX_WORKERS:
        raise ValueError(f"{what} must map at most {MAX_WORKERS} worker ids to pids")
    return {_text(w, f"{what}'s worker id"): _count(pid, f"{what}'s pid")
            for w, pid in value.items()}


def decode(data: bytes) -> SpanRecord:
    """The record in `data`; ValueError naming what is wrong if it is not one."""
    try:
        wire = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several kinds for damaged input
        raise ValueError(f"not CBOR: {exc}") from None
    if not isinstance(wire, dict):
        raise ValueError("not a map")
    sid = _text(wire.get("session"), "'session'")
    master = wire.get("master")
    if master is not None and not (isinstance(master, list) and len(master) == 2 and isinstance(
            master[0], str) and isinstance(master[1], int)):
        raise ValueError("'master' must be an [ip, port] pair or null")
    local, plan = wire.get("local"), wire.get("plan")
    if not isinstance(local, list) or len(local) > MAX_WORKERS:
        raise ValueError(f"'local' must list at most {MAX_WORKERS} worker ids")
    if not isinstance(plan, dict) or len(plan) > MAX_PARTS + 1:
        raise ValueError("'plan' must map hosts to worker counts")
    parts_wire, versions = wire.get("parts"), wire.get("versions", [])
    if not isinstance(parts_wire, dict) or len(parts_wire) > MAX_PARTS:
        raise ValueError(f"'parts' must map at most {MAX_PARTS} hosts to their parts")
    if not isinstance(versions, list) or len(versions) > MAX_VERSIONS:
        raise ValueError(f"'versions' must list at most {MAX_VERSIONS} package versions")
    parts = {}
    try:
        for host, part in parts_wire.items():
            check_name(host)
            if not isinstance(part, dict):
                raise ValueError(f"part on {host!r} must be a map")
            info = HostInfo.from_wire(part.get("info"))
            if info.name != host:
                raise ValueError(f"part on {host!r} names host {info.name!r}")
            parts[host] = Part(info=info,
                               incarnation=_text(part.get("incarnation"), "'incarnation'"),
                               workers=_workers(part.get("workers"), f"part on {host!r}"),
                               next_index=_count(part.get("next", 0), "'next'"))
        plan = {check_name(h): _count(n, "a plan's count") for h, n in plan.items()}
    except HostListError as exc:
        raise ValueError(str(exc)) from None
    return SpanRecord(
        session_id=sid, user=_text(wire.get("user", ""), "'user'", empty=True),
        request_id=_text(wire.get("request_id", ""), "'request_id'", empty=True),
        master=(master[0], master[1]) if master else None,
        local=tuple(_text(w, "a local worker id") for w in local), plan=plan, parts=parts,
        versions=tuple(_text(v, "a package version") for v in versions))


def readopt(records: Iterable[SpanRecord], live: Mapping[str, Any]) -> tuple[
        list[SpanRecord], list[str]]:
    """Split reloaded records: those to re-adopt (their session's supervisor still runs: a
    key of `live`) and the session ids whose files are removed (the session ended while no
    hosts actor ran; its parts elsewhere close themselves when they hear it is gone)."""
    keep, drop = [], []
    for record in records:
        (keep if record.session_id in live else drop).append(record)
    return keep, [r.session_id for r in drop]


def reconcile_part(recorded: Mapping[str, int],
                   running: Mapping[str, int] | None) -> PartReconciliation:
    """A part's workers as recorded vs. as its host says they run now (`running`: None when
    that host has no part of the session any more: closed, or its daemon restarted)."""
    now = dict(running or {})
    lost = tuple(sorted((w, pid) for w, pid in recorded.items() if now.get(w) != pid))
    return PartReconciliation(joined=tuple(sorted(now.items())), lost=lost, workers=now)


def worker_event(recorded: Mapping[str, int], worker_id: str, pid: int,
                 alive: bool) -> PartReconciliation:
    """A part's workers once its host said worker `worker_id` (pid `pid`) started (`alive`)
    or exited. A start under a new pid replaces the worker before: that one is lost, even
    if its exit was never heard (it exited while that host's hosts actor was down, and the
    one restarted there knows only who runs now); else the master would wait for ever for
    the packets it held. An exit of a pid not recorded changes nothing."""
    now = dict(recorded)
    joined: tuple[tuple[str, int], ...] = ()
    if alive:
        now[worker_id] = pid
        joined = ((worker_id, pid),)
    elif now.get(worker_id) == pid:
        del now[worker_id]
    lost = tuple(sorted((w, p) for w, p in recorded.items() if now.get(w) != p))
    return PartReconciliation(joined=joined, lost=lost, workers=now)


# -- the shell: the files --------------------------------------------------------------------


def write(run_dir: str, record: SpanRecord, data: bytes | None = None) -> bool:
    """Write the record's file (a new file renamed over the old one); False if it failed
    (logged: the session runs on, only a restarted hosts actor would not know it)."""
    path = os.path.join(run_dir, spanned_file(record.session_id))
    data = encode(record) if data is None else data
    try:
        if len(data) > MAX_BYTES:
            raise ValueError(f"the record is larger than {MAX_BYTES} bytes")
        write_whole(path, data)
        return True
    except Exception as exc:  # a full disk, a removed run directory
        get_logger().error("spanned_not_written", path=path, error=repr(exc))
        return False


def remove(run_dir: str, session_id: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(run_dir, spanned_file(session_id)))


def read_all(run_dir: str) -> list[SpanRecord]:
    """Every record in `run_dir`; a damaged or foreign one is logged and removed, and so
    is what a write killed before its rename left (`NAME.PID.tmp`)."""
    try:
        names = sorted(os.listdir(run_dir))
    except OSError as exc:
        get_logger().error("spanned_unreadable", path=run_dir, error=str(exc))
        return []
    records = []
    for name in names:
        if name.startswith(SPANNED_PREFIX) and name.endswith(".tmp"):
            # a write the actor before was killed in (its only writer): never renamed
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(run_dir, name))
            continue
        if not (name.startswith(SPANNED_PREFIX) and name.endswith(SPANNED_SUFFIX)):
            continue
        path = os.path.join(run_dir, name)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                raise ValueError(f"larger than {MAX_BYTES} bytes")
            record = decode(data)
            if spanned_file(record.session_id) != name:
                raise ValueError(f"it holds session {record.session_id!r}")
            records.append(record)
        except (OSError, ValueError) as exc:
            get_logger().error("spanned_record_damaged", path=path, error=str(exc))
            with contextlib.suppress(OSError):
                os.unlink(path)
    return records
