"""The client's side of packages: uploads (no bytes when the host has it), and the
`Session` methods `upload_package`, `enable_package`, `disable_package`, `packages`.

An upload asks the daemon first whether it has the package's content hash;
only if not are the bytes sent, in chunks under the frame cap
($PYPROOF_MAX_FRAME), each idempotent by its offset (a retried chunk is
acknowledged, not appended twice), and a last `package_put` unpacks them.
"""

from __future__ import annotations

import os
from typing import Any

from pyproof.client.control import ControlClient, RequestRefused
from pyproof.packages.errors import PackageError
from pyproof.packages.zips import Built, build_package

CHUNK = 4 * 1024 * 1024
UPLOAD_DEADLINE = 120.0


def call(control: ControlClient, kind: str, payload: dict[str, Any] | None = None, *,
         session: str | None = None, deadline: float = UPLOAD_DEADLINE) -> dict[str, Any]:
    try:
        return control.call(kind, payload, session=session, deadline=deadline)
    except RequestRefused as exc:
        raise PackageError(str(exc)) from None


def upload(control: ControlClient, built: Built, *, chunk: int | None = None) -> int:
    """Upload `built` unless the host has it; returns the bytes sent (0: it had it)."""
    size = len(built.data)
    head = {"name": built.name, "digest": built.digest, "size": size}
    reply = call(control, "package_put", head)
    sent = 0
    # each chunk travels in one frame, well under the cap of both ends
    step = max(1, min(chunk or CHUNK, control.max_frame // 4))
    while not reply.get("have"):
        offset = int(reply.get("received", 0))
        if offset >= size:
            reply = call(control, "package_put", head)
            if not reply.get("have"):
                raise PackageError(f"package {built.name!r}: the daemon has all {size} bytes "
                                   "but did not take them; upload again")
            break
        data = built.data[offset:offset + step]
        reply = call(control, "package_chunk", {"digest": built.digest, "offset": offset,
                                                "data": data, "size": size})
        sent += len(data)
    return sent


class PackagesMixin:
    """What `Session` offers for packages (needs `self.control` and `self.id`)."""

    control: ControlClient
    id: str | None
    package_bytes_sent: int = 0

    def upload_package(self, path: str | os.PathLike[str], name: str | None = None) -> str:
        """Upload the package at `path` (a directory, a .zip or a .whl) to the session's host
        and return its name. It is identified by the hash of its content: if the host
        has it already, no bytes move. A changed package under the same name becomes
        its latest version (for queries that start afterwards)."""
        built = build_package(path, name)
        self.package_bytes_sent += upload(self.control, built)
        return built.name

    def enable_package(self, name: str, version: str | None = None) -> list[str]:
        """Make package `name` importable on every worker of this session from the next
        query on, with the packages it `requires` (enabled first); `version` (a content
        hash, as `packages()` shows) pins one version, else the latest uploaded is used.
        Returns the packages enabled, dependencies first."""
        payload: dict[str, Any] = {"name": name}
        if version is not None:
            payload["version"] = version
        return call(self.control, "package_enable", payload, session=self.id)["enabled"]

    def disable_package(self, name: str) -> None:
        """Stop enabling `name` for this session's next queries."""
        call(self.control, "package_disable", {"name": name}, session=self.id)

    def packages(self) -> list[dict[str, Any]]:
        """The packages on the session's host: name, version (content hash), size,
        requires, versions kept, and whether (and how pinned) this session enables it."""
        return call(self.control, "package_list", {}, session=self.id)["packages"]

    def remove_package(self, name: str) -> None:
        """Remove every version of `name` from the host's cache (for every session)."""
        call(self.control, "package_remove", {"name": name}, session=self.id)
