"""`pyproof.connect(url)` and the `Session` users drive queries with.

Control requests go to the gateway as CBOR frames on nng req/rep. Query data
(progress, result, errors) comes back on a separate nng socket the client
listens on and the session's master dials (callback mode).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import pynng

from pyproof.actors import kept
from pyproof.actors import protocol as wire_protocol
from pyproof.client.control import ControlClient, RequestRefused
from pyproof.client.direct import DirectRoute
from pyproof.client.handle import ACTIVE_STATES, QueryHandle
from pyproof.client.lite import LiteCluster
from pyproof.client.progress import make_progress
from pyproof.client.result import Result
from pyproof.datasets import records as _records  # noqa: F401  (registers its CBOR tag)
from pyproof.errors import ConnectError, InputError, QueryError
from pyproof.filesets import absolute
from pyproof.packages.client import PackagesMixin
from pyproof.query.spec import DEFAULT_MAX_OUTPUT_BYTES, QuerySpec
from pyproof.sandbox import make_private_paths
from pyproof.selector import Selector, SelectorError, load_selector
from pyproof.transport import sealing
from pyproof.transport.codec import (
    DEFAULT_MAX_FRAME,
    SUPPORTED_TYPES,
    EncodeError,
    ProtocolError,
    encode,
)
from pyproof.transport.frames import CHUNK, Reassembler, decode_frame
from pyproof.transport.tls import TLSSettings
from pyproof.transport.wire import RECV_LIMIT, recv_view

DATA_POLL_MS = 250
MASTER_SILENCE_CHECK = 3.0
# how long a daemon's session may not answer, once its data plane went quiet, before its
# queries fail (a lite cluster's death is seen at once: its process exits)
MASTER_LOST_WITHIN = 12.0
ENDED_STATES = ("finished", "stopped", "failed", "aborted")  # a query's final states
DEFAULT_PACKET_TIMEOUT = 600.0
INPUTS_SLACK = 1024 * 1024  # the rest of a query's spec travels with its inputs
SLOW_ATTEMPT = 20.0  # the master sends progress every 0.25 s while a query runs
CLOSE_WITHIN = 30.0  # a close waits this long for a restarting daemon
CLOSE_PAUSE, CLOSE_PAUSE_MAX = 0.2, 2.0  # between tries of a close while it is down


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
        return [[absolute(path), tree]]
    if isinstance(dataset, dict):
        return [[absolute(os.fspath(k)), v] for k, v in dataset.items()]
    if isinstance(dataset, list | tuple):
        out: list[list[str | None]] = []
        for item in dataset:
            out.extend(parse_dataset(item))
        return out
    raise InputError(f"dataset must be 'file.root:tree', {{path: tree}} or a list of them, "
                     f"not {type(dataset).__name__}")


def silent_query_verdict(query_id: str, master: dict[str, Any], *,
                         told_finished: bool) -> str:
    """What a client does about a query whose data plane went quiet (no frame for
    MASTER_SILENCE_CHECK s), from its master's status: the query's state if it is still
    active (queued, running...: frames were lost, listen on); "wait" if it ended (its
    final frame may be on its way); "fetch" if it ended and its kept final frame has not
    come on the data plane since a check found it ended (`told_finished`); "lost" if the
    master does not know it.

    A final frame (result or error) is kept before it is sent, and the master answers a
    status request only once it has sent it: a client that asked while the master was
    silent (merging a huge output, holding its lock) hears "finished" while the result
    waits on its own data plane. Fetching it then (the master sends the kept frame again
    on the data plane, `Session._ask_kept`) would send hundreds of MB twice.
    """
    queries = [q for q in master.get("queries") or [] if q.get("id") == query_id]
    for q in queries:
        if q.get("state") in ACTIVE_STATES:
            return str(q["state"])
    ended = any(q.get("state") in ENDED_STATES for q in queries)
    if query_id in master.get("results", []):  # (not listed: it ended long ago, fetch it)
        return "wait" if ended and not told_finished else "fetch"
    if any(q.get("state") == "finished" for q in queries):
        return "wait"  # its result is being encoded and sent: a large one takes seconds
    return "lost"


class Session(PackagesMixin):
    """One user's master and workers. Use as a context manager, or call `close()`.

    `detach()` leaves the session running on the daemon (results of queries
    that finish meanwhile are kept); `connect(url, session=ID)` attaches again.

    Once the daemon has let a query of this session through, the next ones start
    (and stop) by a direct route to the session's master, when this client can
    reach it (same host, no TLS); else, or while it does not answer, the long way
    through the daemon. `direct_route = False` always goes the long way.
    """

    direct_route = True

    def __init__(self, control: ControlClient, *, workers: int | str,
                 cluster: LiteCluster | None,
                 data_address: str, attach: str | None = None,
                 dial: tuple[bool, int | None] = (False, None), dial_host: str = "",
                 open_request: str | None = None) -> None:
        """`open_request`: the request id of the `open_session` (a lite daemon opened that
        session while it booted, and answers with it)."""
        self.cluster = cluster
        self.control = control
        self._host_lost = False  # the master's host stopped answering (see _check_alive)
        self.data: pynng.Pull0 | None = None
        self.id: str | None = None
        if attach:
            reply = self._call("session_status", session=attach)
            self.id = attach
            self.workers: list[str] = list(reply.get("workers", []))
        else:
            reply = self._call("open_session", {"workers": workers} if isinstance(
                workers, int) else {"workers": sum(int(pair.rpartition(":")[2]) for pair in
                                                   workers.split(",")), "placement": workers},
                request_id=open_request)
            self.id = reply["session"]
            self.workers = reply["workers"]
        self.host: str = reply.get("host", "")  # the master's host, in a cluster
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
        self._direct: DirectRoute | None = None  # see `_query_request`
        self._direct_unreachable: set[str] = set()  # offered addresses we could not dial
        self._handles: dict[str, QueryHandle] = {}
        self._heard: dict[str, float] = {}  # when a frame of each query last came
        # queries a silence check found finished: at the next one, fetch their kept result
        self._told_finished: set[str] = set()
        # kept final frames asked to be sent again on the data plane (`_ask_kept`):
        # nonce -> (query id, when to give up waiting, size)
        self._kept_asked: dict[str, tuple[str, float, int]] = {}
        self._reassembler = Reassembler()

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
              session: str | None = None, deadline: float = 60.0,
              request_id: str | None = None) -> dict[str, Any]:
        # opening a session or adding workers starts processes: give each attempt longer
        # before a retry (a retry is answered, never done twice: the same request id)
        attempt = SLOW_ATTEMPT if kind in ("open_session", "add_workers") else None
        try:
            return self.control.call(kind, payload, session=session or self.id,
                                     deadline=deadline, attempt=attempt, request_id=request_id)
        except RequestRefused as exc:
            raise QueryError(str(exc)) from None

    def _query_request(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A query's start or stop: by the direct route to the master when there is one
        (see client/direct.py), else (or when it does not answer) the long way, which may
        offer a direct route for the next ones. Both are keyed by the query id: whichever
        reached the master first, it acts once."""
        route = self._direct
        if route is not None:
            reply = route.call(kind, payload)
            if reply is not None:
                return reply
            self._forget_direct()  # the next long-way answer offers it again
        reply = self._call(kind, payload)
        offered = reply.get("direct")
        if (self._direct is None and isinstance(offered, str) and offered.startswith("ipc://")
                and self.direct_route and not self.control.address.startswith("tls+")
                and offered not in self._direct_unreachable and self.id):
            try:
                self._direct = DirectRoute(offered, self.id, self.data_key)
            except pynng.NNGException:  # not on this host, or the master has none
                self._direct_unreachable.add(offered)
        return reply

    def _forget_direct(self) -> None:
        if self._direct is not None:
            self._direct.close()
            self._direct = None

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
        from pyproof.client.verify import verify_on_cluster

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

    def add_workers(self, n: int, host: str | None = None) -> list[str]:
        """Start `n` more workers (on `host`, else spread over the cluster's hosts by the
        daemon's placement, the master's own host included while it has cores to spare;
        without a cluster, on the daemon's host, e.g. a lite cluster's); also mid-query:
        they get packets at once. Returns their names."""
        reply = self._call("add_workers", {"count": n, "host": host or ""})
        self.workers = [w["name"] for w in reply.get("workers", [])] or self.workers
        return list(reply["added"])

    def remove_workers(self, workers: int | list[str]) -> list[str]:
        """Stop workers (a number: the last added first; or their names), also mid-query:
        what they had not delivered goes back to the queue, counted exactly once. A session
        keeps at least one worker. Returns their names."""
        payload = ({"count": workers} if isinstance(workers, int)
                   else {"names": list(workers)})
        removed = list(self._call("remove_workers", payload)["removed"])
        self.workers = [w for w in self.workers if w not in removed]
        if removed:
            # the master hears of it from the session's supervisor, and a query started
            # straight at the master (the direct route) could overtake that and count on
            # a removed worker; a status request goes the supervisor's way, after it:
            # once answered, the master knows
            self._call("session_status")
        return removed

    def process(self, selector: type[Selector] | str | Any, dataset: Any = None, *,
                entries: int | None = None, first: int = 0, cycles: int | None = None,
                files: list[str] | None = None,
                inputs: dict[str, Any] | None = None, packetizer: str | None = None,
                packetizer_params: dict[str, Any] | None = None,
                on_missing: str = "fail", packet_timeout: float | None = DEFAULT_PACKET_TIMEOUT,
                max_output_bytes: int | None = DEFAULT_MAX_OUTPUT_BYTES,
                output_dataset: str | None = None, output_overwrite: bool = False,
                feedback: list[str] | tuple[str, ...] = (), feedback_interval: float = 1.0,
                on_feedback: Callable[[dict[str, Any]], Any] | None = None,
                progress: bool | str | None = None, timeout: float | None = None,
                ship: list[str] | None = None, schema: Any = None) -> Result:
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
        An output bigger than `max_output_bytes` (1 GiB by default; None: no cap)
        fails the query at once, naming the output, the worker and its size: raise the
        cap, or write big data to a file at `ctx.output_file(name)`.

        `files=[path, ...]` runs a per-file task instead (verification, file
        generation): `process(range(0, 1), ctx)` once per file, with `ctx.file`
        set, the files not opened for it; the "file" packetizer by default.

        Files the selector writes at `ctx.output_file(name)` paths are kept
        exactly once (`result.output_files`); `output_dataset="name"` (or
        `"name#tree"`) registers them, verified, as a new dataset
        (`result.output_dataset`); `output_overwrite=True` replaces one that exists.

        The selector's code travels with the query (its file, the modules of
        yours it imports, `ship=["helpers.py", "mylib/"]`, or a class defined
        in a notebook cell or on standard input); `"pkg.module:Class"` names one
        from an enabled package (see `upload_package`), which this client need
        not be able to import (then `terminate` does not run here).

        `progress=None` (default) shows live progress (events, rate, MB/s, ETA, each
        worker's share) in a Jupyter notebook, or on stderr when it is a terminal;
        True forces it on, False off, "terminal" or "notebook" picks the display.

        coffea habits: `selector` may be a coffea processor instance (pickled to
        this session's workers, its `postprocess` run here; `result.outputs` is
        what coffea's Runner returns), `dataset` a coffea fileset (`{name: [files]}`
        or `{name: {"files": {path: tree}, "metadata": {...}}}`: `ctx.dataset` is
        the name, `ctx.metadata` its metadata), and `schema="nanoaod"` (or a coffea
        schema class) gives NanoEvents records; see pyproof.coffea_processor.

        `feedback=["name", ...]` calls `on_feedback(snapshot)` (in this thread)
        every `feedback_interval` seconds while the query runs, with the named
        outputs as merged so far (PROOF's feedback histograms); snapshots only
        grow, and the final result is the same with or without them.

        `process` is `submit(...).result()`: it waits. Ctrl-C stops the query
        (the packets in flight finish; a partial Result, `result.stopped`, comes
        back); a second Ctrl-C aborts it. `timeout` aborts it after that many seconds.

        Raises QueryError if the query fails (the error names file, entry range,
        worker and carries the remote traceback); the session stays usable.
        """
        handle = self.submit(selector, dataset, entries=entries, first=first, cycles=cycles,
                             files=files, inputs=inputs, packetizer=packetizer,
                             packetizer_params=packetizer_params, on_missing=on_missing,
                             packet_timeout=packet_timeout,
                             max_output_bytes=max_output_bytes, output_dataset=output_dataset,
                             output_overwrite=output_overwrite, feedback=feedback,
                             feedback_interval=feedback_interval, on_feedback=on_feedback,
                             progress=progress, ship=ship, schema=schema)
        try:
            try:
                return handle.result(timeout)
            except KeyboardInterrupt:
                handle.stop()  # PROOF's Ctrl-C: keep what was done
                try:
                    return handle.result()
                except KeyboardInterrupt:
                    handle.abort()
                    # from None: the user pressed Ctrl-C; the socket internals it hit are noise
                    raise KeyboardInterrupt(
                        f"query {handle.query} aborted (Ctrl-C twice)") from None
            except QueryError as exc:
                if handle._final is not None or "did not finish within" not in str(exc):
                    raise
                handle.abort()
                raise QueryError(f"query {handle.query} did not finish within {timeout} s; "
                                 "aborted") from None
        finally:
            if handle.bar is not None:
                handle.bar.close()

    def submit(self, selector: type[Selector] | str | Any, dataset: Any = None, *,
               entries: int | None = None, first: int = 0, cycles: int | None = None,
               files: list[str] | None = None,
               inputs: dict[str, Any] | None = None, packetizer: str | None = None,
               packetizer_params: dict[str, Any] | None = None,
               on_missing: str = "fail", packet_timeout: float | None = DEFAULT_PACKET_TIMEOUT,
               max_output_bytes: int | None = DEFAULT_MAX_OUTPUT_BYTES,
               output_dataset: str | None = None, output_overwrite: bool = False,
               feedback: list[str] | tuple[str, ...] = (), feedback_interval: float = 1.0,
               on_feedback: Callable[[dict[str, Any]], Any] | None = None,
               progress: bool | str | None = False, ship: list[str] | None = None,
               schema: Any = None) -> QueryHandle:
        """Queue a query (same arguments as `process`) and return its `QueryHandle` at once.

        The session runs its queries one after another, in the order submitted;
        `handle.result()` waits for one, `session.queries()` lists them.
        """
        from pyproof.packages.interactive import code_for

        scikit = _scikit_query(selector, dataset, schema, inputs)  # coffea's forms, if any
        selector, dataset, inputs = scikit.selector, scikit.dataset, scikit.inputs
        # workers append these to their sys.path to import the selector by name
        search = [os.getcwd()] + [p for p in sys.path if p and os.path.isdir(p)]
        # what runs: the disk as it is now (or the interactive class), sent along
        ref, code = code_for(selector, search, ship)
        cls = selector if isinstance(selector, type) else self._client_class(ref, code)
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
            raise InputError(f"inputs cannot be sent to workers: {exc}; inputs may hold "
                             f"{SUPPORTED_TYPES}") from None
        limit = min(DEFAULT_MAX_FRAME, self.control.max_frame) - INPUTS_SLACK
        if size > limit:
            raise InputError(
                f"inputs are {size / 1e6:.0f} MB, over what one request may carry "
                f"({limit / 1e6:.0f} MB, see $PYPROOF_MAX_FRAME): "
                "write large inputs to a file the workers read, and pass its path")
        spec = QuerySpec(
            selector=ref,
            dataset=(tuple((path, tree) for path, tree in parse_dataset(dataset))
                     if dataset is not None and not named else None),
            dataset_spec=dataset if named else None,
            on_missing=on_missing,
            packet_timeout=packet_timeout, max_output_bytes=max_output_bytes,
            files=None if files is None else tuple((absolute(os.fspath(f)), None)
                                                    for f in files),
            output_dataset=output_dataset, output_overwrite=bool(output_overwrite),
            entries=entries, first=first, cycles=cycles, inputs=inputs,
            branches=tuple(cls.branches) if cls and cls.branches is not None else None,
            concatenate=tuple(cls.concatenate) if cls else (),
            client_address=self.data_address,
            packetizer=packetizer, packetizer_params=packetizer_params,
            sys_path=tuple(search),
            selector_hash=code.digest,
            selector_sources=tuple(tuple(s) for s in code.to_wire()),
            feedback=tuple(feedback), feedback_interval=float(feedback_interval),
            **scikit.spec,
        )
        query_id = uuid.uuid4().hex[:12]
        self._query_request("start_query", {"query": query_id, "spec": spec.to_wire()})
        self.last_query = query_id
        handle = QueryHandle(self, query_id, selector=cls, on_feedback=on_feedback,
                             bar=make_progress(progress) if progress is not False else None,
                             processor=scikit.processor)
        self._handles[query_id] = handle
        return handle

    def queries(self) -> list[QueryHandle]:
        """This session's queries the master remembers (running, queued, recent), oldest first.

        After `connect(url, session=ID)` these are the handles of queries started
        before: `handle.result()` waits for one still running and returns its result.
        """
        listed = (self.status().get("master") or {}).get("queries") or []
        handles = []
        for q in listed:
            handle = self._handles.get(q["id"])
            if handle is None:
                handle = self._handles[q["id"]] = QueryHandle(self, q["id"])
            if handle._final is None:
                handle.state = q["state"]
            handle.summary = q
            handles.append(handle)
        return handles

    def _client_class(self, ref: str, code: Any) -> type[Selector] | None:
        """The selector class named by `ref`, or None when only the workers can import it
        (a selector from a package enabled in this session)."""
        try:
            return load_selector(ref, code)
        except SelectorError:
            top = ref.partition(":")[0].partition(".")[0]
            if code.sources or not any(p["name"] == top and p["enabled"]
                                       for p in self.packages()):
                raise
            return None

    def _check_output_dataset(self, name: Any) -> None:
        from pyproof.datasets import DatasetError
        from pyproof.datasets.names import parse_ref

        if not isinstance(name, str):
            raise InputError(f"output_dataset must be a dataset name, not {type(name).__name__}")
        try:
            parse_ref(name, group="default", user=self.control.user)
        except DatasetError as exc:
            raise InputError(f"output_dataset={name!r}: {exc}") from None

    def _pump(self, waiting: QueryHandle, deadline: float | None) -> None:
        """Read data frames (for every handle of this session) until one comes or a poll ends.

        The master sends progress every 0.25 s while a query runs, and a heartbeat
        every second while it is queued, looking up or merging, so data-plane
        silence means trouble: after MASTER_SILENCE_CHECK s without a frame for
        `waiting`, ask the master (control plane) how the query stands: still
        queued or running (frames lost: a client that re-attached, a dropped
        callback), finished (its result may wait on the data plane already: read
        it; only if it still does not come, ask for the kept one, which the master
        sends again on the data plane: read here too, `kept/<nonce>` chunks), or lost.
        """
        assert self.data is not None
        now = time.monotonic()
        heard = self._heard.setdefault(waiting.query, now)
        if now - heard > MASTER_SILENCE_CHECK:
            self._check_alive(waiting)
            self._heard[waiting.query] = time.monotonic()
            if waiting._final is not None:
                return
        if deadline is not None and deadline <= now:  # done(): do not wait
            self.data.recv_timeout = 1
        else:
            self.data.recv_timeout = DATA_POLL_MS
        nonce = None
        try:
            frame = decode_frame(sealing.unseal(self.data_key, recv_view(self.data)))
            if frame.type == CHUNK:  # a large result, in pieces (or a kept one, resent)
                self._heard[waiting.query] = time.monotonic()
                stream = frame.payload.get("stream") if isinstance(frame.payload, dict) \
                    else None
                nonce = kept.kept_nonce(stream)
                frame = self._reassembler.add(frame)
                if frame is None:
                    return
        except pynng.Timeout:
            if self.cluster and self.cluster.process.poll() is not None:
                raise QueryError("the lite daemon died during the query; "
                                 f"see the logs in {self.log_dir}") from None
            return
        except (sealing.SealError, ProtocolError):
            self.rejected_frames += 1  # not from our master: drop it, keep listening
            return
        payload = frame.payload
        handle = self._handles.get(payload.get("query")) if isinstance(payload, dict) else None
        if nonce is not None:  # a kept final frame sent again: taken only if we asked for it
            asked = self._kept_asked.pop(nonce, None)
            if asked is None or handle is None or asked[0] != handle.query or \
                    frame.type not in (wire_protocol.RESULT, wire_protocol.ERROR):
                return  # one we gave up on, or not ours: never a query's (second) outcome
        if handle is None:
            return  # a late message of a query nobody waits for
        self._heard[handle.query] = time.monotonic()
        handle._frame(frame)  # a second final frame (live and kept both came) is dropped
        if handle._final is not None:
            self._told_finished.discard(handle.query)

    def _check_alive(self, handle: QueryHandle) -> None:
        """The data plane went quiet for `handle`: ask the master (control plane) why."""
        query_id = handle.query
        asked = self._kept_wait(query_id)
        if asked is not None:  # its kept frame is on its way on the data plane
            if time.monotonic() < asked[1]:
                return
            self._kept_late(query_id, asked)
        try:
            status = self._call("session_status", deadline=30.0 if self.cluster else
                                MASTER_LOST_WITHIN)
        except ConnectError as exc:
            url = self.control.url.split("?", 1)[0]
            if self.host:
                # no answer at all: the master's host died or is cut off (the session's
                # parts on other hosts stop once they stop hearing it)
                self._host_lost = True
                raise QueryError(
                    f"query {query_id}: the session's master host {self.host!r} ({url}) does "
                    f"not answer: it died or is cut off from this client; the session and "
                    f"its queries are lost: open a new session once the host is back "
                    f"({exc})") from None
            # one daemon: the session may well run on (a daemon started again re-adopts it)
            raise QueryError(f"query {query_id}: its data plane went quiet and its daemon "
                             f"at {url} cannot be asked how it stands ({exc})") from None
        except QueryError as exc:
            raise QueryError(f"query {query_id}: the session is gone ({exc})") from None
        master = status.get("master") or {}
        verdict = silent_query_verdict(query_id, master,
                                       told_finished=query_id in self._told_finished)
        if verdict in ACTIVE_STATES:
            handle.state = verdict
        elif verdict == "wait":
            self._told_finished.add(query_id)
        elif verdict == "fetch":  # sent again on the data plane; `_pump` reads it
            self._told_finished.discard(query_id)
            self._ask_kept(handle)
        else:
            raise QueryError(f"query {query_id} was lost: the session's master was restarted "
                             "while it ran; run it again")

    def result(self, query_id: str) -> Result:
        """A kept result of an earlier query (e.g. one that finished while detached).

        The session's master keeps the final frames (result or error) of its last queries;
        asked for one, it sends it again on this client's data connection, as a live
        result comes (so a large one arrives as fast). Raises QueryError if the session
        keeps no result of `query_id`, or if it does not arrive within `kept.within(size)`
        seconds; QueryError/QueryAborted if the query failed or was aborted.
        """
        handle = self._handles.get(query_id)
        known = handle is not None
        if handle is None:
            # registered: the live final frame, if it comes first, is taken as well
            handle = self._handles[query_id] = QueryHandle(self, query_id)
        if handle._final is None:
            try:
                self._ask_kept(handle)
            except BaseException:
                if not known:
                    del self._handles[query_id]  # not a query this client knows of
                raise
            while handle._final is None:
                asked = self._kept_wait(query_id)
                if asked is not None and time.monotonic() >= asked[1]:
                    self._kept_late(query_id, asked)
                self._pump(handle, None)
        return handle.result()

    def _ask_kept(self, handle: QueryHandle) -> None:
        """Ask the master (control plane: a small request) to send `handle`'s kept final
        frame again on our data plane (actors/kept.py); `_pump` reads it. A master with no
        way to send it there answers with the frame itself (a small one)."""
        nonce = uuid.uuid4().hex
        reply = self._call("fetch_result", {"query": handle.query, "resend": nonce,
                                            "address": self.data_address})
        if "frame" in reply:
            handle._frame(decode_frame(reply["frame"]))
            return
        size = int(reply.get("bytes", 0))
        self._forget_kept(handle.query)  # a frame asked for before is dropped if it comes
        self._kept_asked[nonce] = (handle.query, time.monotonic() + kept.within(size), size)

    def _forget_kept(self, query_id: str) -> None:
        """Give up the kept frames of `query_id` asked for: their chunks that came are
        freed, those still to come are dropped (their nonce is not asked for any more)."""
        for nonce in [n for n, a in self._kept_asked.items() if a[0] == query_id]:
            del self._kept_asked[nonce]
            self._reassembler.discard(kept.kept_stream(nonce))

    def _kept_wait(self, query_id: str) -> tuple[str, float, int] | None:
        return next((a for a in self._kept_asked.values() if a[0] == query_id), None)

    def _kept_late(self, query_id: str, asked: tuple[str, float, int]) -> None:
        """The kept frame asked for did not come in time: forget it, and say so."""
        self._forget_kept(query_id)
        raise QueryError(
            f"query {query_id}: its kept result ({asked[2] / 1e6:.1f} MB) did not arrive on "
            f"this client's data connection within {kept.within(asked[2]):.0f} s of asking "
            f"session {self.id}'s master for it; the master still keeps it: call "
            f"session.result({query_id!r}) again (a data connection the network drops: "
            f"connect with connection='dial')")

    def detach(self) -> str:
        """Leave the session running on the daemon; returns its id for `connect(session=...)`."""
        session_id = self.id
        self._close_sockets()
        return session_id or ""

    def _close_sockets(self) -> None:
        self._forget_direct()
        if self.data is not None:
            self.data.close()
            self.data = None
        self.control.close()

    def close(self, *, within: float = CLOSE_WITHIN) -> None:
        """End the session on the daemon (for lite://, stop the whole local cluster).

        A daemon that is restarting is waited for, up to `within` seconds (a close
        dropped then left the session's processes running until the daemon's idle
        timeout, which re-adopted them: a long chaos soak piled up hundreds). If it
        is still unreachable, ConnectError says how the session will end.
        """
        try:
            if self.id and self.data is not None and self.cluster is None:
                if self._host_lost:  # the user was told the session is lost with its host
                    with contextlib.suppress(ConnectError, QueryError):
                        self._call("close_session", deadline=2.0)
                else:
                    self._close_on_daemon(within)
            elif self.id and self.data is not None:
                with contextlib.suppress(Exception):  # the cluster is stopped below anyway
                    self._call("close_session", deadline=10.0)
        finally:
            self._close_sockets()
            if self.cluster is not None:
                self.cluster.close()
                self.cluster = None

    def _close_on_daemon(self, within: float) -> None:
        """Ask the daemon to close this session, through its restarts, for `within` s."""
        end = time.monotonic() + within
        pause = CLOSE_PAUSE
        while True:
            left = end - time.monotonic()
            try:
                self._call("close_session", deadline=max(1.0, min(10.0, left)))
                return
            except QueryError:
                return  # answered: closed already (a lost answer to an earlier try), or gone
            except ConnectError as exc:
                if time.monotonic() + pause >= end:
                    raise ConnectError(
                        f"session {self.id} was not closed: the daemon at "
                        f"{self.control.daemon} was unreachable for {within:.0f} s ({exc}). "
                        "The daemon closes it after its idle timeout (`--session-idle-timeout` "
                        "of `proofctl daemon start`); to close it now, once the daemon is "
                        f"back: `proofctl kill {self.id}`"
                    ) from None
            time.sleep(pause)
            pause = min(CLOSE_PAUSE_MAX, pause * 2)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # never hide the error that ended the block behind one about closing
            self.close()
        except ConnectError as error:
            warnings.warn(str(error), RuntimeWarning, stacklevel=2)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _ScikitQuery:
    selector: Any
    dataset: Any
    inputs: dict[str, Any] | None
    spec: dict[str, Any]           # the query spec's "schema" and "fileset" fields
    processor: Any = None          # a coffea_processor.PreparedProcessor


def _scikit_query(selector: Any, dataset: Any, schema: Any,
                  inputs: dict[str, Any] | None) -> _ScikitQuery:
    """A coffea processor, fileset or schema, turned into what a query spec carries."""
    from pyproof import coffea_processor
    from pyproof.filesets import is_fileset, parse_fileset
    from pyproof.nanoevents import schema_name

    processor = None
    if coffea_processor.is_processor(selector):
        processor = coffea_processor.prepare(selector, dict(inputs or {}))
        selector, inputs = coffea_processor.ProcessorSelector, processor.inputs
        schema = schema or "nanoaod"
    spec: dict[str, Any] = {}
    if schema is not None:
        spec["schema"] = schema_name(schema)
    if is_fileset(dataset):
        cls_schema = getattr(selector, "schema", None) if isinstance(selector, type) else None
        fileset = parse_fileset(dataset, default_tree="Events" if (schema or cls_schema)
                                else None)
        spec["fileset"] = fileset.to_wire()
        dataset = [{path: tree} for path, tree in fileset.elements]
    return _ScikitQuery(selector=selector, dataset=dataset, inputs=inputs, spec=spec,
                        processor=processor)


def _bound_address(socket: pynng.Pull0, requested: str) -> str:
    """The address a listener really got (tcp port 0 means "any free port")."""
    import socket as _socket

    if not requested.startswith(("tcp://", "tls+tcp://")) or not requested.endswith(":0"):
        return requested
    # pynng reports the port in network byte order
    port = _socket.ntohs(socket.listeners[0].local_address.port)
    return requested[:-2] + f":{port}"
