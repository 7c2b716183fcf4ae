"""What a worker does for one query, off the actor thread: pull packets, read, process.

The loop asks for its next packet before processing the current one (the
reply waits in the socket meanwhile), so the worker never idles on the
master. Processing reports ride on the next request. When there is no packet
yet the master holds the request until there is one (or its bound passes), so
waiting for a queued query or a look-up costs no polling here. When packets
are short the master grants several at once (a batch, see
packetizer/common.py): they wait in a local queue and the next request goes as
the last one starts, so one round trip serves many packets.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any

import pynng

from pyproof import worker_output
from pyproof.actors import protocol as p
from pyproof.actors.lookup import TreeInfo, branch_names, check_branches, split_branches
from pyproof.actors.warmup import load_data_modules
from pyproof.datasets import records as _records  # noqa: F401  (decodes its CBOR tag)
from pyproof.datasets.inflate import use_fast_inflate
from pyproof.datasets.steps import READ_STEP_BYTES, keep_freed_memory, read_steps, step_plan
from pyproof.filesets import names_by_file
from pyproof.logs import get_logger
from pyproof.merging.sizes import check_output_sizes
from pyproof.packages.activate import activate, adopt_selector_attributes
from pyproof.packetizer.base import CYCLES
from pyproof.query.spec import QuerySpec
from pyproof.selector import Context, Selector, SelectorCode, SelectorError, load_selector
from pyproof.transport import frames
from pyproof.transport.codec import SUPPORTED_TYPES, EncodeError, RemoteError
from pyproof.transport.frames import chunk_frame_parts, decode_frame, frame_parts
from pyproof.transport.wire import parts_size, send_parts

REQUEST_TIMEOUT_MS = 60_000
WAIT_BACKOFF_MAX = 0.2
CHUNK = frames.DEFAULT_CHUNK_SIZE  # requests larger than this go as chunks (8 MiB)


OPEN_FILES = 64  # files a worker keeps open across queries (least recently used closed)


class OpenFiles:
    """A worker's open ROOT files, kept across packets and queries; counts the bytes read.

    Opening a file and reading its tree's metadata costs milliseconds per
    file: a session's next query on the same files opens nothing. A file is
    known by its path, size and mtime, so a file rewritten since is opened
    afresh; one that is not on the local disk (a URL) is kept for one query
    only (`end_query`). At most `limit` stay open, the least recently used
    is closed first. A file whose read failed is closed (`evict`): the next
    packet opens it again rather than reuse a handle in a bad state. Files
    are opened without uproot's per-file array cache (100 MB each by default:
    64 of them would be 6.4 GB); the metadata cache is kept.

    A packet is charged every byte its file's source requested since the
    previous charge: opening the file and reading the tree's metadata count
    (for the packet that caused them) as well as the baskets. The metadata
    matters: baskets still in memory when a TTree was saved are stored inside
    its TBranch metadata ("embedded baskets"), so reading them requests
    nothing more, and counting only around `tree.arrays` said 0 for a small
    file whose data are all embedded (the likely case of the CMS NanoAOD test
    file, on which coffea's bytesread also does not grow with the branches).

    Used by one thread at a time (the worker's query loop).
    """

    def __init__(self, limit: int = OPEN_FILES) -> None:
        self.limit = limit
        # path -> (its stat key, the open file, bytes requested at the last charge)
        self._files: OrderedDict[str, list[Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._files)

    def tree(self, path: str, tree: str) -> tuple[Any, Any]:
        key = _stat_key(path)
        entry = self._files.get(path)
        if entry is not None and entry[0] != key:
            self.evict(path)  # rewritten since it was opened
            entry = None
        if entry is None:
            import uproot  # imported on first use: a session starts without it (warmup.py)

            # a local file is read in this thread (pread): uproot's default source hands
            # every read to its asyncio thread and waits for it, which costs more than the
            # read of a small packet (twice the time of a 200-entry packet, more on a
            # loaded machine); a URL keeps the default (its reads may overlap)
            local = {"handler": uproot.MultithreadedFileSource, "use_threads": False} \
                if "://" not in path else {}
            entry = [key, uproot.open(path, array_cache=None, **local), 0]
            self._files[path] = entry
            while len(self._files) > self.limit:
                self.evict(next(iter(self._files)))
        else:
            self._files.move_to_end(path)
        return entry[1], entry[1][tree]

    def charge(self, path: str) -> int:
        """Bytes requested from `path` since the last charge."""
        entry = self._files[path]
        requested = int(entry[1].file.source.num_requested_bytes)
        nbytes, entry[2] = requested - entry[2], requested
        return nbytes

    def evict(self, path: str) -> None:
        entry = self._files.pop(path, None)
        if entry is not None:
            with contextlib.suppress(Exception):
                entry[1].close()

    def end_query(self) -> None:
        """A query ended: files that cannot be checked for changes are not reused."""
        for path, entry in list(self._files.items()):
            if entry[0] is None:
                self.evict(path)

    def close(self) -> None:
        for path in list(self._files):
            self.evict(path)


def _stat_key(path: str) -> tuple[int, int] | None:
    """(size, mtime in ns) of a local file; None for a URL or a file that cannot be read."""
    if "://" in path and not path.startswith("file://"):
        return None
    try:
        st = os.stat(path[7:] if path.startswith("file://") else path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class WorkerLoop:
    """Runs one query on one worker in a thread; `stop()` ends it early."""

    def __init__(self, *, worker_id: str, session_id: str, query_id: str,
                 spec: QuerySpec, socket: pynng.Req0, owns_socket: bool = False,
                 die: Any = None, files: OpenFiles | None = None,
                 read_step_bytes: int = READ_STEP_BYTES) -> None:
        self.owns_socket = owns_socket
        # a packet is read and processed in steps of about this many bytes (steps.py)
        self.read_step_bytes = read_step_bytes
        # (path, tree) -> (the tree, entries per step, basket boundaries), per query
        self._step_plans: dict[tuple[str, str], tuple[Any, int | None, list[int]]] = {}
        # the worker's open files, kept across its queries (else this query's own)
        self._files, self._owns_files = (files, False) if files is not None else \
            (OpenFiles(), True)
        # False once a request failed here (timeout, garbage): the socket is not reused
        self.socket_ok = True
        # what to do when the master cannot be told we hold packets (the actor exits)
        self.die = die or (lambda: None)
        self.worker_id = worker_id
        self.session_id = session_id
        self.query_id = query_id
        self.spec = spec
        self.socket = socket
        self.log = get_logger().bind(query=query_id)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._begun = False
        self._ended = threading.Event()
        # the master answered DONE: the query is over for it (not only for this worker)
        self.over = False
        self._checked: set[tuple[str, str]] = set()  # (file, tree) whose branches we checked
        self.selector: Selector | None = None
        self.ctx: Context | None = None
        self._held: list[int] = []       # processed packets whose outputs are not delivered
        self._reports: list[dict] = []   # processed reports not yet sent
        self._fresh_outputs = False      # ctx.outputs were flushed: begin() must run again
        self._current: tuple[float, dict[str, Any]] | None = None  # packet being processed
        self._batch = 0                  # numbers the output-file directory of each batch
        self._streams = 0                # numbers the chunked requests
        # a coffea fileset: each file's dataset name and each dataset's metadata
        self._fileset_names = names_by_file(spec.fileset)
        self._fileset_metadata = (spec.fileset or {}).get("metadata") or {}
        self._flushed = time.monotonic()  # outputs last sent (live feedback)
        self.packets_queued = 0          # packets that came in a batch, after its first

    def start(self) -> None:
        """Run the query on a thread of its own (tests; a worker runs it on its query
        thread, see `run`)."""
        self._thread = threading.Thread(target=self.run, name=f"query-{self.query_id}",
                                        daemon=True)
        self._thread.start()

    def run(self) -> None:
        """Run the query on the calling thread, to its end (never raises)."""
        self._begun = True
        try:
            self._run()
        finally:
            self._ended.set()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) for the query's end; True if it has ended (or never
        began)."""
        return not self._begun and self._thread is None or self._ended.wait(timeout)

    @property
    def running(self) -> bool:
        return self._begun and not self._ended.is_set()

    # -- the loop ---------------------------------------------------------
    def _run(self) -> None:
        self.log.info("query_started", selector=self.spec.selector,
                      thread=threading.current_thread().name)
        worker_output.clear_tail()  # a failure carries this query's output only
        try:
            if self.spec.cycles is None:
                load_data_modules()  # before any packet's clock starts (see warmup.py)
                keep_freed_memory()  # no page faults per step (datasets/steps.py)
                use_fast_inflate()  # ZLIB baskets inflated by ISA-L (datasets/inflate.py)
            self._loop()
        except _MasterGone as gone:
            self.socket_ok = False
            # the master may still count on packets we hold: only our death (reported by
            # supervision as a lost worker) reliably gives them back
            self.log.error("master_unreachable", reason=str(gone))
            self.die()
        except _Abort as abort:
            self.log.info("query_aborted", reason=str(abort), ended=abort.ended)
            self.over = abort.ended  # a worker starting later on this host is not given it
            self._drop_unsent_files()
        except Exception as exc:
            # outputs that cannot be encoded, or our own bug: the master must hear of it,
            # or the packets this worker holds would wait for ever
            self.socket_ok = False  # a garbled exchange: the next query dials afresh
            self.log.error("worker_loop_crashed", error=repr(exc), exc_info=True)
            if not self._fail(exc, stage="outputs" if isinstance(exc, EncodeError)
                              else "worker"):
                self.die()
        finally:
            if self._owns_files:
                self._files.close()
            else:
                self._files.end_query()
            if self.owns_socket:
                self.socket.close()
            self.log.info("query_ended")

    def _loop(self) -> None:
        try:
            # appended, never prepended: a user's directory must not shadow the stdlib
            for path in self.spec.sys_path:
                if isinstance(path, str) and path not in sys.path:
                    sys.path.append(path)
            # the session's packages first: the selector may come from one of them
            activate(list(self.spec.packages), worker=self.worker_id,
                     session=self.session_id)
            ref = self.spec.selector
            code = None if self.spec.selector_sources is None else \
                SelectorCode.from_wire(ref, self.spec.selector_sources, self.spec.selector_hash)
            selector_cls = load_selector(ref, code)
            self.spec = adopt_selector_attributes(self.spec, selector_cls)
            self.selector = selector_cls()
            self._new_outputs()
        except Exception as exc:
            self._fail(exc, stage="begin")
            return
        backoff = 0.01
        reply = self._request(p.NEXT, {"processed": []})
        while not self._stop.is_set():
            kind = reply["kind"]
            if kind == p.PACKET:
                backoff = 0.01
                # a batch of short packets (PACKET's "batch") is queued here and processed
                # in order; the next request goes as the last one starts (ahead: its
                # reply waits while we process), with the reports of the others
                queue = _batch(reply)
                last = len(queue) - 1
                # the master has nothing else to give ("last"): no request ahead (it would
                # be answered "flush"); the outputs go, with the request, once we are done
                final = reply.get("last") is True
                ahead = None
                for index, packet in enumerate(queue):
                    if index == last and not final:
                        self._send(p.NEXT, {"processed": self._take_reports()})
                        if packet["packet"].get("confirm"):
                            # a worker died holding it: the master hears that we start it
                            # before we do (if it kills us, it is known to be this one)
                            ahead = self._recv(p.NEXT)
                    elif self._stop.is_set():
                        # stopped: the queued packets not started are dropped here, and
                        # go back to the master's queue when this worker is gone
                        self.log.info("queued_packets_dropped", packets=last + 1 - index)
                        self._flush()
                        return
                    if not self._process(packet):
                        return
                self.packets_queued += last
                if final:
                    reply = self._flush(then_next=True)
                    continue
                reply = ahead if ahead is not None else self._recv(p.NEXT)
                if self.spec.feedback and time.monotonic() - self._flushed >= \
                        self.spec.feedback_interval:
                    self._flush()  # live feedback: the master merges what we have so far
            elif kind == p.WAIT:
                # the master held our request until its bound (master_plane.HOLD_SECONDS)
                # and will hold the next one too: ask again at once, no polling here. The
                # pause is a guard against a master that answers WAIT without holding.
                # "flush": nothing for us until our outputs are in (the query's end
                # may wait for them): send them, and the next request with them.
                if reply.get("held") is not None or reply.get("flush"):
                    reply = self._flush(then_next=True)
                    continue
                self._flush()
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, WAIT_BACKOFF_MAX)
                reply = self._request(p.NEXT, {"processed": self._take_reports()})
            elif kind == p.DONE:
                self.over = True
                self._flush()
                return
            else:
                raise _Abort.answered(reply)
        # stopped (removed, or its host leaves the cluster): what it processed goes to the
        # master now rather than being processed again elsewhere; a packet it was just
        # given and did not start goes back to the queue when the worker is gone
        self._flush()

    def _drop_unsent_files(self) -> None:
        """The query ended without our current batch: its files must not outlive it."""
        batch = self.ctx.output_dir if self.ctx is not None else None
        if not batch:
            return
        shutil.rmtree(batch, ignore_errors=True)
        with contextlib.suppress(OSError):  # the master removed the query's directory
            os.rmdir(os.path.dirname(batch))  # already, unless other batches are left

    def _new_outputs(self) -> None:
        assert self.selector is not None
        self.ctx = Context(
            inputs=self.spec.inputs,
            worker=self.worker_id,
            query=self.query_id,
            session=self.session_id,
        )
        if self.spec.output_dir:
            # one directory per worker process and batch: workers never collide, and a
            # batch's files are kept or deleted with its packets (see output_files.py)
            self.ctx.output_dir = os.path.join(
                self.spec.output_dir, f"{self.worker_id}-{os.getpid()}-b{self._batch}")
        self._batch += 1
        # watched like a packet (worker.py): a begin() that hangs fails the query too
        self._current = (time.monotonic(), {"stage": "begin", "worker": self.worker_id})
        try:
            self.selector.begin(self.ctx)
        finally:
            self._current = None
        self._fresh_outputs = False

    def _process(self, reply: dict[str, Any]) -> bool:
        packet = reply["packet"]
        start, stop, element = packet["entry_start"], packet["entry_stop"], packet["element"]
        path, tree_name = reply.get("path"), reply.get("tree")
        assert self.selector is not None
        try:
            if self._fresh_outputs:
                self._new_outputs()
            ctx = self.ctx
            assert ctx is not None
            ctx.file, ctx.tree, ctx.entry_start, ctx.entry_stop = path, tree_name, start, stop
            ctx.dataset = reply.get("dataset") or self._fileset_names.get(
                (path, tree_name), self._fileset_names.get((path, None)))
            ctx.metadata = reply.get("metadata") or self._fileset_metadata.get(
                ctx.dataset or "", {})
            t0 = time.perf_counter()
            self._current = (time.monotonic(), {
                "file": path, "tree": tree_name, "entry_start": start, "entry_stop": stop,
                "worker": self.worker_id})
            nbytes = 0
            if element == CYCLES or self.spec.files is not None:
                self._call_process(range(start, stop))  # CPU or per-file task: nothing to read
            else:
                # a large packet in steps of about 16 MB (datasets/steps.py: page faults)
                for a, b in self._steps(path, tree_name, start, stop):
                    ctx.entry_start, ctx.entry_stop = a, b
                    events, step_bytes = self._read(reply, path, tree_name, a, b)
                    nbytes += step_bytes
                    self._call_process(events)
                    del events  # freed before the next step is read
            seconds = time.perf_counter() - t0
            self._current = None
        except Exception as exc:
            self._fail(exc, stage="process", file=path, tree=tree_name,
                       entry_start=start, entry_stop=stop)
            return False
        self._held.append(packet["packet_id"])
        self._reports.append({"packet": packet["packet_id"], "seconds": seconds,
                              "entries": stop - start, "bytes": nbytes})
        return True

    def _call_process(self, events: Any) -> None:
        assert self.selector is not None and self.ctx is not None
        returned = self.selector.process(events, self.ctx)
        if returned is not None:
            raise SelectorError(_returned_message(self.selector, returned))

    def _steps(self, path: str, tree_name: str, start: int,
               stop: int) -> list[tuple[int, int]]:
        """The read steps of the packet `[start, stop)` (datasets/steps.py); the step
        size of a file is worked out once per query (and again if the file was reopened)."""
        main, _ = split_branches(self.spec.branches)
        try:
            _, tree = self._files.tree(path, tree_name)
        except Exception:
            return [(start, stop)]  # _read opens it again and reports the error
        plan = self._step_plans.get((path, tree_name))
        if plan is None or plan[0] is not tree:
            plan = (tree, *step_plan(tree, main, self.read_step_bytes))
            self._step_plans[(path, tree_name)] = plan
        return read_steps(start, stop, plan[1], plan[2])

    def _read(self, reply: dict[str, Any], path: str, tree_name: str, start: int,
              stop: int) -> tuple[Any, int]:
        """The packet's entries (with the friend tree's as `events.friend`), and bytes read."""
        try:
            return self._read_files(reply, path, tree_name, start, stop)
        except Exception:
            # a file that fails (truncated, rewritten under us) is opened afresh next time
            self._files.evict(path)
            if reply.get("friend_path"):
                self._files.evict(reply["friend_path"])
            raise

    def _read_files(self, reply: dict[str, Any], path: str, tree_name: str, start: int,
                    stop: int) -> tuple[Any, int]:
        import awkward as ak  # the data path only: a cycles query never needs it

        from pyproof.nanoevents import read_events

        main, friends = split_branches(self.spec.branches)
        handle, tree = self._files.tree(path, tree_name)
        if (path, tree_name) not in self._checked:  # the master checked only the first file
            check_branches(TreeInfo(tree_name, 0, branch_names(tree)), path, main)
            self._checked.add((path, tree_name))
        schema = self.spec.schema or getattr(self.selector, "schema", None)
        if schema:  # NanoEvents-style records (nanoevents.py), coffea's metadata keys
            events = read_events(handle, tree_name, start, stop, schema=schema,
                                 branches=main, metadata=self._metadata(handle, path,
                                                                        tree_name, start, stop))
        else:
            events = tree.arrays(main, entry_start=start, entry_stop=stop, library="ak")
        nbytes = self._files.charge(path)
        friend_path = reply.get("friend_path")
        if friends and friend_path:
            _, ftree = self._files.tree(friend_path, reply.get("friend_tree"))
            friend = ftree.arrays(friends, entry_start=start, entry_stop=stop, library="ak")
            nbytes += self._files.charge(friend_path)
            fields = {name: events[name] for name in events.fields}
            fields["friend"] = friend
            events = ak.zip(fields, depth_limit=1)
        return events, nbytes

    def _metadata(self, handle: Any, path: str, tree: str, start: int,
                  stop: int) -> dict[str, Any]:
        assert self.ctx is not None
        return {"dataset": self.ctx.dataset, "filename": path, "treename": tree,
                "entrystart": start, "entrystop": stop,
                "fileuuid": str(getattr(handle.file, "uuid", "")), **self.ctx.metadata}

    def current_packet(self, now: float) -> dict[str, Any] | None:
        """Where the selector is now (file, range, worker) and for how many seconds."""
        current = self._current
        if current is None:
            return None
        started, where = current
        return {k: v for k, v in where.items() if v is not None} | {"seconds": now - started}

    def _take_reports(self) -> list[dict]:
        reports, self._reports = self._reports, []
        return reports

    def _flush(self, *, then_next: bool = False) -> Any:
        """Send the outputs of every held packet; afterwards outputs start afresh.

        With `then_next`, the request for the next packet rides on them (one round trip
        at a query's end, not two) and its answer is returned (a packet, wait, done).
        """
        if not self._held:
            if then_next:
                return self._request(p.NEXT, {"processed": self._take_reports()})
            return None
        assert self.ctx is not None
        # an output over the query's cap fails the query here, before it is encoded and
        # shipped (OutputTooLarge names it; the master would refuse it anyway)
        check_output_sizes(self.ctx.outputs, self.spec.max_output_bytes,
                           worker=self.worker_id)
        try:
            reply = self._request(p.OUTPUTS, {
                "packets": list(self._held),
                "processed": self._take_reports(),
                "outputs": self.ctx.outputs,
                # files this batch wrote: the master keeps them with its packets, or deletes
                "files": [f for f in self.ctx.written if os.path.exists(f)],
                **({"next": True} if then_next else {}),
            })
        except EncodeError as exc:
            raise EncodeError(f"{exc}; outputs may hold {SUPPORTED_TYPES}") from None
        self._flushed = time.monotonic()
        if reply["kind"] == p.ABORT:
            raise _Abort.answered(reply)
        taken = reply["kind"] == p.ACK and not reply.get("more") if not then_next else \
            reply["kind"] in (p.PACKET, p.WAIT, p.DONE) and "accepted" in reply
        if not taken:  # held packets would wait for ever
            raise OutputsRefused(f"the master could not take {len(self._held)} packets' "
                                 f"outputs: {reply.get('reason') or reply['kind']}")
        self.log.info("outputs_sent", packets=len(self._held), accepted=reply.get("accepted"))
        self._held = []
        self.ctx.outputs = {}
        self._fresh_outputs = True
        return reply if then_next else None

    def _fail(self, exc: BaseException, *, stage: str, **where: Any) -> bool:
        """Tell the master the query failed here; False if it could not be told."""
        output = worker_output.tail()  # the selector's last printed or logged lines
        error = RemoteError(
            type=type(exc).__name__,
            message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
            context={"worker": self.worker_id, "stage": stage,
                     **{k: v for k, v in where.items() if v is not None},
                     **({"output": output} if output else {})},
        )
        self.log.error("selector_failed", stage=stage, error=repr(exc), **where)
        try:
            reply = self._request(p.FAILED, {"error": error})
        except _MasterGone:
            return False
        except _Abort:
            return True
        # the master's answer: "query failed" (ended), or it was over already
        self.over = reply.get("kind") == p.ABORT and reply.get("ended") is True
        return True

    def _request(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        self._send(kind, payload)
        return self._recv(kind)

    def _send(self, kind: str, payload: dict[str, Any]) -> None:
        payload = {"worker": self.worker_id, "pid": os.getpid(), "query": self.query_id,
                   **payload}
        parts = frame_parts(kind, payload, session=self.session_id)
        if parts_size(parts) > CHUNK:
            self._send_chunks(kind, b"".join(parts))
            return
        self._send_frame(kind, parts)

    def _send_frame(self, kind: str, parts: list[Any]) -> None:
        try:
            send_parts(self.socket, parts)
        except pynng.NNGException as exc:  # timeout, reset, closed: the master is unreachable
            raise _MasterGone(f"the master did not take a {kind!r} request ({exc})") from None

    def _send_chunks(self, kind: str, whole: bytes) -> None:
        """Send a large request as chunk requests; the caller reads the last one's reply.

        Large outputs are streamed, never refused: each chunk stays under the frame
        cap, and the master answers "more" until it has them all.
        """
        self._streams += 1
        stream = f"{self.worker_id}#{os.getpid()}/{self.query_id}/{self._streams}"
        pieces = chunk_frame_parts(whole, stream=stream, chunk_size=CHUNK,
                                   session=self.session_id)
        for index, parts in enumerate(pieces):
            self._send_frame(kind, parts)
            if index < len(pieces) - 1:
                reply = self._recv(kind)
                if reply["kind"] == p.ABORT:
                    raise _Abort.answered(reply)
                if reply["kind"] != p.ACK or not reply.get("more"):  # held packets would wait
                    raise OutputsRefused(f"the master refused chunk {index} of {len(pieces)} "
                                         f"of a {kind!r} request: "
                                         f"{reply.get('reason') or reply['kind']}")

    def _recv(self, kind: str) -> dict[str, Any]:
        try:
            raw = self.socket.recv()
        except pynng.Timeout:
            raise _MasterGone(f"master did not answer a {kind!r} request "
                              f"within {REQUEST_TIMEOUT_MS / 1000:.0f} s") from None
        except pynng.NNGException as exc:  # reset or closed
            raise _MasterGone(f"no answer to a {kind!r} request ({exc})") from None
        frame = decode_frame(raw)
        reply = dict(frame.payload) if isinstance(frame.payload, dict) else {}
        reply["kind"] = frame.type
        if frame.type == p.ABORT and reply.get("unreachable") is True:
            # our host's tunnel could not reach the master's host (its daemon restarting,
            # the link cut) mid-request: the master may have granted us packets it will
            # wait for; only our death gives them back, as when it does not answer at all
            raise _MasterGone(str(reply.get("reason", "the master's host is not reachable")))
        return reply


_NOT_FILE = ("kind", "batch", "accepted", "packet")


def _batch(reply: dict[str, Any]) -> list[dict[str, Any]]:
    """A PACKET reply's packets, each with its file fields: a packet of the same element
    as the one before it comes without them ("batch", see master_query._carry_out)."""
    batch = [reply]
    for item in reply.get("batch") or ():
        before = batch[-1]
        if "path" not in item and item["packet"]["element"] == before["packet"]["element"]:
            item = {k: v for k, v in before.items() if k not in _NOT_FILE} | \
                {"packet": item["packet"]}
        batch.append(item)
    return batch


def _returned_message(selector: Selector, returned: Any) -> str:
    """The coffea habit (`process` returns the outputs): say where outputs go instead."""
    name = type(selector).__name__
    return (f"{name}.process returned a {type(returned).__name__}, but pyproof does not use "
            "what process returns: create your outputs in begin (ctx.outputs['n'] = 0, "
            "ctx.outputs['h'] = hist.Hist(...)) and fill them in process "
            "(ctx.outputs['n'] += len(events), ctx.outputs['h'].fill(...)); the workers' "
            "ctx.outputs are merged into the result")


class OutputsRefused(Exception):
    """The master answered a batch of outputs with an error (it could not decode it)."""


class _Abort(Exception):
    """The master ended this query for this worker (done elsewhere, failed or stopped)."""

    ended = False  # the master said the query is over for every worker (failed, aborted)

    @classmethod
    def answered(cls, reply: dict[str, Any]) -> _Abort:
        """The master's ABORT answer (or another it should not have sent here)."""
        abort = cls(reply.get("reason") or reply.get("kind") or "aborted")
        abort.ended = reply.get("kind") == p.ABORT and reply.get("ended") is True
        return abort


class _MasterGone(_Abort):
    """The master cannot be reached: it is dead, restarting or wedged."""
