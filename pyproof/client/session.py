"""`pyproof.connect(url)` and the `Session` users drive queries with.

Control requests go to the gateway as CBOR frames on nng req/rep. Query data
(progress, result, errors) comes back on a separate nng socket the client
listens on and the session's master dials (callback mode).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

import pynng

from pyproof.actors import protocol as p
from pyproof.client.control import ControlClient, RequestRefused
from pyproof.client.lite import LiteCluster, default_workers
from pyproof.client.progress import ProgressBar
from pyproof.client.result import Result, Stats
from pyproof.errors import ConnectError, InputError, QueryError
from pyproof.sandbox import make_private_paths
from pyproof.selector import Selector, load_selector, selector_code, selector_ref
from pyproof.transport import sealing
from pyproof.transport.codec import (
    DEFAULT_MAX_FRAME,
    EncodeError,
    ProtocolError,
    RemoteError,
    encode,
)
from pyproof.transport.frames import CHUNK, Reassembler, decode_frame
from pyproof.transport.tls import TLSSettings
from pyproof.transport.wire import RECV_LIMIT, recv_view

DATA_POLL_MS = 250
MASTER_SILENCE_CHECK = 3.0
DEFAULT_PACKET_TIMEOUT = 600.0
INPUTS_SLACK = 1024 * 1024  # the rest of a query's spec travels with its inputs
SLOW_ATTEMPT = 20.0  # the master sends progress every 0.25 s while a query runs


def connect(url: str = "lite://", *, workers: int | None = None, session: str | None = None,
            connection: str | None = None, data_port: int | None = None,
            timeout: float = 60.0) -> Session:
    """Open a session (or attach to an existing one with `session=ID`).

    `lite://?workers=N` starts a private local cluster; `proof://host:port?workers=N`
    reaches a running daemon (`proofctl daemon start`). `connection="callback"`
    (default): the session dials back a socket this client listens on;
    `connection="dial"`: this client dials the session (behind a firewall or NAT,
    or through an SSH tunnel: then give the forwarded `data_port`). Both can
    also be given in the URL: `?connection=dial&data_port=1094`.
    """
    if os.environ.get("PYPROOF_IN_WORKER"):
        raise ConnectError(
            "pyproof.connect() was called inside a worker, while it imported your selector's "
            "file: put the code that connects under `if __name__ == \"__main__\":`")
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    if workers is None and "workers" in query:
        try:
            workers = int(query["workers"][0])
        except ValueError:
            raise ConnectError(f"workers={query['workers'][0]!r} is not an integer") from None
    if session is None and "session" in query:
        session = query["session"][0]
    explicit = connection is not None or "connection" in query
    connection = connection or query.get("connection", ["callback"])[0]
    if connection not in ("callback", "dial"):
        raise ConnectError(f"connection={connection!r}: use 'callback' or 'dial'")
    if data_port is None and "data_port" in query:
        data_port = int(query["data_port"][0])
    dial = (connection == "dial", data_port)
    if parsed.scheme == "lite":
        cluster = LiteCluster(timeout=timeout)
        try:
            return Session(ControlClient(cluster.control_address, secret=cluster.secret),
                           workers=workers or
                           default_workers(), cluster=cluster,
                           data_address=f"ipc://{cluster.run_dir}/client-{uuid.uuid4().hex}.ipc")
        except BaseException:
            cluster.close()
            raise
    if parsed.scheme == "proof":
        if not parsed.hostname or not parsed.port:
            raise ConnectError(f"{url!r} must name a host and a port: proof://host:port")
        tls = TLSSettings.from_env()
        if tls.enabled and connection == "callback" and not tls.cert_file:
            # the session would dial us over TLS: we need a certificate to serve
            if explicit:
                raise ConnectError(
                    "with TLS, connection='callback' needs a client certificate signed by the "
                    "cluster's CA (set PYPROOF_TLS_CERT and PYPROOF_TLS_KEY); "
                    "or use connection='dial'")
            dial = (True, data_port)
        control = ControlClient(tls.address(f"tcp://{parsed.hostname}:{parsed.port}"))
        local = tls.address(f"tcp://{_local_address_towards(parsed.hostname)}:0")
        try:
            return Session(control, workers=workers or default_workers(), cluster=None,
                           data_address=local,
                           attach=session, dial=dial, dial_host=parsed.hostname)
        except BaseException:
            control.close()
            raise
    raise ConnectError(f"unsupported URL scheme {parsed.scheme!r} in {url!r} "
                       "(use lite:// or proof://host:port)")


def _local_address_towards(host: str) -> str:
    """The address of this machine on the route to `host`: where the master dials back."""
    import socket

    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET)
        target = infos[0][4][0]
    except OSError:
        return "127.0.0.1"
    if target.startswith("127."):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((target, 9))  # no packet is sent: this only picks the route
        return probe.getsockname()[0]


def is_catalog_spec(dataset: Any) -> bool:
    """A string naming cataloged datasets rather than files (`datasets.sources.names_catalog`).

    Files win: a URL, `file.root:tree` or an existing path is files; other
    valid dataset specs are catalog names.
    """
    from pyproof.datasets.sources import names_catalog

    return isinstance(dataset, str) and names_catalog(dataset)


def parse_dataset(dataset: Any) -> list[list[str | None]]:
    """Normalize `"f.root:tree"`, `{path: tree}` or a list of either to [[path, tree]...].

    Strings are split by `datasets.sources.split_file_tree`, the one parser of
    `file:tree` (shared with `Catalog.register` and `proofctl`).
    """
    from pyproof.datasets.sources import split_file_tree

    if isinstance(dataset, str | os.PathLike):
        path, tree = split_file_tree(os.fspath(dataset))
        return [[_absolute(path), tree]]
    if isinstance(dataset, dict):
        return [[_absolute(os.fspath(k)), v] for k, v in dataset.items()]
    if isinstance(dataset, list | tuple):
        out: list[list[str | None]] = []
        for item in dataset:
            out.extend(parse_dataset(item))
        return out
    raise InputError(f"dataset must be 'file.root:tree', {{path: tree}} or a list of them, "
                     f"not {type(dataset).__name__}")


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


class Session:
    """One user's master and workers. Use as a context manager, or call `close()`.

    `detach()` leaves the session running on the daemon (results of queries
    that finish meanwhile are kept); `connect(url, session=ID)` attaches again.
    """

    def __init__(self, control: ControlClient, *, workers: int, cluster: LiteCluster | None,
                 data_address: str, attach: str | None = None,
                 dial: tuple[bool, int | None] = (False, None), dial_host: str = "") -> None:
        self.cluster = cluster
        self.control = control
        self.data: pynng.Pull0 | None = None
        self.id: str | None = None
        if attach:
            reply = self._call("session_status", session=attach)
            self.id = attach
            self.workers: list[str] = list(reply.get("workers", []))
        else:
            reply = self._call("open_session", {"workers": workers})
            self.id = reply["session"]
            self.workers = reply["workers"]
        self.data = pynng.Pull0(recv_timeout=DATA_POLL_MS, recv_max_size=RECV_LIMIT)
        try:
            self._open_data(dial, dial_host, data_address)
        except BaseException:
            # the session exists on the daemon: do not leave it (and its workers) ownerless
            if not attach:
                with contextlib.suppress(Exception):
                    self._call("close_session", deadline=10.0)
            self.data.close()
            raise
        # data frames are sealed with a key both ends derive; it never travels
        self.data_key = sealing.data_key(control.secret(), self.id or "")
        self.rejected_frames = 0

    def _open_data(self, dial: tuple[bool, int | None], dial_host: str,
                   data_address: str) -> None:
        assert self.data is not None
        if dial[0]:  # client-dials: the session listens, we connect to it
            payload = {} if dial[1] is None else {"port": dial[1]}
            address = self._call("data_endpoint", payload)["address"]
            if dial_host and "tcp://" in address:
                # dial the host we reach the daemon by (through a tunnel: localhost)
                scheme = address.split("://", 1)[0]
                address = f"{scheme}://{dial_host}:{address.rsplit(':', 1)[1]}"
            if address.startswith("tls+"):
                self.data.tls_config = TLSSettings.from_env().dial_config(address)
            self.data.dial(address, block=True)
            self.data_address = ""  # queries tell the master: use the session's socket
        else:
            if data_address.startswith("tls+"):  # the master checks us against its CA
                self.data.tls_config = TLSSettings.from_env().server_config()
            self.data.listen(data_address)
            if data_address.startswith("ipc://"):  # made with this process's umask
                make_private_paths([data_address[len("ipc://"):]])
            self.data_address = _bound_address(self.data, data_address)

    @property
    def log_dir(self) -> str | None:
        return self.cluster.log_dir if self.cluster else None

    def _call(self, kind: str, payload: dict[str, Any] | None = None, *,
              session: str | None = None, deadline: float = 60.0) -> dict[str, Any]:
        # opening a session starts processes: give each attempt longer before a retry
        attempt = SLOW_ATTEMPT if kind == "open_session" else None
        try:
            return self.control.call(kind, payload, session=session or self.id,
                                     deadline=deadline, attempt=attempt)
        except RequestRefused as exc:
            raise QueryError(str(exc)) from None

    @property
    def datasets(self) -> Any:
        """The dataset catalog this session's master reads (lite, or a daemon on this host)."""
        from pyproof.datasets import Catalog
        from pyproof.sandbox import default_catalog_path

        return Catalog(default_catalog_path(), user=self.control.user)

    def verify_dataset(self, name: str, *, deep: bool = False, checksum: bool = True,
                       record: bool = True, catalog: Any = None,
                       timeout: float | None = None) -> Any:
        """Verify dataset `name` on this session's workers, one file per packet, in parallel.

        Each file is opened, its trees' entries counted, checksummed (unless
        `checksum=False`) and with `deep=True` every basket read, as
        `pyproof.datasets.verify_dataset` does locally; the results are recorded
        in `catalog` (default: `session.datasets`) unless `record=False`.
        Returns the `VerifySummary`. Raises DatasetError (unknown dataset, not
        yours to change) before any file is read, QueryError if the cluster fails.
        """
        from pyproof.datasets.cluster_verify import verify_on_cluster

        own = catalog is None
        catalog = self.datasets if own else catalog
        try:
            return verify_on_cluster(self, catalog, name, checksum=checksum, deep=deep,
                                     record=record, timeout=timeout)
        finally:
            if own:
                catalog.close()

    def status(self) -> dict[str, Any]:
        """The master's view of this session: workers, current query, kept results."""
        return self._call("session_status")

    def result(self, query_id: str) -> Result:
        """A kept result of an earlier query (e.g. one that finished while detached)."""
        reply = self._call("fetch_result", {"query": query_id})
        return self._result_from_frame(decode_frame(reply["frame"]), query_id)

    def process(self, selector: type[Selector] | str, dataset: Any = None, *,
                entries: int | None = None, first: int = 0, cycles: int | None = None,
                files: list[str] | None = None,
                inputs: dict[str, Any] | None = None, packetizer: str | None = None,
                packetizer_params: dict[str, Any] | None = None,
                on_missing: str = "fail", packet_timeout: float | None = DEFAULT_PACKET_TIMEOUT,
                output_dataset: str | None = None, output_overwrite: bool = False,
                progress: bool | None = None, timeout: float | None = None) -> Result:
        """Run `selector` over `dataset` (or `cycles` CPU iterations); return the merged Result.

        `dataset` is a file list (`"f.root:tree"`, `{path: tree}`, a list of them)
        or a cataloged dataset spec (`"name"`, `"/group/user/name#tree"`,
        `"a|b"` for the union, `"a,b"` for one after the other with
        `ctx.dataset` telling the selector which, `"name?entries=0-999"`).
        A string is files when it is a URL, `file.root:tree` or an existing path
        (files win), else a catalog spec if it is a valid one (`is_catalog_spec`).
        `on_missing="skip"` leaves out files that cannot be read and lists them
        in `result.missing` instead of failing the query. A selector that
        spends more than `packet_timeout` seconds in one packet fails the
        query, naming the packet, and its worker is restarted (None: no limit).

        `files=[path, ...]` runs a per-file task instead (verification, file
        generation): `process(range(0, 1), ctx)` once per file, with `ctx.file`
        set, the files not opened for it; the "file" packetizer by default.

        Files the selector writes at `ctx.output_file(name)` paths are kept
        exactly once (`result.output_files`); `output_dataset="name"` (or
        `"name#tree"`) registers them, verified, as a new dataset
        (`result.output_dataset`); `output_overwrite=True` replaces one that exists.

        Raises QueryError if the query fails (the error names file, entry range,
        worker and carries the remote traceback); the session stays usable.
        """
        ref = selector_ref(selector)
        # workers append these to their sys.path to import the selector by name
        search = [os.getcwd()] + [p for p in sys.path if p and os.path.isdir(p)]
        code = selector_code(ref, search)  # what runs: the disk as it is now, sent along
        cls = selector if isinstance(selector, type) else load_selector(ref, code)
        if sum(x is not None for x in (dataset, cycles, files)) != 1:
            raise InputError("give exactly one of dataset=, cycles= and files=")
        if files is not None and (isinstance(files, str) or not all(
                isinstance(f, str | os.PathLike) for f in files)):
            raise InputError("files= must be a list of paths or URLs")
        if output_dataset is not None:
            self._check_output_dataset(output_dataset)
        if on_missing not in ("fail", "skip"):
            raise InputError(f"on_missing={on_missing!r}: use 'fail' or 'skip'")
        named = dataset is not None and is_catalog_spec(dataset)
        if entries is not None and entries < 0 or first < 0:
            raise InputError("first= and entries= must not be negative")
        inputs = dict(inputs or {})
        try:
            size = len(encode(inputs))
        except EncodeError as exc:
            raise InputError(f"inputs cannot be sent to workers: {exc}") from None
        limit = min(DEFAULT_MAX_FRAME, self.control.max_frame) - INPUTS_SLACK
        if size > limit:
            raise InputError(
                f"inputs are {size / 1e6:.0f} MB, over what one request may carry "
                f"({limit / 1e6:.0f} MB, see $PYPROOF_MAX_FRAME): "
                "write large inputs to a file the workers read, and pass its path")
        spec: dict[str, Any] = {
            "selector": ref,
            "dataset": parse_dataset(dataset) if dataset is not None and not named else None,
            "dataset_spec": dataset if named else None,
            "on_missing": on_missing,
            "packet_timeout": packet_timeout,
            "files": None if files is None else [[_absolute(os.fspath(f)), None] for f in files],
            "output_dataset": output_dataset, "output_overwrite": bool(output_overwrite),
            "entries": entries, "first": first, "cycles": cycles, "inputs": inputs,
            "branches": list(cls.branches) if cls.branches is not None else None,
            "concatenate": list(cls.concatenate),
            "client_address": self.data_address,
            "packetizer": packetizer, "packetizer_params": packetizer_params,
            "sys_path": search,
            "selector_hash": code.digest, "selector_sources": code.to_wire(),
        }
        query_id = uuid.uuid4().hex[:12]
        bar = ProgressBar(enabled=progress)
        self._call("start_query", {"query": query_id, "spec": spec})
        self.last_query = query_id
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

    def _check_output_dataset(self, name: Any) -> None:
        from pyproof.datasets import DatasetError
        from pyproof.datasets.names import parse_ref

        if not isinstance(name, str):
            raise InputError(f"output_dataset must be a dataset name, not {type(name).__name__}")
        try:
            parse_ref(name, group="default", user=self.control.user)
        except DatasetError as exc:
            raise InputError(f"output_dataset={name!r}: {exc}") from None

    def _collect(self, query_id: str, bar: ProgressBar, timeout: float | None) -> Result:
        assert self.data is not None
        started = last_heard = time.monotonic()
        reassembler = Reassembler()
        while True:
            now = time.monotonic()
            if timeout is not None and now - started > timeout:
                self._call("stop_query", {"query": query_id})
                raise QueryError(f"query {query_id} did not finish within {timeout} s; stopped")
            if now - last_heard > MASTER_SILENCE_CHECK:
                kept = self._check_alive(query_id)
                if kept is not None:
                    return kept
                last_heard = time.monotonic()
            try:
                frame = decode_frame(sealing.unseal(self.data_key, recv_view(self.data)))
                if frame.type == CHUNK:  # a large result, in pieces
                    last_heard = time.monotonic()
                    frame = reassembler.add(frame)
                    if frame is None:
                        continue
            except pynng.Timeout:
                if self.cluster and self.cluster.process.poll() is not None:
                    raise QueryError("the lite daemon died during the query; "
                                     f"see the logs in {self.log_dir}") from None
                continue
            except (sealing.SealError, ProtocolError):
                self.rejected_frames += 1  # not from our master: drop it, keep listening
                continue
            payload = frame.payload
            if not isinstance(payload, dict) or payload.get("query") != query_id:
                continue  # a late message of an earlier query
            last_heard = time.monotonic()
            if frame.type == p.PROGRESS:
                bar.update(payload)
            elif frame.type in (p.RESULT, p.ERROR):
                result = self._result_from_frame(frame, query_id)
                bar.update({"entries": result.stats.entries, "total": result.stats.entries,
                            "bytes": result.stats.bytes_read, "elapsed": result.stats.wall_time,
                            "workers": {w: s.entries for w, s in result.stats.workers.items()}})
                return result

    def _check_alive(self, query_id: str) -> Result | None:
        """The data plane went quiet: ask the master (through the control plane) why.

        None: the query runs on. A Result: it finished but its frame did not reach
        us (a dropped connection): here it is, from the master's kept results.
        """
        try:
            status = self._call("session_status", deadline=30.0)
        except (QueryError, ConnectError) as exc:
            raise QueryError(f"query {query_id}: the session is gone ({exc})") from None
        query = (status.get("master") or {}).get("query") or {}
        if query.get("id") == query_id and query.get("state") in ("preparing", "running",
                                                                   "finishing"):
            return None
        if query_id in (status.get("master") or {}).get("results", []):
            return self.result(query_id)
        if query.get("id") == query_id and query.get("state") == "finished":
            return None  # its result is being encoded and sent: a large one takes seconds
        raise QueryError(f"query {query_id} was lost: the session's master was restarted "
                         "while it ran; run it again")

    @staticmethod
    def _result_from_frame(frame: Any, query_id: str) -> Result:
        payload = frame.payload
        if frame.type == p.ERROR:
            error = payload.get("error")
            raise QueryError(_describe(error), remote=error, lineage=payload.get("lineage"))
        return Result(query=query_id, outputs=payload["outputs"],
                      stats=Stats.from_wire(payload["stats"]), lineage=payload.get("lineage", {}))

    def detach(self) -> str:
        """Leave the session running on the daemon; returns its id for `connect(session=...)`."""
        session_id = self.id
        self._close_sockets()
        return session_id or ""

    def _close_sockets(self) -> None:
        if self.data is not None:
            self.data.close()
            self.data = None
        self.control.close()

    def close(self) -> None:
        """End the session on the daemon (for lite://, stop the whole local cluster)."""
        try:
            if self.id and self.data is not None:
                self._call("close_session", deadline=10.0)
        except Exception:
            pass  # the daemon is unreachable or being torn down: nothing more to ask
        finally:
            self._close_sockets()
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


def _bound_address(socket: pynng.Pull0, requested: str) -> str:
    """The address a listener really got (tcp port 0 means "any free port")."""
    import socket as _socket

    if not requested.startswith(("tcp://", "tls+tcp://")) or not requested.endswith(":0"):
        return requested
    # pynng reports the port in network byte order
    port = _socket.ntohs(socket.listeners[0].local_address.port)
    return requested[:-2] + f":{port}"
