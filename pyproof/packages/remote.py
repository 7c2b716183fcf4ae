"""Packages on other hosts: a remote host's workers get the query's packages from the
master's host, by content hash, before their first packet.

The master's hosts actor sends, with each query it forwards to another host,
the packages the gateway resolved for it (`wire_list`: name, version hash,
what it requires, its setup hook): never paths, which are the master host's.
The other host looks each hash up in its own per-user store; a version it
lacks it pulls from the master's host over the authenticated cluster channel
(`ensure`): in chunks (`serve` answers one), the size capped as for an
upload, the bytes appended by offset as an upload's, and unpacked by the
same `PackageStore.put` that checks uploads (safe entries, size caps, the
content re-hashed against the version). Then the session's versions are
pinned there (under `SESSION@MASTER`, so a shared cache never mixes them
with the master's own enabled set) and resolved into local paths for its
workers. Idempotent: a host that has a version moves no bytes; concurrent
pulls of one version in a process wait for each other, and across processes
the store's lock and offsets make them unpack it once.

The master's host re-packs a version from its unpacked tree into the
canonical zip (the same bytes the client built) and checks that it still
hashes to the version; the last few are kept in memory for the next chunks.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from typing import Any

from pyproof.packages import zips
from pyproof.packages.errors import PackageError
from pyproof.packages.store import PackageStore, check_digest

CHUNK = 2 * 1024 * 1024
MAX_PACKAGES = 64  # in one query's list
_KEEP_PACKED = 4
_packed: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()
_packed_lock = threading.Lock()
_pulling: dict[tuple[str, str], threading.Lock] = {}
_pulling_lock = threading.Lock()


def wire_list(resolved: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[dict]:
    """A query's packages (`PackageStore.resolve` entries) as another host needs them."""
    out = []
    for p in resolved:
        setup = p.get("setup")
        out.append({"name": p["name"], "version": p["version"],
                    "requires": list(p.get("requires") or []),
                    "setup": os.path.relpath(setup, p["path"]).replace(os.sep, "/")
                    if setup else None})
    return out


def check_wire_list(value: Any) -> list[dict[str, Any]]:
    """The list a master sent, checked (PackageError says what is wrong)."""
    if not isinstance(value, list) or len(value) > MAX_PACKAGES:
        raise PackageError(f"a query's package list must be a list of at most {MAX_PACKAGES}")
    out = []
    for p in value:
        if not isinstance(p, dict):
            raise PackageError("a query's package entry must be a map")
        out.append({"name": zips.check_name(p.get("name")),
                    "version": check_digest(p.get("version"))})
    return out


def serve(store: PackageStore, digest: str, offset: int, length: int = CHUNK) -> dict[str, Any]:
    """One chunk of version `digest`'s canonical zip: {size, offset, data}."""
    check_digest(digest)
    key = (store.root, digest)
    with _packed_lock:
        data = _packed.get(key)
        if data is not None:
            _packed.move_to_end(key)
    if data is None:
        data = store.pack(digest)
        with _packed_lock:
            _packed[key] = data
            while len(_packed) > _KEEP_PACKED:
                _packed.popitem(last=False)
    if not isinstance(offset, int) or not 0 <= offset <= len(data):
        raise PackageError(f"package version {digest[:12]}: offset {offset!r} is outside its "
                           f"{len(data)} bytes")
    return {"size": len(data), "offset": offset,
            "data": data[offset:offset + max(1, min(length, CHUNK))]}


Fetch = Callable[[str, int], dict[str, Any]]
PULL_LOCK_TIMEOUT = 300.0  # seconds to wait for another thread's pull of the same version


def ensure(store: PackageStore, session: str, wanted: list[dict[str, Any]],
           fetch: Fetch, *, where: str = "the master's host") -> list[dict[str, Any]]:
    """Have every version of `wanted` here (pulling what is missing with `fetch(digest,
    offset)`), pin them for `session`, and return them resolved to local paths."""
    for p in wanted:
        name, digest = p["name"], p["version"]
        lock = _pull_lock(store.root, digest)
        if not lock.acquire(timeout=PULL_LOCK_TIMEOUT):  # another thread pulls it: bounded
            raise PackageError(f"package {name!r} ({digest[:12]}): another pull of it from "
                               f"{where} did not end within {PULL_LOCK_TIMEOUT:.0f} s")
        try:
            _pull(store, name, digest, fetch, where)
        finally:
            lock.release()
    store.pin(session, {p["name"]: p["version"] for p in wanted})
    return store.resolve(session)


def _pull_lock(root: str, digest: str) -> threading.Lock:
    with _pulling_lock:
        return _pulling.setdefault((root, digest), threading.Lock())


def _pull(store: PackageStore, name: str, digest: str, fetch: Fetch, where: str) -> None:
    state = store.put(name, digest, zips.MAX_ZIP + 1)  # have it? else how much arrived
    if state.get("have"):
        return
    received = int(state.get("received", 0))
    size: int | None = None
    for _ in range(zips.MAX_ZIP // CHUNK + 8):  # bounded: a peer that never ends is refused
        answer = fetch(digest, received)
        data, size = answer.get("data"), answer.get("size")
        if not isinstance(data, bytes) or not isinstance(size, int) or size < 0 or (
                answer.get("offset") != received):
            raise PackageError(f"package {name!r} version {digest[:12]}: malformed chunk "
                               f"from {where}")
        if size > zips.MAX_ZIP:
            raise PackageError(f"package {name!r} version {digest[:12]} from {where}: {size} "
                               f"bytes, over the cap of {zips.MAX_ZIP // 2**20} MiB "
                               "($PYPROOF_PACKAGE_MAX_SIZE)")
        if received >= size:
            break
        if not data:
            raise PackageError(f"package {name!r} version {digest[:12]}: {where} sent no "
                               f"bytes at {received} of {size}")
        received = int(store.chunk(digest, received, data, size)["received"])
        if received >= size:
            break
    else:
        raise PackageError(f"package {name!r} version {digest[:12]}: {where} sent too many "
                           "chunks")
    if not store.put(name, digest, size or 0).get("have"):
        raise PackageError(f"package {name!r} version {digest[:12]}: all bytes arrived from "
                           f"{where} but it was not unpacked; run the query again")
