"""Benchmark: a 10 MiB numpy array echoed over nng, framed (out-of-band buffers) vs bare bytes.

    python -m pyproof.bench.array_echo [--mib 10] [--rounds 30] [--inline]

`--inline` forces arrays through CBOR (the path before out-of-band buffers),
for comparison. Both ends run in this process (they share the GIL, which
inflates the framed figure); ipc socket in a private temporary directory.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time

import numpy as np
import pynng

from pyproof.transport import frames


def echo(address: str, message, framed: bool, rounds: int) -> float:
    """Median round-trip milliseconds."""
    stop = threading.Event()

    def serve() -> None:
        with pynng.Rep0(listen=address, recv_timeout=200) as rep:
            while not stop.is_set():
                try:
                    data = rep.recv()
                except pynng.Timeout:
                    continue
                if framed:
                    data = frames.encode_frame("echo", frames.decode_frame(data).payload)
                rep.send(data)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    times = []
    try:
        with pynng.Req0(recv_timeout=10_000) as req:
            req.dial(address, block=False)
            for _ in range(rounds):
                t0 = time.perf_counter()
                if framed:
                    req.send(frames.encode_frame("echo", {"a": message}))
                    frames.decode_frame(req.recv())
                else:
                    req.send(message)
                    req.recv()
                times.append(time.perf_counter() - t0)
    finally:
        stop.set()
        server.join(5)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyproof.bench.array_echo")
    parser.add_argument("--mib", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--inline", action="store_true", help="arrays through CBOR")
    args = parser.parse_args(argv)
    if args.inline:
        frames.OOB_THRESHOLD = 1 << 62
    array = np.random.default_rng(1).random(int(args.mib * 1024 * 1024 / 8))
    directory = tempfile.mkdtemp(prefix="pyproof-bench-")
    try:
        bare = echo(f"ipc://{directory}/bare.ipc", array.tobytes(), False, args.rounds)
        framed = echo(f"ipc://{directory}/framed.ipc", array, True, args.rounds)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    mode = "inline CBOR" if args.inline else "out-of-band"
    print(f"{args.mib:g} MiB float64 array echo over ipc: bare bytes {bare:.1f} ms, "
          f"framed ndarray ({mode}) {framed:.1f} ms, ratio {framed / bare:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
