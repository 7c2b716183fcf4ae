"""Benchmark: the data path through pyproof frames vs bare pynng, and packet grants/s.

    python -m pyproof.bench.transport [--quick] [--json]

In one run, for ``tcp://127.0.0.1`` and ``ipc://`` (in a private temp dir,
removed afterwards):

- round-trip latency of req/rep with a 1 KiB and a 10 MiB payload, echoed
  back (so a round trip carries the payload both ways);
- push/pull throughput with 1 KiB and 10 MiB messages;

each bare (bytes in, bytes out) and framed (:func:`encode_frame` /
:func:`decode_frame` on both ends), with the framed/bare ratio. Then the
packet grants per second one single-threaded rep server sustains, handing out
packets from a real ``basic`` packetizer to 2, 8 and 32 worker threads that
each loop on NEXT-like requests (report the last packet, get the next).

Both ends run as threads of this process, so Python's GIL is shared between
them: compare rows with each other, not with numbers from separate processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pynng

from pyproof.packetizer import WorkRange, make_packetizer
from pyproof.transport.frames import decode_frame, encode_frame

KIB = 1024
MIB = 1024 * 1024
MAX_MESSAGE = 64 * MIB
TIMEOUT_MS = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """Loop counts: bounded, so the whole run stays well under a minute."""

    rounds_small: int = 2000
    rounds_large: int = 20
    messages_small: int = 20_000
    messages_large: int = 40
    grant_seconds: float = 1.5
    workers: tuple[int, ...] = (2, 8, 32)


QUICK = Plan(
    rounds_small=300,
    rounds_large=5,
    messages_small=3000,
    messages_large=8,
    grant_seconds=0.4,
)


def _socket(kind: type[pynng.Socket]) -> pynng.Socket:
    return kind(recv_timeout=TIMEOUT_MS, send_timeout=TIMEOUT_MS, recv_max_size=MAX_MESSAGE)


def _listen(sock: pynng.Socket, url: str) -> str:
    """Listen; for tcp port 0 return the real address (nng reports the port byte-swapped)."""
    listener = sock.listen(url)
    if url.startswith("tcp://") and url.endswith(":0"):
        return f"{url[:-2]}:{socket.ntohs(listener.local_address.port)}"
    return url


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


def _thread(target: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _join(threads: list[threading.Thread], errors: list[BaseException]) -> None:
    for thread in threads:
        thread.join(timeout=TIMEOUT_MS / 1000 * 2)
        if thread.is_alive():
            raise TimeoutError("a benchmark thread did not finish in time")
    if errors:
        raise errors[0]


# ----------------------------------------------------------------------- latency


def latency(url: str, size: int, rounds: int, framed: bool) -> dict[str, float]:
    """Req/rep echo round trips: median and p95 in microseconds."""
    payload = os.urandom(size)
    errors: list[BaseException] = []
    warmup = max(2, rounds // 20)
    with _socket(pynng.Rep0) as server, _socket(pynng.Req0) as client:
        address = _listen(server, url)

        def serve() -> None:
            for _ in range(rounds + warmup):
                data = server.recv()
                if framed:
                    frame = decode_frame(data, max_size=MAX_MESSAGE)
                    data = encode_frame("echo", frame.payload, request_id=frame.request_id)
                server.send(data)

        thread = _thread(serve, errors)
        client.dial(address, block=True)
        times = []
        for i in range(rounds + warmup):
            start = time.perf_counter()
            if framed:
                client.send(encode_frame("echo", payload, request_id=str(i)))
                reply = decode_frame(client.recv(), max_size=MAX_MESSAGE).payload
            else:
                client.send(payload)
                reply = client.recv()
            times.append(time.perf_counter() - start)
            if len(reply) != size:
                raise AssertionError("echo came back with the wrong size")
        _join([thread], errors)
    times = sorted(times[warmup:])
    return {
        "median_us": statistics.median(times) * 1e6,
        "p95_us": times[int(0.95 * (len(times) - 1))] * 1e6,
    }


# ----------------------------------------------------------------------- throughput


def throughput(url: str, size: int, count: int, framed: bool) -> dict[str, float]:
    """Push/pull one way: messages/s and MB/s, from the first send to the last receive."""
    payload = os.urandom(size)
    errors: list[BaseException] = []
    done: list[float] = []
    with _socket(pynng.Pull0) as receiver, _socket(pynng.Push0) as sender:
        address = _listen(receiver, url)

        def receive() -> None:
            received = 0
            for _ in range(count):
                data = receiver.recv()
                if framed:
                    data = decode_frame(data, max_size=MAX_MESSAGE).payload
                received += len(data)
            done.append(time.perf_counter())
            if received != size * count:
                raise AssertionError("bytes lost")

        sender.dial(address, block=True)
        thread = _thread(receive, errors)
        start = time.perf_counter()
        for i in range(count):
            if framed:
                sender.send(encode_frame("data", payload, request_id=str(i)))
            else:
                sender.send(payload)
        _join([thread], errors)
    seconds = done[0] - start
    return {"msgs_per_s": count / seconds, "mb_per_s": count * size / seconds / 1e6}


# ----------------------------------------------------------------------- grants


def grants(url: str, workers: int, seconds: float) -> dict[str, float]:
    """Packet grants/s of one single-threaded rep server with a real packetizer."""
    work = [WorkRange(element=e, entry_start=0, entry_stop=10**9) for e in range(16)]
    packetizer = make_packetizer("basic", work, workers=workers, packet_entries=1000)
    errors: list[BaseException] = []
    stop_workers = threading.Event()
    stop_server = threading.Event()
    granted = [0]
    server_cpu = [0.0]  # the server thread's CPU seconds, updated after every request
    latencies: list[float] = []

    with _socket(pynng.Rep0) as server:
        server.recv_timeout = 100
        address = _listen(server, url)

        def serve() -> None:
            known: set[str] = set()
            while not stop_server.is_set():
                try:
                    frame = decode_frame(server.recv())
                except pynng.Timeout:
                    continue
                request = frame.payload
                worker, now = request["worker"], time.monotonic()
                if worker not in known:
                    packetizer.add_worker(worker, now)
                    known.add(worker)
                last = request["done"]
                if last is not None:
                    packetizer.packet_processed(worker, last, now, seconds=0.001)
                    packetizer.accept_output(worker, frozenset([last]))
                packet = packetizer.next_packet(worker, now)
                reply = None
                if packet is not None:
                    granted[0] += 1
                    reply = {
                        "packet_id": packet.packet_id,
                        "element": packet.element,
                        "entry_start": packet.entry_start,
                        "entry_stop": packet.entry_stop,
                    }
                server.send(encode_frame("packet", reply, request_id=frame.request_id))
                server_cpu[0] = time.thread_time()

        def work_loop(name: str) -> None:
            with _socket(pynng.Req0) as sock:
                sock.dial(address, block=True)
                last = None
                n = 0
                while not stop_workers.is_set():
                    n += 1
                    start = time.perf_counter()
                    sock.send(
                        encode_frame("next", {"worker": name, "done": last}, request_id=str(n))
                    )
                    packet = decode_frame(sock.recv()).payload
                    latencies.append(time.perf_counter() - start)
                    if packet is None:
                        return
                    last = packet["packet_id"]

        server_thread = _thread(serve, errors)
        threads = [_thread(lambda i=i: work_loop(f"worker-{i}"), errors) for i in range(workers)]
        time.sleep(0.1)  # let every worker connect before the clock starts
        before, cpu_before, start = granted[0], server_cpu[0], time.perf_counter()
        time.sleep(seconds)
        after, cpu_after, elapsed = granted[0], server_cpu[0], time.perf_counter() - start
        stop_workers.set()
        try:
            _join(threads, errors)
        finally:
            stop_server.set()
            _join([server_thread], errors)
    packetizer.validate()
    latencies.sort()
    cpu_per_grant = (cpu_after - cpu_before) / max(1, after - before)
    return {
        "grants_per_s": (after - before) / elapsed,
        "median_us": statistics.median(latencies) * 1e6,
        "server_cpu_us": cpu_per_grant * 1e6,
    }


# ----------------------------------------------------------------------- codec


def codec(size: int, count: int) -> dict[str, float]:
    """encode_frame and decode_frame alone (no socket): microseconds per message."""
    payload = os.urandom(size)
    start = time.perf_counter()
    for i in range(count):
        data = encode_frame("data", payload, request_id=str(i))
    encoded = time.perf_counter()
    for _ in range(count):
        decode_frame(data, max_size=MAX_MESSAGE)
    decoded = time.perf_counter()
    return {
        "encode_us": (encoded - start) / count * 1e6,
        "decode_us": (decoded - encoded) / count * 1e6,
    }


# ----------------------------------------------------------------------- driver


@contextmanager
def _private_dir() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="pyproof-bench-")
    os.chmod(directory, 0o700)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _size_name(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


def run(plan: Plan, emit: Callable[[str], None] = print) -> dict[str, object]:
    """Run every measurement, printing a table as it goes; return the numbers."""
    results: dict[str, object] = {"latency": [], "throughput": [], "grants": []}
    results["codec"] = []
    emit(f"\n== codec alone (no socket) ==\n{'frame':<16}{'encode':>14}{'decode':>14}")
    for size, count in ((KIB, plan.messages_small // 4), (10 * MIB, plan.messages_large // 2)):
        cost = codec(size, count)
        emit(f"{_size_name(size):<16}{cost['encode_us']:>11.0f} us{cost['decode_us']:>11.0f} us")
        results["codec"].append({"size": size, **cost})
    with _private_dir() as directory:
        for transport in ("tcp", "ipc"):
            addresses = _Addresses(transport, directory)
            emit(f"\n== {transport} ==")
            emit(
                f"{'req/rep echo':<16}{'bare median':>14}{'framed median':>15}"
                f"{'ratio':>7}{'bare p95':>12}{'framed p95':>12}"
            )
            for size, rounds in ((KIB, plan.rounds_small), (10 * MIB, plan.rounds_large)):
                bare = latency(addresses.next(), size, rounds, framed=False)
                framed = latency(addresses.next(), size, rounds, framed=True)
                emit(
                    f"{_size_name(size):<16}{bare['median_us']:>11.0f} us"
                    f"{framed['median_us']:>12.0f} us"
                    f"{framed['median_us'] / bare['median_us']:>7.2f}"
                    f"{bare['p95_us']:>9.0f} us{framed['p95_us']:>9.0f} us"
                )
                results["latency"].append(
                    {"transport": transport, "size": size, "bare": bare, "framed": framed}
                )
            emit(f"{'push/pull':<16}{'bare':>22}{'framed':>22}{'ratio':>7}")
            for size, count in ((KIB, plan.messages_small), (10 * MIB, plan.messages_large)):
                bare = throughput(addresses.next(), size, count, framed=False)
                framed = throughput(addresses.next(), size, count, framed=True)
                emit(
                    f"{_size_name(size):<16}"
                    f"{bare['msgs_per_s']:>9.0f} msg/s {bare['mb_per_s']:>5.0f} MB/s"
                    f"{framed['msgs_per_s']:>9.0f} msg/s {framed['mb_per_s']:>5.0f} MB/s"
                    f"{framed['mb_per_s'] / bare['mb_per_s']:>7.2f}"
                )
                results["throughput"].append(
                    {"transport": transport, "size": size, "bare": bare, "framed": framed}
                )
        emit("\n== packet grants: one single-threaded rep server, basic packetizer, framed ==")
        emit(
            f"{'workers':<10}{'tcp grants/s':>14}{'median':>11}{'server CPU':>16}"
            f"{'ipc grants/s':>14}{'median':>11}{'server CPU':>16}"
        )
        tcp, ipc = _Addresses("tcp", directory), _Addresses("ipc", directory)
        for workers in plan.workers:
            over_tcp = grants(tcp.next(), workers, plan.grant_seconds)
            over_ipc = grants(ipc.next(), workers, plan.grant_seconds)
            emit(
                f"{workers:<10}{over_tcp['grants_per_s']:>14.0f}"
                f"{over_tcp['median_us']:>8.0f} us{over_tcp['server_cpu_us']:>7.0f} us/grant"
                f"{over_ipc['grants_per_s']:>14.0f}{over_ipc['median_us']:>8.0f} us"
                f"{over_ipc['server_cpu_us']:>7.0f} us/grant"
            )
            results["grants"].append({"workers": workers, "tcp": over_tcp, "ipc": over_ipc})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyproof.bench.transport", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON at the end")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    start = time.perf_counter()
    print(f"pyproof transport benchmark (pynng {pynng.__version__}, {os.cpu_count()} CPUs)")
    results = run(plan)
    print(f"\ntotal {time.perf_counter() - start:.1f} s")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
