"""The errors users see. Each says when it is raised and what to do."""

from __future__ import annotations

from typing import Any


class ProofError(Exception):
    """Base class of pyproof's errors."""


class ConnectError(ProofError):
    """The cluster could not be started or reached; the message says why."""


class QueryError(ProofError):
    """A query failed. `str(err)` says what and where in a few lines; `remote`
    holds the error as it happened (type, message, `remote.traceback`, and
    `remote.context`: file, tree, entry range, worker); `lineage` what was
    processed before it stopped. The session stays usable."""

    def __init__(self, message: str, *, remote: Any = None, lineage: dict | None = None) -> None:
        super().__init__(message)
        self.remote = remote
        self.lineage = lineage or {}


class InputError(ProofError, ValueError):
    """Arguments of `process` are invalid (dataset spec, inputs, ranges)."""


class BenchError(ProofError):
    """`proofctl bench` could not measure: bad arguments, or results that disagree
    (the message names the run and the outputs)."""


class QueryAborted(QueryError):
    """A query was aborted (`handle.abort()`, `proofctl queries abort`, a second Ctrl-C):
    its outputs were discarded. Run it again, or use `stop()` to keep what was done."""


class DirectRefused(QueryError):
    """A session's master refused a query's start or stop sent to it directly (not sealed
    with the session's key: another user's secret, or another session's; malformed). The
    message names the session, the master's address and the reason; check that the
    client's secret is the session owner's (`proofctl` uses the same one)."""
