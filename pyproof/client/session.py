"""`pyproof.connect(url)` and the `Session` users drive queries with.

Control requests go to the gateway as CBOR frames on nng req/rep. Query data
(progress, result, errors) comes back on a separate nng socket the client
listens on and the session's master dials (callback mode).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

import pynng

from pyproof.actors import protocol as p
from pyproof.client.lite import LiteCluster, default_workers
from pyproof.client.progress import ProgressBar
from pyproof.client.result import Result, Stats
from pyproof.errors import ConnectError, InputError, QueryError
from pyproof.selector import Selector, load_selector, selector_ref
from pyproof.transport.codec import EncodeError, RemoteError, encode
from pyproof.transport.frames import decode_frame, encode_frame

CONTROL_TIMEOUT_MS = 90_000
DATA_POLL_MS = 500
MASTER_SILENCE_LIMIT = 60.0


def connect(url: str = "lite://", *, workers: int | None = None,
            timeout: float = 60.0) -> Session:
    """Open a session. `lite://?workers=N` starts a private local cluster."""
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    if workers is None and "workers" in query:
        try:
            workers = int(query["workers"][0])
        except ValueError:
            raise ConnectError(f"workers={query['workers'][0]!r} is not an integer") from None
    if parsed.scheme == "lite":
        cluster = LiteCluster(timeout=timeout)
        try:
            return Session(cluster.control_address, workers=workers or default_workers(),
                           cluster=cluster, run_dir=cluster.run_dir)
        except BaseException:
            cluster.close()
            raise
    raise ConnectError(f"unsupported URL scheme {parsed.scheme!r} in {url!r} (use lite://)")


def parse_dataset(dataset: Any) -> list[list[str | None]]:
    """Normalize `"f.root:tree"`, `{path: tree}` or a list of either to [[path, tree]...]."""
    if isinstance(dataset, str | os.PathLike):
        return [_parse_element(os.fspath(dataset))]
    if isinstance(dataset, dict):
        return [[_absolute(os.fspath(k)), v] for k, v in dataset.items()]
    if isinstance(dataset, list | tuple):
        out: list[list[str | None]] = []
        for item in dataset:
            out.extend(parse_dataset(item))
        return out
    raise InputError(f"dataset must be 'file.root:tree', {{path: tree}} or a list of them, "
                     f"not {type(dataset).__name__}")


def _parse_element(spec: str) -> list[str | None]:
    if ".root:" in spec:
        path, _, tree = spec.rpartition(".root:")
        return [_absolute(path + ".root"), tree or None]
    if "://" not in spec and ":" in spec:
        path, _, tree = spec.rpartition(":")
        return [_absolute(path), tree or None]
    return [_absolute(spec), None]


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


class Session:
    """One user's master and workers. Use as a context manager, or call `close()`."""

    def __init__(self, control_address: str, *, workers: int, cluster: LiteCluster | None,
                 run_dir: str) -> None:
        self.cluster = cluster
        self.control = pynng.Req0(recv_timeout=CONTROL_TIMEOUT_MS, send_timeout=10_000,
                                  resend_time=-1)
        self.control.dial(control_address, block=True)
        self.data: pynng.Pull0 | None = None
        reply = self._call("open_session", {"workers": workers})
        self.id: str = reply["session"]
        self.workers: list[str] = reply["workers"]
        self.data_address = f"ipc://{os.path.join(run_dir, f'client-{self.id}.ipc')}"
        self.data = pynng.Pull0(recv_timeout=DATA_POLL_MS)
        self.data.listen(self.data_address)

    @property
    def log_dir(self) -> str | None:
        return self.cluster.log_dir if self.cluster else None

    def _call(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.control.send(encode_frame(kind, payload, session=getattr(self, "id", None)))
        try:
            frame = decode_frame(self.control.recv())
        except pynng.Timeout:
            raise ConnectError(f"the daemon did not answer {kind!r} "
                               f"within {CONTROL_TIMEOUT_MS / 1000:.0f} s") from None
        if frame.type == "error":
            raise QueryError(str(frame.payload.get("message")))
        return frame.payload

    def process(self, selector: type[Selector] | str, dataset: Any = None, *,
                entries: int | None = None, first: int = 0, cycles: int | None = None,
                inputs: dict[str, Any] | None = None, packetizer: str | None = None,
                packetizer_params: dict[str, Any] | None = None,
                progress: bool | None = None, timeout: float | None = None) -> Result:
        """Run `selector` over `dataset` (or `cycles` CPU iterations); return the merged Result.

        Raises QueryError if the query fails (the error names file, entry range,
        worker and carries the remote traceback); the session stays usable.
        """
        ref = selector_ref(selector)
        cls = selector if isinstance(selector, type) else load_selector(ref)
        if (dataset is None) == (cycles is None):
            raise InputError("give exactly one of dataset= and cycles=")
        if entries is not None and entries < 0 or first < 0:
            raise InputError("first= and entries= must not be negative")
        inputs = dict(inputs or {})
        try:
            encode(inputs)
        except EncodeError as exc:
            raise InputError(f"inputs cannot be sent to workers: {exc}") from None
        spec: dict[str, Any] = {
            "selector": ref,
            "dataset": parse_dataset(dataset) if dataset is not None else None,
            "entries": entries, "first": first, "cycles": cycles, "inputs": inputs,
            "branches": list(cls.branches) if cls.branches is not None else None,
            "concatenate": list(cls.concatenate),
            "client_address": self.data_address,
            "packetizer": packetizer, "packetizer_params": packetizer_params,
            # workers append these to their sys.path to import the selector by name
            "sys_path": [os.getcwd()] + [p for p in sys.path if p and os.path.isdir(p)],
        }
        query_id = uuid.uuid4().hex[:12]
        bar = ProgressBar(enabled=progress)
        self._call("start_query", {"query": query_id, "spec": spec})
        try:
            result = self._collect(query_id, bar, timeout)
        except KeyboardInterrupt:
            self._call("stop_query", {"query": query_id})
            raise
        finally:
            bar.close()
        returned = cls().terminate(result.outputs)
        if returned is not None:
            result = Result(query=result.query, outputs=returned, stats=result.stats,
                            lineage=result.lineage)
        return result

    def _collect(self, query_id: str, bar: ProgressBar, timeout: float | None) -> Result:
        assert self.data is not None
        started = last_heard = time.monotonic()
        while True:
            now = time.monotonic()
            if timeout is not None and now - started > timeout:
                self._call("stop_query", {"query": query_id})
                raise QueryError(f"query {query_id} did not finish within {timeout} s; stopped")
            if now - last_heard > MASTER_SILENCE_LIMIT:
                raise QueryError(f"no word from the master for {MASTER_SILENCE_LIMIT:.0f} s "
                                 f"(query {query_id}); see the logs in {self.log_dir}")
            try:
                frame = decode_frame(self.data.recv())
            except pynng.Timeout:
                if self.cluster and self.cluster.process.poll() is not None:
                    raise QueryError("the lite daemon died during the query; "
                                     f"see the logs in {self.log_dir}") from None
                continue
            payload = frame.payload
            if not isinstance(payload, dict) or payload.get("query") != query_id:
                continue  # a late message of an earlier query
            last_heard = time.monotonic()
            if frame.type == p.PROGRESS:
                bar.update(payload)
            elif frame.type == p.RESULT:
                stats = Stats.from_wire(payload["stats"])
                bar.update({"entries": stats.entries, "total": stats.entries,
                            "bytes": stats.bytes_read, "elapsed": stats.wall_time,
                            "workers": {w: s.entries for w, s in stats.workers.items()}})
                return Result(query=query_id, outputs=payload["outputs"], stats=stats,
                              lineage=payload.get("lineage", {}))
            elif frame.type == p.ERROR:
                error = payload.get("error")
                raise QueryError(_describe(error), remote=error,
                                 lineage=payload.get("lineage"))

    def close(self) -> None:
        try:
            if getattr(self, "id", None):
                self._call("close_session", {})
        except Exception:
            pass  # the cluster is being torn down anyway
        finally:
            if self.data is not None:
                self.data.close()
            self.control.close()
            if self.cluster is not None:
                self.cluster.close()
                self.cluster = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _describe(error: Any) -> str:
    if isinstance(error, RemoteError):
        return str(error)
    return f"query failed: {error!r}"
