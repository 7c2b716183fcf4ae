"""proofctl queries: list a daemon's queries (per session), stop or abort one.

    proofctl queries [SESSION]        state, entries and wall time of each query
    proofctl queries stop QUERY       finish what is in flight; the client gets a partial result
    proofctl queries abort QUERY      discard it; the client's result() raises QueryAborted
"""

from __future__ import annotations

import argparse
from typing import Any

from pyproof.cli import admin
from pyproof.errors import ProofError


class QueryNotFound(ProofError):
    """`proofctl queries stop|abort QUERY` names a query no session of yours knows."""


def session_queries(args: argparse.Namespace, session: str | None) -> list[dict[str, Any]]:
    """[{session, id, state, delivered, total, wall_time, ...}] of one session or all alive."""
    if session is not None:
        sessions = [session]
    else:
        sessions = [sid for sid, info in admin._sessions(args).items() if info.get("alive")]
    rows = []
    for sid in sessions:
        status = admin._call(args, "session_status", session=sid)
        for q in (status.get("master") or {}).get("queries") or []:
            rows.append({"session": sid, **q})
    return rows


def cmd_queries(args: argparse.Namespace) -> int:
    rest = list(args.rest)
    if rest and rest[0] in ("stop", "abort"):
        if len(rest) != 2:
            raise ProofError(f"usage: proofctl queries {rest[0]} QUERY")
        action, query = rest
        owner = next((r["session"] for r in session_queries(args, None) if r["id"] == query),
                     None)
        if owner is None:
            raise QueryNotFound(f"no session of yours knows query {query!r}; "
                                "list them with: proofctl queries")
        admin._call(args, "stop_query", {"query": query, "abort": action == "abort"},
                    session=owner)
        print(f"query {query} ({owner}): {'abort' if action == 'abort' else 'stop'} asked")
        return 0
    if len(rest) > 1:
        raise ProofError("usage: proofctl queries [SESSION] | stop QUERY | abort QUERY")

    def human(rows: list[dict[str, Any]]) -> None:
        print(f"{'session':14s} {'query':14s} {'state':10s} {'entries':>19s} {'wall':>8s}")
        for r in rows:
            entries = f"{r.get('delivered', 0)}/{r.get('total', 0)}"
            print(f"{r['session']:14s} {r['id']:14s} {r['state']:10s} {entries:>19s} "
                  f"{r.get('wall_time', 0.0):7.1f}s")

    return admin._out(args, session_queries(args, rest[0] if rest else None), human)


def add_command(admin_parser) -> None:
    """Called by cli/admin.py with its `admin(name, func, help)` helper."""
    admin_parser("queries", cmd_queries,
                 "list queries (of one SESSION, else all yours); stop|abort QUERY").add_argument(
        "rest", nargs="*", metavar="[SESSION] | stop QUERY | abort QUERY")
