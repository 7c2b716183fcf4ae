"""The gateway's side of packages: `package_*` control requests, and a query's packages.

The gateway (in the daemon) only stores and unpacks zips after checking
them; it never imports or runs what is inside. The list of packages a query
runs with is resolved once, when the query starts, and travels in its spec:
every worker of that query (also one restarted mid-query) gets the same
versions; a package replaced meanwhile counts from the next query on.
"""

from __future__ import annotations

from typing import Any

from pyproof.packages.errors import PackageError

# the store (zips, their checks) is imported on first use: the gateway and the master import
# this module, and Thespian's admin loads theirs before every session's start

KINDS = ("package_put", "package_chunk", "package_list", "package_enable", "package_disable",
         "package_remove", "package_clear")


def _field(payload: dict[str, Any], name: str, kinds: tuple[type, ...]) -> Any:
    value = payload.get(name)
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        raise PackageError(f"package request field {name!r} has the wrong type "
                           f"({type(value).__name__})")
    return value


def handle_request(kind: str, payload: dict[str, Any], *, user: str,
                   session: str | None) -> tuple[str, dict[str, Any]]:
    """Answer one control request: ("ok", payload) or ("error", {"message": ...})."""
    try:
        return "ok", _handle(kind, payload, user, session)
    except PackageError as exc:
        return "error", {"message": str(exc)}
    except OSError as exc:  # a disk error or a case the checks missed: refused, gateway lives
        return "error", {"message": f"{kind} failed on the daemon: {exc}"}


def _handle(kind: str, payload: dict[str, Any], user: str,
            session: str | None) -> dict[str, Any]:
    from pyproof.packages.store import PackageStore, check_digest

    store = PackageStore(user)
    if kind == "package_put":
        return store.put(_field(payload, "name", (str,)), check_digest(payload.get("digest")),
                         _field(payload, "size", (int,)))
    if kind == "package_chunk":
        return store.chunk(check_digest(payload.get("digest")), _field(payload, "offset", (int,)),
                           _field(payload, "data", (bytes,)), _field(payload, "size", (int,)))
    if kind == "package_list":
        return store.listing(session)
    if kind == "package_remove":
        store.remove(_field(payload, "name", (str,)))
        return {}
    if kind == "package_clear":
        return {"removed": store.clear()}
    if not isinstance(session, str) or not session:
        raise PackageError(f"{kind!r} needs a session id (--session S)")
    if kind == "package_enable":
        version = payload.get("version")
        return {"enabled": store.enable(session, _field(payload, "name", (str,)),
                                        None if version is None else
                                        _field(payload, "version", (str,)))}
    if kind == "package_disable":
        store.disable(session, _field(payload, "name", (str,)))
        return {}
    raise PackageError(f"unknown package request {kind!r}")


def query_packages(user: str, session: str) -> list[dict[str, Any]]:
    """What a query starting now in `session` runs with (see `PackageStore.resolve`)."""
    from pyproof.packages.store import PackageStore

    return PackageStore(user).resolve(session)
