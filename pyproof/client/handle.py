"""`QueryHandle`: a query submitted to a session, running or queued (`session.submit`).

A session's queries run one after another on its master; frames for all of
them come on the session's one data socket. Whoever waits (`result`, `done`)
reads that socket for every handle of the session (`Session._pump`), so no
thread of ours runs user callbacks: `on_feedback` and the progress bar run
in the thread that called `result()` (or `process`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyproof.actors import protocol as p
from pyproof.client.result import Result, Stats
from pyproof.errors import QueryAborted, QueryError
from pyproof.transport.codec import RemoteError

if TYPE_CHECKING:
    from pyproof.client.session import Session

ACTIVE_STATES = ("queued", "preparing", "running", "stopping", "finishing")


class QueryHandle:
    """One submitted query. `result()` waits for it; `stop()` keeps what was done
    (a partial Result, `result.stopped`); `abort()` discards it (`result()` raises
    QueryAborted). `progress()` is the latest progress the master sent
    (`entries`, `total`, `bytes`, `elapsed`, `workers`)."""

    def __init__(self, session: Session, query_id: str, *, selector: type | None = None,
                 on_feedback: Callable[[dict[str, Any]], Any] | None = None,
                 bar: Any = None, state: str = "queued", processor: Any = None) -> None:
        self.session = session
        self.query = query_id
        self.selector = selector
        self.on_feedback = on_feedback
        self.bar = bar  # a progress display (client/progress.py make_progress), or None
        self.processor = processor  # a coffea processor: its postprocess runs here
        self.state = state
        self._progress: dict[str, Any] = {}
        self._final: Any = None  # the RESULT or ERROR frame
        self._result: Result | None = None
        self.summary: dict[str, Any] = {}  # what the master said of it (session.queries())

    def __repr__(self) -> str:
        return f"<QueryHandle {self.query} {self.state}>"

    # -- asking ---------------------------------------------------------------------------
    def done(self) -> bool:
        """True once the query has ended (its result or error is here); never blocks long."""
        if self._final is None:
            self.session._pump(self, time.monotonic())
        return self._final is not None

    def progress(self) -> dict[str, Any]:
        self.done()
        return dict(self._progress)

    def result(self, timeout: float | None = None) -> Result:
        """The merged Result, waiting up to `timeout` seconds (None: as long as it runs).

        Raises QueryError if the query failed, QueryAborted if it was aborted, and
        QueryError ("did not finish within") on timeout: the query runs on; call
        `result()` again, `stop()` or `abort()`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._final is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise QueryError(f"query {self.query} did not finish within {timeout} s "
                                 "(it runs on: call result() again, stop() or abort())")
            self.session._pump(self, deadline)
        if self._result is None:
            self._result = self._from_frame(self._final)
        return self._result

    # -- ending ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Finish the packets in flight, merge what was done, end with a partial Result."""
        self.session._query_request("stop_query", {"query": self.query})

    def abort(self) -> None:
        """Discard the query at once; `result()` raises QueryAborted."""
        self.session._query_request("stop_query", {"query": self.query, "abort": True})

    # -- frames (called by Session._pump) -------------------------------------------------
    def _frame(self, frame: Any) -> None:
        payload = frame.payload
        if frame.type == p.PROGRESS:
            self._progress = dict(payload)
            self.state = "running"
            if self.bar is not None:
                self.bar.update(payload)
        elif frame.type == p.HEARTBEAT:  # alive, sending no progress (queued, looking up...)
            state = payload.get("state")
            if self._final is None and isinstance(state, str) and state in ACTIVE_STATES:
                self.state = state
        elif frame.type == "feedback":
            if self.on_feedback is not None:
                self.on_feedback(dict(payload.get("outputs") or {}))
        elif frame.type in (p.RESULT, p.ERROR) and self._final is None:
            # (once: a kept frame sent again may come after the live one, or before it)
            self._final = frame
            self.state = "finished" if frame.type == p.RESULT else "failed"

    def _from_frame(self, frame: Any) -> Result:
        payload = frame.payload
        if frame.type == p.ERROR:
            error = payload.get("error")
            cls = QueryAborted if isinstance(error, RemoteError) and \
                error.type == "QueryAborted" else QueryError
            if cls is QueryAborted:
                self.state = "aborted"
                raise QueryAborted(f"query {self.query} was aborted ({error.message}); its "
                                   "outputs were discarded", remote=error,
                                   lineage=payload.get("lineage"))
            raise QueryError(describe(error), remote=error, lineage=payload.get("lineage"))
        lineage = payload.get("lineage", {})
        if isinstance(lineage, dict) and lineage.get("output_file_hosts"):
            # the master's own files: its host's name (as for the stats' workers)
            lineage["output_file_hosts"] = [h or self.session.host
                                            for h in lineage["output_file_hosts"]]
        result = Result(query=self.query, outputs=payload["outputs"],
                        stats=Stats.from_wire(payload["stats"], host=self.session.host),
                        lineage=lineage)
        if result.stopped:
            self.state = "stopped"
        if self.bar is not None:
            # a stopped query (Ctrl-C) ends at what it did of the whole, saying so
            total = max(int((self._progress or {}).get("total", 0)), result.stats.entries) \
                if result.stopped else result.stats.entries
            self.bar.update({"entries": result.stats.entries, "total": total,
                             "stopped": result.stopped, "bytes": result.stats.bytes_read,
                             "elapsed": result.stats.wall_time,
                             "workers": {w: s.entries for w, s in result.stats.workers.items()}})
        returned = self.selector().terminate(result.outputs) if self.selector else None
        if self.processor is not None:
            returned = self.processor.finish(result.outputs)
        if returned is not None:
            result = Result(query=result.query, outputs=returned, stats=result.stats,
                            lineage=result.lineage)
        return result


def describe(error: Any) -> str:
    """QueryError's message: what and where, short; the traceback stays in err.remote."""
    if isinstance(error, RemoteError):
        if error.traceback:
            return f"{error.summary()}\n  (remote traceback: err.remote.traceback)"
        return error.summary()
    return f"query failed: {error!r}"
