"""The per-user package cache of a host: `$PYPROOF_SANDBOX/packages/<user>/`.

    index.json           names -> versions (by content hash), sessions' enabled
                         packages, counters (bytes received, trees unpacked)
    lock                 flock: one writer at a time, across daemons and lite clusters
    versions/<hash>/     an unpacked package: this directory goes on sys.path
    uploads/<hash>.part  an upload in progress (chunks appended by offset)

Everything is private (dirs 0700, files 0600, via pyproof.sandbox). Every
change happens under the lock and the index is replaced atomically, so many
sessions uploading the same package at once unpack it once, and nobody ever
sees half a tree (unpacking writes a temporary directory renamed into place).
The cache is bounded (`$PYPROOF_PACKAGE_CACHE` bytes, default 2 GiB): past
it, the least recently used versions that no session enabled are evicted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

from pyproof.packages import zips
from pyproof.packages.errors import PackageError
from pyproof.sandbox import create_private_file, make_private_dir, open_private, sandbox_dir

DIGEST = re.compile(r"^[0-9a-f]{64}$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]*$")
LOCK_TIMEOUT = 10.0  # below the gateway's 20 s request timeout: it runs on the gateway


def cache_limit() -> int:
    return int(os.environ.get("PYPROOF_PACKAGE_CACHE") or 2 * 1024**3)


def check_digest(digest: Any) -> str:
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise PackageError(f"package version {digest!r} is not a content hash "
                           "(64 hex digits, as `proofctl packages ls` shows)")
    return digest


class PackageStore:
    """One user's packages on this host. Cheap to make: all state is on disk."""

    def __init__(self, user: str, root: str | None = None) -> None:
        if not _USER.match(user or ""):
            raise PackageError(f"user name {user!r} cannot name a package cache")
        self.user = user
        self.root = root or os.path.join(sandbox_dir(), "packages", user)

    # -- the index, under the lock ---------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        make_private_dir(self.root)
        lock_path = os.path.join(self.root, "lock")
        create_private_file(lock_path)
        with open(lock_path, "rb") as lock:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise PackageError(f"the package cache {self.root} stayed locked for "
                                           f"{LOCK_TIMEOUT:.0f} s; try again") from None
                    time.sleep(0.01)
            try:
                index = self._read_index()
                before = json.dumps(index, sort_keys=True)
                yield index
                if json.dumps(index, sort_keys=True) != before:
                    self._write_index(index)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_index(self) -> dict[str, Any]:
        path = os.path.join(self.root, "index.json")
        try:
            with open(path) as f:
                index = json.load(f)
        except FileNotFoundError:
            index = {}
        except (OSError, ValueError):
            index = {}  # damaged: start over (the trees on disk are re-registered on upload)
        index.setdefault("packages", {})
        index.setdefault("sessions", {})
        index.setdefault("stats", {"bytes_received": 0, "unpacked": 0})
        return index

    def _write_index(self, index: dict[str, Any]) -> None:
        tmp = os.path.join(self.root, f".index-{os.getpid()}.tmp")
        with open_private(tmp, "w") as f:
            json.dump(index, f)
        os.replace(tmp, os.path.join(self.root, "index.json"))

    def version_dir(self, digest: str) -> str:
        return os.path.join(self.root, "versions", check_digest(digest))

    def _part(self, digest: str) -> str:
        return os.path.join(self.root, "uploads", f"{check_digest(digest)}.part")

    # -- uploads ----------------------------------------------------------------------------
    def put(self, name: str, digest: str, size: int) -> dict[str, Any]:
        """Make `digest` the current version of `name` if this host has it (or all its bytes
        arrived); else say how many bytes of it arrived so far. Idempotent."""
        zips.check_name(name)
        check_digest(digest)
        if not 1 <= size <= zips.MAX_ZIP + 1:  # MAX_ZIP + 1: "have it?" (packages/remote.py)
            raise PackageError(f"package {name!r}: size {size} is not between 1 and "
                               f"{zips.MAX_ZIP} bytes")
        with self._locked() as index:
            if os.path.isdir(self.version_dir(digest)) and self._known(index, digest):
                self._register(index, name, digest, self._meta_of(index, digest))
                return {"have": True, "name": name, "digest": digest}
            part = self._part(digest)
            received = os.path.getsize(part) if os.path.exists(part) else 0
            if received < size or not os.path.exists(part):
                return {"have": False, "received": received}
            with open(part, "rb") as f:
                data = f.read()
            try:
                meta = self._unpack(index, name, digest, data)
            finally:
                os.unlink(part)
            self._register(index, name, digest, meta)
            self._evict(index)
            return {"have": True, "name": name, "digest": digest}

    def chunk(self, digest: str, offset: int, data: bytes, size: int) -> dict[str, Any]:
        """Append `data` at `offset` of an upload; a repeated chunk is acknowledged, not
        written twice. Answers how many bytes arrived."""
        check_digest(digest)
        if size > zips.MAX_ZIP:
            raise PackageError(f"package upload {digest[:16]}...: {size} bytes, over the cap "
                               f"of {zips.MAX_ZIP // 2**20} MiB ($PYPROOF_PACKAGE_MAX_SIZE)")
        with self._locked() as index:
            make_private_dir(os.path.join(self.root, "uploads"))
            part = self._part(digest)
            received = os.path.getsize(part) if os.path.exists(part) else 0
            if offset == received and received + len(data) <= size:
                with open_private(part, "ab") as f:
                    f.write(data)
                received += len(data)
                index["stats"]["bytes_received"] += len(data)
            elif offset > received or offset + len(data) > size:
                raise PackageError(f"package upload {digest[:16]}...: chunk at {offset} does "
                                   f"not follow the {received} bytes received; upload again")
            return {"received": received}

    def _unpack(self, index: dict[str, Any], name: str, digest: str,
                data: bytes) -> dict[str, Any]:
        where = f"package {name!r}"
        entries = zips.safe_entries(data, where=where)
        if not any(e.startswith((f"{name}/", f"{name}.py")) or ".dist-info/" in e
                   for e, _ in entries):
            raise PackageError(f"{where}: none of its files is under {name}/; build it with "
                               "session.upload_package(path) or `proofctl packages upload`")
        setup = zips.setup_file(entries, name)
        requires: list[str] = []
        if setup is not None:
            source = dict(entries)[setup].decode("utf-8", "replace")
            requires = zips.read_requires(source, f"package {name!r}, {setup}")
        if name in requires:
            raise PackageError(f"package {name!r} requires itself (in {setup})")
        if zips.unpack(data, self.version_dir(digest), digest=digest, where=where):
            index["stats"]["unpacked"] += 1
        return {"size": sum(len(d) for _, d in entries), "requires": requires, "setup": setup,
                "files": len(entries)}

    @staticmethod
    def _known(index: dict[str, Any], digest: str) -> bool:
        return any(digest in p["versions"] for p in index["packages"].values())

    @staticmethod
    def _meta_of(index: dict[str, Any], digest: str) -> dict[str, Any]:
        for p in index["packages"].values():
            if digest in p["versions"]:
                return dict(p["versions"][digest])
        raise AssertionError(digest)

    @staticmethod
    def _register(index: dict[str, Any], name: str, digest: str, meta: dict[str, Any]) -> None:
        now = time.time()
        entry = index["packages"].setdefault(name, {"latest": digest, "versions": {}})
        version = entry["versions"].setdefault(digest, {**meta, "uploaded": now})
        version["used"] = now
        entry["latest"] = digest

    def _evict(self, index: dict[str, Any]) -> None:
        """Least recently used versions no session enabled go, until under the cap."""
        versions = [(v.get("used", 0), name, digest, v["size"])
                    for name, p in index["packages"].items()
                    for digest, v in p["versions"].items()]
        total = sum(size for *_, size in versions)
        limit = cache_limit()
        if total <= limit:
            return
        wanted = {(n, d or index["packages"].get(n, {}).get("latest"))
                  for enabled in index["sessions"].values() for n, d in enabled.items()}
        for _, name, digest, size in sorted(versions):
            if total <= limit:
                break
            if (name, digest) in wanted:
                continue
            self._drop_version(index, name, digest)
            total -= size

    def _drop_version(self, index: dict[str, Any], name: str, digest: str) -> None:
        entry = index["packages"][name]
        entry["versions"].pop(digest, None)
        if not entry["versions"]:
            del index["packages"][name]
        elif entry["latest"] == digest:
            entry["latest"] = max(entry["versions"],
                                  key=lambda d: entry["versions"][d].get("uploaded", 0))
        if not self._known(index, digest):
            shutil.rmtree(self.version_dir(digest), ignore_errors=True)

    # -- sessions -----------------------------------------------------------------------------
    def enable(self, session: str, name: str, version: str | None = None) -> list[str]:
        """Enable `name` (pinned to `version`, else its latest) and what it requires, for the
        session's next queries; returns the names enabled, dependencies first."""
        with self._locked() as index:
            entry = index["packages"].get(name)
            if entry is None:
                raise PackageError(self._unknown(index, name))
            if version is not None:  # a hash, or a unique prefix of 8+ digits (as ls shows)
                found = [d for d in entry["versions"] if isinstance(version, str)
                         and re.match(r"^[0-9a-f]{8,64}$", version) and d.startswith(version)]
                if len(found) != 1:
                    known = ", ".join(d[:12] for d in entry["versions"])
                    raise PackageError(f"package {name!r} has no version {str(version)[:16]} on "
                                       f"this host (it has: {known}); give 8 or more hex "
                                       "digits of one, or upload that version first")
                version = found[0]
            enabled = dict(index["sessions"].get(session, {}))
            enabled[name] = version
            self._order(index, enabled)  # the whole set must hold together
            order = self._order(index, {name: version})
            for dep in order:
                enabled.setdefault(dep, None)
            index["sessions"][session] = enabled
            return order

    def disable(self, session: str, name: str) -> None:
        with self._locked() as index:
            enabled = dict(index["sessions"].get(session, {}))
            if name not in enabled:
                raise PackageError(f"package {name!r} is not enabled in session {session!r} "
                                   f"(enabled: {', '.join(sorted(enabled)) or 'none'})")
            del enabled[name]
            users = [n for n in enabled if name in self._version(index, n, enabled[n]).get(
                "requires", [])]
            if users:
                raise PackageError(f"package {name!r} is required by {', '.join(users)}, "
                                   "enabled in this session: disable those first")
            index["sessions"][session] = enabled

    def resolve(self, session: str) -> list[dict[str, Any]]:
        """The packages a query of `session` runs with, dependencies first, as the workers
        need them: name, version, the directory for sys.path and the setup hook."""
        with self._locked() as index:
            enabled = index["sessions"].get(session) or {}
            if not enabled:
                return []
            out = []
            now = time.time()
            for name in self._order(index, enabled):
                digest = enabled.get(name) or index["packages"][name]["latest"]
                meta = self._version(index, name, digest)
                path = self.version_dir(digest)
                if not os.path.isdir(path):
                    raise PackageError(f"package {name!r} version {digest[:12]} is gone from "
                                       f"this host's cache ({path}); upload it again")
                meta["used"] = now
                setup = meta.get("setup")
                out.append({"name": name, "version": digest, "path": path,
                            "setup": os.path.join(path, *setup.split("/")) if setup else None,
                            "requires": list(meta.get("requires", []))})
            return out

    def pin(self, session: str, versions: dict[str, str]) -> None:
        """Make `session` run exactly these versions (a remote host's part of a session: the
        master's host chose them); they are kept from eviction while pinned."""
        with self._locked() as index:
            for name, digest in versions.items():
                self._version(index, name, check_digest(digest))
            index["sessions"][session] = dict(versions)

    def unpin(self, session: str) -> None:
        with self._locked() as index:
            index["sessions"].pop(session, None)

    def pack(self, digest: str) -> bytes:
        """Version `digest` as its canonical zip again (for another host of the cluster),
        checked to hash to `digest` still."""
        with self._locked() as index:
            if not self._known(index, digest) or not os.path.isdir(self.version_dir(digest)):
                raise PackageError(f"package version {digest[:12]} is not on this host; "
                                   "upload it again")
            return zips.pack_tree(self.version_dir(digest), digest,
                                  where=f"package version {digest[:12]} on this host")

    def _version(self, index: dict[str, Any], name: str, digest: str | None) -> dict[str, Any]:
        entry = index["packages"].get(name)
        if entry is None:
            raise PackageError(self._unknown(index, name))
        digest = digest or entry["latest"]
        if digest not in entry["versions"]:
            raise PackageError(f"package {name!r} version {digest[:12]} is no longer on this "
                               "host; upload it again, or enable its latest version")
        return entry["versions"][digest]

    def _order(self, index: dict[str, Any], enabled: dict[str, str | None]) -> list[str]:
        """Enabled packages and what they require, each after its requirements; a cycle or a
        requirement never uploaded is refused."""
        order: list[str] = []
        state: dict[str, str] = {}

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == "done":
                return
            if state.get(name) == "visiting":
                cycle = " -> ".join([*path[path.index(name):], name])
                raise PackageError(f"package dependencies form a cycle: {cycle}; remove one "
                                   "of these from a `requires` list")
            if name not in index["packages"]:
                needed_by = f" (required by {path[-1]!r})" if path else ""
                raise PackageError(self._unknown(index, name) + needed_by)
            state[name] = "visiting"
            meta = self._version(index, name, enabled.get(name))
            for dep in meta.get("requires", []):
                visit(dep, [*path, name])
            state[name] = "done"
            order.append(name)

        for name in sorted(enabled):
            visit(name, [])
        return order

    @staticmethod
    def _unknown(index: dict[str, Any], name: str) -> str:
        known = ", ".join(sorted(index["packages"])) or "none"
        return (f"no package {name!r} on this host (uploaded: {known}); "
                "upload it with session.upload_package(path) or `proofctl packages upload`")

    # -- listing and cleaning -------------------------------------------------------------
    def listing(self, session: str | None = None) -> dict[str, Any]:
        with self._locked() as index:
            enabled = index["sessions"].get(session, {}) if session else {}
            packages = []
            for name, entry in sorted(index["packages"].items()):
                latest = entry["versions"][entry["latest"]]
                packages.append({
                    "name": name, "version": entry["latest"], "size": latest["size"],
                    "files": latest.get("files", 0), "requires": latest.get("requires", []),
                    "setup": bool(latest.get("setup")), "versions": sorted(entry["versions"]),
                    "enabled": name in enabled, "pinned": enabled.get(name)})
            return {"packages": packages, "stats": dict(index["stats"])}

    def remove(self, name: str) -> None:
        with self._locked() as index:
            if name not in index["packages"]:
                raise PackageError(self._unknown(index, name))
            for digest in list(index["packages"][name]["versions"]):
                self._drop_version(index, name, digest)
            for enabled in index["sessions"].values():
                enabled.pop(name, None)

    def clear(self) -> int:
        """Remove every package of this user on this host; returns how many."""
        with self._locked() as index:
            count = len(index["packages"])
            index["packages"] = {}
            index["sessions"] = {}
            for sub in ("versions", "uploads"):
                shutil.rmtree(os.path.join(self.root, sub), ignore_errors=True)
            return count
