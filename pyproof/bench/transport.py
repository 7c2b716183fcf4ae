"""Benchmark: the data path through pyproof frames vs bare pynng, and packet grants/s.

    python -m pyproof.bench.transport [--quick] [--grants] [--json]

The two ends run in two processes (this one and a peer it spawns and reaps),
as they do in a cluster. For ``tcp://127.0.0.1`` and ``ipc://`` (in a private
temp dir, removed afterwards), with a 1 KiB and a 10 MiB byte string and a
10 MiB float64 array:

- round-trip latency of req/rep, the payload echoed back (so a round trip
  carries it both ways);
- push/pull throughput, from the first send to the peer's last receive;

each *bare* (pynng with bytes in and bytes out; an array as ``tobytes()`` /
``np.frombuffer``) and *framed* exactly as the session's data channel sends
(a versioned frame, sealed with HMAC-SHA256, checked and decoded on arrival),
with the framed/bare ratio.

Then the packet grants per second of the pure query core (no socket, no
codec), and those the real master data plane sustains (a
``MasterPlane`` in this process running a CPU query with basic packets) for 2,
8 and 32 simulated workers (threads of the peer process speaking the worker
protocol: report the last packets and get the next; every 10 packets or more
send outputs, which the master merges). The packets are short (1 ms by the
reports), so the master grants them in batches (packetizer/common.py):
grants/s counts packets granted, requests/s the requests that carried them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pynng
import structlog

from pyproof.transport import sealing
from pyproof.transport.frames import decode_frame, frame_parts
from pyproof.transport.wire import recv_view, send_parts

KIB = 1024
MIB = 1024 * 1024
MAX_MESSAGE = 64 * MIB
TIMEOUT_MS = 20_000
KEY = b"bench-session-key-of-32-bytes..."  # sealing cost does not depend on the key


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """Loop counts: bounded, so the whole run stays around a minute."""

    rounds_small: int = 2000
    rounds_large: int = 20
    messages_small: int = 20_000
    messages_large: int = 40
    grant_seconds: float = 1.5
    workers: tuple[int, ...] = (2, 8, 32)
    core_grants: int = 50_000


QUICK = Plan(
    rounds_small=300,
    rounds_large=5,
    messages_small=3000,
    messages_large=8,
    grant_seconds=0.4,
    core_grants=10_000,
)


@dataclasses.dataclass(frozen=True, slots=True)
class Payload:
    name: str
    kind: str  # "bytes" or "array"
    size: int

    def make(self) -> bytes | np.ndarray:
        if self.kind == "bytes":
            return os.urandom(self.size)
        return np.random.default_rng(1).random(self.size // 8)


PAYLOADS = (
    Payload("1 KiB bytes", "bytes", KIB),
    Payload("10 MiB bytes", "bytes", 10 * MIB),
    Payload("10 MiB array", "array", 10 * MIB),
)


# ----------------------------------------------------------------------- the two codings


MODES = ("bare", "framed", "sealed")


def send_message(sock: pynng.Socket, value: Any, mode: str) -> None:
    """Send as bare pynng would, as workers and master do (framed), or as the
    master sends to the client (framed and sealed)."""
    if mode == "sealed":
        send_parts(sock, sealing.sealed_parts(KEY, frame_parts("data", value)))
    elif mode == "framed":
        send_parts(sock, frame_parts("data", value))
    elif isinstance(value, np.ndarray):
        sock.send(value.tobytes())
    else:
        sock.send(value)


def receive_message(sock: pynng.Socket, kind: str, mode: str) -> Any:
    if mode == "sealed":
        return decode_frame(sealing.unseal(KEY, recv_view(sock)), max_size=MAX_MESSAGE).payload
    if mode == "framed":
        return decode_frame(recv_view(sock), max_size=MAX_MESSAGE).payload
    data = sock.recv()
    return np.frombuffer(data, dtype=np.float64) if kind == "array" else data


def _socket(kind: type[pynng.Socket]) -> pynng.Socket:
    return kind(recv_timeout=TIMEOUT_MS, send_timeout=TIMEOUT_MS, recv_max_size=MAX_MESSAGE)


def _listen(sock: pynng.Socket, url: str) -> str:
    """Listen; for tcp port 0 return the real address (nng reports the port byte-swapped)."""
    listener = sock.listen(url)
    if url.startswith("tcp://") and url.endswith(":0"):
        return f"{url[:-2]}:{socket.ntohs(listener.local_address.port)}"
    return url


# ----------------------------------------------------------------------- the peer process


def _peer_echo(address: str, kind: str, mode: str, rounds: int) -> None:
    with _socket(pynng.Rep0) as server:
        server.dial(address, block=True)
        for _ in range(rounds):
            send_message(server, receive_message(server, kind, mode), mode)
        server.recv()  # closing discards unsent replies: wait until the last was taken


def _peer_sink(address: str, kind: str, mode: str, count: int) -> int:
    received = 0
    with _socket(pynng.Pull0) as receiver:
        receiver.dial(address, block=True)
        for _ in range(count):
            value = receive_message(receiver, kind, mode)
            received += value.nbytes if isinstance(value, np.ndarray) else len(value)
    return received


def _peer_workers(address: str, workers: int,
                  seconds: float) -> tuple[int, int, float, list[float]]:
    """Simulated workers on the real protocol, for `seconds` once all are served: the
    packets granted, the requests that got them, the window's length, request latencies."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    counts = [0] * workers  # packets granted
    asked = [0] * workers  # requests answered with packets
    window: list[float] = []  # start, end
    ready = threading.Barrier(workers + 1)

    def request(sock: pynng.Socket, kind: str, payload: dict[str, Any]) -> tuple[str, Any]:
        send_parts(sock, frame_parts(kind, payload))
        frame = decode_frame(recv_view(sock), max_size=MAX_MESSAGE)
        return frame.type, frame.payload

    def work_loop(index: int) -> None:
        name, pid = f"worker-{index}", os.getpid()
        base = {"worker": name, "pid": pid, "query": "q1"}
        try:
            with _socket(pynng.Req0) as sock:
                sock.dial(address, block=True)
                reports: list[dict[str, Any]] = []
                done: list[int] = []
                waiting = True  # for the first packet, then for the others to have theirs
                while not (window and time.perf_counter() >= window[1]):
                    start = time.perf_counter()
                    kind, reply = request(sock, "next", {**base, "processed": reports})
                    latencies.append(time.perf_counter() - start)
                    reports = []
                    if kind == "wait":
                        time.sleep(0.001)
                        continue
                    if kind != "packet":
                        raise RuntimeError(f"{name}: the master answered {kind}: {reply}")
                    # a batch of short packets ("batch"), as worker_loop queues and runs it
                    batch = [reply["packet"]] + [m["packet"] for m in reply.get("batch") or ()]
                    counts[index] += len(batch)
                    asked[index] += 1
                    for packet in batch:
                        done.append(packet["packet_id"])
                        reports.append({"packet": packet["packet_id"], "seconds": 0.001,
                                        "bytes": 0,
                                        "entries": packet["entry_stop"] - packet["entry_start"]})
                    if len(done) >= 10:
                        kind, _ = request(sock, "outputs", {
                            **base, "packets": done, "processed": reports,
                            "outputs": {"h": np.ones(100)}, "files": []})
                        done, reports = [], []
                    if waiting:
                        ready.wait(timeout=TIMEOUT_MS / 1000)
                        waiting = False
        except BaseException as exc:  # reported to the main process
            errors.append(exc)

    threads = [threading.Thread(target=work_loop, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    ready.wait(timeout=TIMEOUT_MS / 1000)  # every worker has been answered once
    before, requests_before = sum(counts), sum(asked)
    start = time.perf_counter()
    window[:] = [start, start + seconds]
    time.sleep(seconds)
    counted, requests = sum(counts) - before, sum(asked) - requests_before
    elapsed = time.perf_counter() - start
    for thread in threads:
        thread.join(timeout=TIMEOUT_MS / 1000)
    if errors:
        raise errors[0]
    return counted, requests, elapsed, latencies


_TASKS: dict[str, Callable[..., Any]] = {
    "echo": _peer_echo, "sink": _peer_sink, "workers": _peer_workers,
}


def _peer_main() -> None:
    """Run tasks read from stdin (JSON lines) until it closes; answer each on stdout."""
    for line in sys.stdin:
        name, args = json.loads(line)
        try:
            answer = ["ok", _TASKS[name](*args)]
        except Exception as exc:  # noqa: BLE001 - the main process reports it
            answer = ["error", repr(exc)]
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class Peer:
    """The other end: one child interpreter (``--peer``), reaped on close."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pyproof.bench.transport", "--peer"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def start(self, task: str, *args: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps([task, args]) + "\n")
        self.process.stdin.flush()

    def wait(self, timeout: float = 120.0) -> Any:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            raise TimeoutError("the benchmark peer did not answer in time (or died)")
        status, value = json.loads(line)
        if status != "ok":
            raise RuntimeError(f"benchmark peer failed: {value}")
        return value

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # type: ignore[union-attr]
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process.stdout.close()  # type: ignore[union-attr]


# ----------------------------------------------------------------------- measurements


def latency(peer: Peer, url: str, payload: Payload, rounds: int,
            mode: str) -> dict[str, float]:
    """Req/rep echo round trips (the peer echoes): median and p95 in microseconds."""
    value = payload.make()
    warmup = max(2, rounds // 20)
    times = []
    with _socket(pynng.Req0) as client:
        address = _listen(client, url)
        peer.start("echo", address, payload.kind, mode, rounds + warmup)
        for _ in range(rounds + warmup):
            start = time.perf_counter()
            send_message(client, value, mode)
            reply = receive_message(client, payload.kind, mode)
            times.append(time.perf_counter() - start)
            if len(reply) != len(value):
                raise AssertionError("echo came back with the wrong size")
        client.send(b"bye")
        peer.wait()
    times = sorted(times[warmup:])
    return {
        "median_us": statistics.median(times) * 1e6,
        "p95_us": times[int(0.95 * (len(times) - 1))] * 1e6,
    }


def throughput(peer: Peer, url: str, payload: Payload, count: int,
               mode: str) -> dict[str, float]:
    """Push/pull one way: messages/s and MB/s, first send to the peer's last receive."""
    value = payload.make()
    with _socket(pynng.Push0) as sender:
        address = _listen(sender, url)
        peer.start("sink", address, payload.kind, mode, count)
        time.sleep(0.05)  # let the peer dial before the clock starts
        start = time.perf_counter()
        for _ in range(count):
            send_message(sender, value, mode)
        received = peer.wait()
        seconds = time.perf_counter() - start
    if received != payload.size * count:
        raise AssertionError(f"bytes lost: {received} of {payload.size * count}")
    return {"msgs_per_s": count / seconds, "mb_per_s": count * payload.size / seconds / 1e6}


def grants(peer: Peer, directory: str, workers: int, seconds: float) -> dict[str, float]:
    """Packet grants/s the real master data plane sustains (this process).

    A :class:`MasterPlane` runs a CPU query (``cycles``, basic packets of 1000)
    exactly as in a session; the peer's worker threads speak the worker
    protocol: NEXT with the last packet's report, and every 10 packets OUTPUTS
    with a small histogram-like array the master merges. The master's whole
    process CPU (its thread, nng's threads) is divided by the grants.
    """
    from pyproof.actors.master_plane import MasterPlane
    from pyproof.query.spec import QuerySpec

    # the master's log lines (a query prepared, ...) would interleave with the table
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    address = f"ipc://{directory}/master-{workers}.ipc"
    plane = MasterPlane(session_id="bench", address=address)
    try:
        with _socket(pynng.Pull0) as client:  # progress frames land here, as at a client
            client_address = _listen(client, f"ipc://{directory}/client-{workers}.ipc")
            pid = peer.process.pid
            for i in range(workers):
                plane.worker_joined(f"worker-{i}#{pid}")
            plane.start_query("q1", QuerySpec(
                selector="bench:Selector", cycles=10**12, packetizer="basic",
                packetizer_params={"packet_entries": 1000}, client_address=client_address),
                "bench")
            client.recv_timeout = 100
            stop = threading.Event()

            def listen() -> None:  # take progress frames as a client does
                while not stop.is_set():
                    with contextlib.suppress(pynng.Timeout):
                        decode_frame(recv_view(client))

            listener = threading.Thread(target=listen, daemon=True)
            listener.start()
            cpu = time.process_time()
            try:
                peer.start("workers", address, workers, seconds)
                counted, requests, elapsed, latencies = peer.wait()
                cpu = time.process_time() - cpu
                plane.stop_query("q1", "benchmark over")
            finally:
                stop.set()
                listener.join(timeout=5)
    finally:
        plane.close()
    latencies.sort()
    return {
        "grants_per_s": counted / elapsed,
        "requests_per_s": requests / elapsed,
        "median_us": statistics.median(latencies) * 1e6,
        "master_cpu_us": cpu / max(1, counted) * 1e6,
    }


def core_grants(workers: int, kind: str, grants: int) -> dict[str, float]:
    """Packet grants/s of the pure query core alone (no socket, no codec, no thread),
    until `grants` packets are granted (a request may be granted a batch).

    The same traffic as `grants`: each worker asks with the report of its last
    packet and every 10 packets sends outputs (merged at once); a tick every
    20 grants. `kind` "basic" packets of 1000 cycles as the real-plane rows, or
    "adaptive" packets over 100 files (rates from the reports). CPU time of
    this thread, so other processes on the machine count less.
    """
    from pyproof.packetizer.base import CYCLES, WorkRange
    from pyproof.query import core as qc
    from pyproof.query.spec import QuerySpec

    if kind == "basic":
        params: dict[str, Any] = {"packet_entries": 1000}
        work = (WorkRange(element=CYCLES, entry_start=0, entry_stop=10**15),)
    else:
        params = {"min_packet_time": 0.01, "max_packet_time": 0.05}
        work = tuple(WorkRange(element=i, entry_start=0, entry_stop=10**12) for i in range(100))
    spec = QuerySpec(selector="bench:Selector", cycles=10**15, packetizer=kind,
                     packetizer_params=params)
    names = [f"worker-{i}#1" for i in range(workers)]
    core = qc.QueryCore(query_id="q", spec=spec, workers=names, now=0.0)
    core.handle(qc.LookupDone(work=work, kind=kind, params=params, now=0.0))
    last: dict[str, Any] = dict.fromkeys(names)
    held: dict[str, list[int]] = {w: [] for w in names}
    now, start, granted, k = 0.0, time.thread_time(), 0, -1
    while granted < grants:
        k += 1
        worker = names[k % workers]
        now += 1e-5
        reports = tuple(qc.Report(packet=packet.packet_id, entries=packet.entries,
                                  seconds=packet.entries / 1e6)
                        for packet in last[worker] or ())
        grant = core.handle(qc.PacketRequested(worker=worker, reports=reports, now=now))[-1]
        if not isinstance(grant, qc.Grant):
            raise AssertionError(f"the core answered {grant}")
        last[worker] = grant.packets
        granted += len(grant.packets)
        held[worker].extend(packet.packet_id for packet in grant.packets)
        if len(held[worker]) >= 10:
            for ins in core.handle(qc.OutputArrived(
                    worker=worker, packet_ids=frozenset(held[worker]), now=now)):
                if isinstance(ins, qc.Merge):
                    core.handle(qc.Merged(token=ins.token))
            held[worker] = []
        if k % 20 == 0:
            core.handle(qc.Tick(now=now))
    seconds = max(time.thread_time() - start, 1e-9)
    return {"grants_per_s": granted / seconds, "requests_per_s": (k + 1) / seconds,
            "cpu_us": seconds / granted * 1e6}


def codec(payload: Payload, count: int) -> dict[str, float]:
    """Framing and sealing alone (no socket): microseconds per message, each side."""
    value = payload.make()
    times: dict[str, float] = {}
    for sealed in (False, True):
        start = time.perf_counter()
        for _ in range(count):
            frame = frame_parts("data", value)
            data = b"".join(sealing.sealed_parts(KEY, frame) if sealed else frame)
        encoded = time.perf_counter()
        for _ in range(count):
            decode_frame(sealing.unseal(KEY, data) if sealed else data, max_size=MAX_MESSAGE)
        decoded = time.perf_counter()
        name = "sealed" if sealed else "framed"
        times[f"{name}_send_us"] = (encoded - start) / count * 1e6
        times[f"{name}_receive_us"] = (decoded - encoded) / count * 1e6
    return times


# ----------------------------------------------------------------------- driver


@contextlib.contextmanager
def _private_dir() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="pyproof-bench-")
    os.chmod(directory, 0o700)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class _Addresses:
    """Fresh listen addresses for one transport (ipc paths in a private directory)."""

    def __init__(self, transport: str, directory: str) -> None:
        self.transport = transport
        self._directory = directory
        self._count = 0

    def next(self) -> str:
        self._count += 1
        if self.transport == "tcp":
            return "tcp://127.0.0.1:0"
        return f"ipc://{self._directory}/bench-{self._count}.sock"


def _counts(plan: Plan, payload: Payload) -> tuple[int, int]:
    if payload.size < MIB:
        return plan.rounds_small, plan.messages_small
    return plan.rounds_large, plan.messages_large


def run_core(plan: Plan, emit: Callable[[str], None], results: dict[str, Any]) -> None:
    emit("\n== packet grants of the pure query core (no socket, no codec; CPU of one thread) ==")
    emit(f"{'workers':<10}{'basic':>22}{'adaptive':>22}")
    results["core"] = []
    for workers in (*plan.workers, 1000):
        row = {kind: core_grants(workers, kind, plan.core_grants)
               for kind in ("basic", "adaptive")}
        emit(f"{workers:<10}" + "".join(f"{row[k]['grants_per_s']:>10.0f}/s"
                                        f"{row[k]['cpu_us']:>6.1f} us"
                                        for k in ("basic", "adaptive")))
        results["core"].append({"workers": workers, **row})


def run_grants(plan: Plan, emit: Callable[[str], None] = print) -> dict[str, Any]:
    """Only the packet grant rows: the pure core, then the real master data plane."""
    results: dict[str, Any] = {"grants": []}
    run_core(plan, emit, results)
    peer = Peer()
    try:
        with _private_dir() as directory:
            _run_grants(peer, plan, directory, results, emit)
    finally:
        peer.close()
    return results


def _run_grants(peer: Peer, plan: Plan, directory: str, results: dict[str, Any],
                emit: Callable[[str], None]) -> None:
    emit("\n== packet grants: the real master data plane (ipc, as in a session), "
         "simulated workers in another process ==")
    emit(f"{'workers':<10}{'grants/s':>10}{'requests/s':>12}{'median request':>16}"
         f"{'master CPU':>18}")
    for workers in plan.workers:
        row = grants(peer, directory, workers, plan.grant_seconds)
        emit(f"{workers:<10}{row['grants_per_s']:>10.0f}{row['requests_per_s']:>12.0f}"
             f"{row['median_us']:>13.0f} us{row['master_cpu_us']:>10.0f} us/grant")
        results["grants"].append({"workers": workers, **row})


def run(plan: Plan, emit: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every measurement, printing tables as it goes; return the numbers."""
    results: dict[str, Any] = {"codec": [], "latency": [], "throughput": [], "grants": []}
    emit("\n== framing and sealing alone (no socket; a join stands for the send's copy) ==")
    emit(f"{'payload':<16}{'framed send':>14}{'receive':>12}{'sealed send':>14}{'receive':>12}")
    for payload in PAYLOADS:
        cost = codec(payload, max(4, _counts(plan, payload)[1] // 4))
        emit(f"{payload.name:<16}{cost['framed_send_us']:>11.0f} us"
             f"{cost['framed_receive_us']:>9.0f} us{cost['sealed_send_us']:>11.0f} us"
             f"{cost['sealed_receive_us']:>9.0f} us")
        results["codec"].append({"payload": payload.name, **cost})
    peer = Peer()
    try:
        with _private_dir() as directory:
            for transport in ("tcp", "ipc"):
                _run_transport(peer, plan, _Addresses(transport, directory), results, emit)
            run_core(plan, emit, results)
            _run_grants(peer, plan, directory, results, emit)
    finally:
        peer.close()
    return results


def _latency_cell(row: dict[str, float], bare: dict[str, float]) -> str:
    return (f"{row['median_us']:>9.0f} us ({row['p95_us']:>6.0f})"
            f"{row['median_us'] / bare['median_us']:>5.2f}x")


def _throughput_cell(row: dict[str, float], bare: dict[str, float]) -> str:
    return (f"{row['msgs_per_s']:>8.0f}/s {row['mb_per_s']:>5.0f} MB/s"
            f"{row['mb_per_s'] / bare['mb_per_s']:>5.2f}x")


def _run_transport(peer: Peer, plan: Plan, addresses: _Addresses, results: dict[str, Any],
                   emit: Callable[[str], None]) -> None:
    transport = addresses.transport
    tables = (("latency", "req/rep echo, median round trip (p95)", latency, 0, _latency_cell),
              ("throughput", "push/pull throughput", throughput, 1, _throughput_cell))
    for key, title, measure, which, cell in tables:
        emit(f"\n== {transport}: {title} and ratio to bare ==")
        emit(f"{'payload':<16}" + "".join(f"{mode:>24}" for mode in MODES))
        for payload in PAYLOADS:
            count = _counts(plan, payload)[which]
            row = {mode: measure(peer, addresses.next(), payload, count, mode) for mode in MODES}
            emit(f"{payload.name:<16}" + "".join(cell(row[m], row["bare"]) for m in MODES))
            results[key].append({"transport": transport, "payload": payload.name, **row})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyproof.bench.transport", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON at the end")
    parser.add_argument("--grants", action="store_true",
                        help="only the packet grant rows (pure core, then the real master)")
    parser.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:  # the other end, started by Peer
        _peer_main()
        return 0
    plan = QUICK if args.quick else Plan()
    start = time.perf_counter()
    print(f"pyproof transport benchmark (pynng {pynng.__version__}, {os.cpu_count()} CPUs)")
    results = run_grants(plan) if args.grants else run(plan)
    print(f"\ntotal {time.perf_counter() - start:.1f} s")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
