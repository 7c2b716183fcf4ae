"""A large packet is read and processed in steps of a few MB (datasets/steps.py): every
entry exactly once, step edges on basket boundaries, exact results; and a worker keeps
freed memory for its next steps instead of faulting fresh pages in."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pynng
import uproot
from hypothesis import given
from hypothesis import strategies as st

import pyproof
from pyproof.actors import worker_loop
from pyproof.datasets import steps
from pyproof.datasets.steps import READ_STEP_BYTES, read_steps, step_plan
from pyproof.query.spec import QuerySpec
from pyproof.transport.frames import decode_frame, encode_frame
from tests.test_worker_loop import serve

BASKET = 10_000


def write(path, n: int) -> str:
    """A TTree of four flat float64/int64 branches (32 bytes an entry), 10k-entry baskets."""
    with uproot.recreate(path) as f:
        for start in range(0, n, BASKET):
            x = np.arange(start, min(start + BASKET, n), dtype=np.int64)
            chunk = {"a": x, "b": x * 2, "c": x * 3, "d": x * 0.5}
            if start == 0:
                f.mktree("t", {k: v.dtype for k, v in chunk.items()})
            f["t"].extend(chunk)
    return str(path)


@given(start=st.integers(0, 1000), length=st.integers(0, 5000), step=st.integers(1, 700),
       basket=st.integers(1, 400))
def test_read_steps_cover_the_packet_once_in_order_and_stay_near_the_step(start, length,
                                                                         step, basket):
    stop = start + length
    boundaries = list(range(0, stop + basket, basket))
    steps = read_steps(start, stop, step, boundaries)
    assert [e for a, b in steps for e in range(a, b)] == list(range(start, stop))
    assert all(b > a for a, b in steps)
    # on_boundary keeps a step within 1.5 of the size asked, the rest rule adds 1.5 at most
    assert all(b - a <= 2.25 * step for a, b in steps)
    assert all(b - a >= step // 2 for a, b in steps[:-1])


def test_without_a_step_the_packet_is_one_read():
    assert read_steps(5, 100, None) == [(5, 100)]
    assert read_steps(5, 100, 1000) == [(5, 100)]
    assert read_steps(5, 5, 10) == []


def test_the_step_follows_the_branches_bytes_and_its_edges_fall_on_baskets(tmp_path):
    path = write(tmp_path / "f.root", 100_000)
    with uproot.open(path) as f:
        tree = f["t"]
        step, boundaries = step_plan(tree, ["a", "d"], step_bytes=160_000)
        per_entry = sum(tree[b].uncompressed_bytes for b in ("a", "d")) / tree.num_entries
        assert step == int(160_000 / per_entry) and 9_000 < step < 10_000
        assert boundaries == list(range(0, 100_001, BASKET))
        steps = read_steps(3, 100_000, step, boundaries)
        assert steps[0] == (3, 10_000) and all(a % BASKET == 0 for a, _ in steps[1:])
        # unknown sizes (no branch list, an expression): one read
        assert step_plan(tree, None) == (None, [])
        assert step_plan(tree, ["a * 2"]) == (None, [])


def test_a_worker_reads_a_large_packet_in_steps_and_its_outputs_are_exact(tmp_path):
    n = 100_000
    path = write(tmp_path / "f.root", n)
    packet = {"packet_id": 0, "element": 0, "entry_start": 1_000, "entry_stop": n}
    replies = [encode_frame("packet", {"packet": packet, "path": path, "tree": "t"}),
               encode_frame("done", {}), encode_frame("ack", {"accepted": True})]
    address = f"ipc://{tmp_path}/master.ipc"
    stop, seen = threading.Event(), []
    server = threading.Thread(target=serve, args=(address, replies, stop, seen), daemon=True)
    server.start()
    with pynng.Req0(recv_timeout=5000, send_timeout=5000, resend_time=-1) as sock:
        sock.dial(address, block=False)
        loop = worker_loop.WorkerLoop(
            worker_id="worker-0", session_id="s", query_id="q", socket=sock,
            spec=QuerySpec(selector="tests.sample_selectors:StepCounts", dataset=((path, "t"),),
                           branches=("a", "b", "c", "d")),
            read_step_bytes=32 * 20_000)  # about 20k entries a step
        loop.start()
        assert loop.join(30), "the worker loop did not end"
    stop.set()
    server.join(5)
    frames = [decode_frame(raw) for raw in seen]
    assert [f.type for f in frames] == ["next", "next", "outputs"]
    out = frames[2].payload["outputs"]
    x = np.arange(1_000, n)
    assert out["n"] == n - 1_000 and out["sum_a"] == int(x.sum())
    assert out["sum_d"] == float(np.sum(x * 0.5))
    ranges = sorted((int(k.split("-")[0]), int(k.split("-")[1])) for k in out["ranges"])
    assert out["calls"] == len(ranges) == 5 and set(out["ranges"].values()) == {1}
    assert ranges[0] == (1_000, 20_000) and all(a % BASKET == 0 for a, _ in ranges[1:])
    report = frames[1].payload["processed"] or frames[2].payload["processed"]
    assert report[0]["entries"] == n - 1_000 and report[0]["bytes"] > 0
    assert steps._kept  # a data query made this process keep freed memory


def test_a_lite_query_of_whole_file_packets_is_read_in_steps_and_exact(tmp_path):
    """Whole-file packets (the adaptive packetizer's while work is plentiful) of 25.6 MB of
    branches: two steps each at the default step size, one packet each."""
    n = 800_000
    assert 32 * n > 1.5 * READ_STEP_BYTES
    paths = [write(tmp_path / f"f{i}.root", n) for i in range(2)]
    with pyproof.connect("lite://?workers=2") as session:
        result = session.process("tests.sample_selectors:StepCounts",
                                 dataset=[f"{p}:t" for p in paths], packetizer="file",
                                 progress=False)
    expected = {"n": 0, "sum_a": 0, "sum_d": 0.0}
    for path in paths:  # a sequential uproot loop
        with uproot.open(path) as f:
            arrays = f["t"].arrays(["a", "d"], library="np")
        expected["n"] += len(arrays["a"])
        expected["sum_a"] += int(arrays["a"].sum())
        expected["sum_d"] += float(arrays["d"].sum())
    out = result.outputs
    assert {k: out[k] for k in expected} == expected
    assert result.stats.packets == 2 and result.stats.entries == 2 * n
    assert out["calls"] == 4  # two steps a file (before: one call a packet)
    assert sum(out["ranges"].values()) == 4 and all(
        int(k.split("-")[0]) % BASKET == 0 for k in out["ranges"])


FAULTS = textwrap.dedent("""
    import resource, sys
    import numpy as np
    if sys.argv[1] == "keep":
        from pyproof.datasets.steps import keep_freed_memory
        assert keep_freed_memory()
    def rounds(n):
        for _ in range(n):  # three 8 MB arrays at once, as a step's arrays and temporaries
            arrays = [np.ones(1 << 20) for _ in range(3)]
            del arrays
    rounds(2)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rounds(20)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def test_a_worker_keeps_freed_memory_so_its_next_steps_do_not_fault_fresh_pages():
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True,
                             text=True, timeout=60, check=True)
        return int(out.stdout)

    default, kept = faults("default"), faults("keep")
    # glibc's default gives memory back after each round: about 1k pages faulted in a round
    assert default > 10_000, default
    assert kept < 200, (default, kept)
