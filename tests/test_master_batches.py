"""Batched grants on the real master data plane (MasterPlane, real nng sockets).

Workers here are bare Req0 sockets speaking the worker protocol, so each test
controls exactly what a worker holds: a fast worker gets several short
packets per PACKET ("batch"), every one is merged exactly once, and a worker
lost holding a batch has every range of it requeued once.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pynng
import pytest

from pyproof.actors import protocol as p
from pyproof.actors.master_plane import MasterPlane
from pyproof.actors.worker_loop import _batch
from pyproof.packetizer.common import BATCH_SECONDS, MAX_BATCH
from pyproof.query.spec import QuerySpec
from pyproof.transport.frames import decode_frame, encode_frame
from tests.conftest import data_file

CYCLES = 100_000
PACKET = 100
BATCH = min(MAX_BATCH, round(BATCH_SECONDS / 0.001))  # of 1 ms packets


@pytest.fixture
def plane(tmp_path):
    address = f"ipc://{tmp_path}/master.ipc"
    plane = MasterPlane(session_id="s1", address=address)
    for i in range(2):
        plane.worker_joined(f"worker-{i}#{os.getpid()}")
    plane.start_query("q1", QuerySpec(
        selector="m:S", cycles=CYCLES, packetizer="basic",
        packetizer_params={"packet_entries": PACKET},
        client_address=f"ipc://{tmp_path}/nobody.ipc"))
    try:
        yield plane, address
    finally:
        plane.close()


class BareWorker:
    """One worker's side of the protocol; packets 'take' 1 ms each by its reports."""

    def __init__(self, address: str, index: int) -> None:
        self.me = {"worker": f"worker-{index}", "pid": os.getpid(), "query": "q1"}
        self.sock = pynng.Req0(dial=address, recv_timeout=10_000, send_timeout=5000)
        self.reports: list[dict[str, Any]] = []
        self.held: list[int] = []
        self.sum = 0  # what the Cycles selector would output: the sum of the cycle numbers
        self.batches: list[int] = []  # packets per PACKET reply

    def request(self, kind: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.sock.send(encode_frame(kind, {**self.me, **payload}))
        frame = decode_frame(self.sock.recv())
        return frame.type, frame.payload

    def next(self) -> tuple[str, list[dict[str, Any]]]:
        reports, self.reports = self.reports, []
        kind, body = self.request(p.NEXT, {"processed": reports})
        if kind != p.PACKET:
            return kind, []
        batch = [body["packet"], *(m["packet"] for m in body.get("batch", ()))]
        self.batches.append(len(batch))
        return kind, batch

    def process(self, packet: dict[str, Any]) -> None:
        start, stop = packet["entry_start"], packet["entry_stop"]
        self.sum += sum(range(start, stop))
        self.held.append(packet["packet_id"])
        self.reports.append({"packet": packet["packet_id"], "entries": stop - start,
                             "seconds": (stop - start) * 1e-5})

    def flush(self) -> str:
        kind, _ = self.request(p.OUTPUTS, {"packets": self.held, "outputs": {"sum": self.sum},
                                           "processed": self.reports})
        self.held, self.reports, self.sum = [], [], 0
        return kind

    def close(self) -> None:
        self.sock.close()


def run_to_the_end(worker: BareWorker, plane: MasterPlane) -> None:
    deadline = time.monotonic() + 60
    while plane.query.core.busy and time.monotonic() < deadline:
        kind, batch = worker.next()
        for packet in batch:
            worker.process(packet)
        if worker.held and (kind in (p.DONE, p.WAIT) or len(worker.held) > 50):
            assert worker.flush() == p.ACK
        elif kind not in (p.PACKET, p.WAIT, p.DONE):
            raise AssertionError(f"the master answered {kind}")
    assert plane.query.state == "finished", plane.query.state


def test_short_packets_are_granted_in_batches_and_every_one_is_merged_exactly_once(plane):
    master, address = plane
    workers = [BareWorker(address, i) for i in range(2)]
    try:
        for w in workers:  # the first packet measures the worker: one packet
            kind, batch = w.next()
            assert kind == p.PACKET and len(batch) == 1
            w.process(batch[0])
        kind, batch = workers[0].next()  # 1 ms packets, plenty of work left: a batch
        assert kind == p.PACKET and len(batch) == BATCH
        ranges = [(b["entry_start"], b["entry_stop"]) for b in batch]
        assert len({b["packet_id"] for b in batch}) == len(batch)
        assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        for packet in batch:
            workers[0].process(packet)
        assert workers[0].flush() == p.ACK
        workers[1].flush()
        run_to_the_end(workers[1], master)
        run = master.query
        assert run.outputs == {"sum": CYCLES * (CYCLES - 1) // 2}
        assert run.core.delivered == CYCLES and run.core.duplicates == 0
        assert run.core.batches >= 2 and run.core.stats(0.0)["packet_batches"] >= 2
        # the end-game goes one packet at a time: the last answers were single packets
        assert workers[1].batches[-1] == 1
        assert max(workers[1].batches) == BATCH
    finally:
        for w in workers:
            w.close()


def test_a_worker_lost_holding_a_batch_has_each_of_its_ranges_requeued_once(plane):
    master, address = plane
    w0, w1 = BareWorker(address, 0), BareWorker(address, 1)
    try:
        _, first = w0.next()
        w0.process(first[0])
        _, batch = w0.next()  # processed the first, holds a batch it did not start
        assert len(batch) == BATCH
        w0.process(batch[0])  # one of the batch processed, its outputs never sent
        master.worker_lost(f"worker-0#{os.getpid()}", "killed by signal SIGKILL")
        requeued = master.query.core.requeued
        held = sorted((x["entry_start"], x["entry_stop"]) for x in [*first, *batch])
        got = sorted((r["entry_start"], r["entry_stop"]) for r in requeued)
        entries = [e for a, b in got for e in range(a, b)]
        assert len(entries) == len(set(entries)), "a range was requeued twice"
        assert set(entries) == {e for a, b in held for e in range(a, b)}
        assert all(r["worker"] == f"worker-0#{os.getpid()}" for r in requeued)
        # its late outputs are refused: the master declared it lost
        assert w0.flush() == p.ABORT
        run_to_the_end(w1, master)
        run = master.query
        assert run.outputs == {"sum": CYCLES * (CYCLES - 1) // 2}
        assert run.core.delivered == CYCLES and run.core.duplicates == 0
        assert run.core.requeued == requeued  # nothing else was lost
    finally:
        w0.close()
        w1.close()


def test_a_batch_packet_of_the_same_file_takes_the_file_fields_of_the_one_before():
    def packet(i: int, element: int) -> dict[str, Any]:
        return {"packet_id": i, "element": element, "entry_start": i, "entry_stop": i + 1}

    reply = {"kind": p.PACKET, "packet": packet(1, 0), "path": "/a.root", "tree": "t",
             "metadata": {"x": 1}, "accepted": True,
             "batch": [{"packet": packet(2, 0)},
                       {"packet": packet(3, 1), "path": "/b.root", "tree": "t"},
                       {"packet": packet(4, 1)}]}
    batch = _batch(reply)
    assert [b["packet"]["packet_id"] for b in batch] == [1, 2, 3, 4]
    assert batch[1] == {"packet": packet(2, 0), "path": "/a.root", "tree": "t",
                        "metadata": {"x": 1}}
    assert batch[2]["path"] == batch[3]["path"] == "/b.root" and "metadata" not in batch[3]


def test_a_data_batch_names_its_file_once_and_the_worker_gets_it_for_every_packet(tmp_path):
    """A real ROOT file: packets of the same file after the first carry no file fields on
    the wire, and the worker's queue has them all (worker_loop._batch)."""
    path = data_file("uproot-Zmumu.root")
    address = f"ipc://{tmp_path}/master.ipc"
    plane = MasterPlane(session_id="s1", address=address)
    plane.worker_joined(f"worker-0#{os.getpid()}")
    plane.start_query("q1", QuerySpec(
        selector="m:S", dataset=((path, "events"),), packetizer="basic",
        packetizer_params={"packet_entries": 4},
        client_address=f"ipc://{tmp_path}/nobody.ipc"))
    worker = BareWorker(address, 0)
    try:
        _, first = worker.next()
        worker.reports.append({"packet": first[0]["packet_id"], "entries": 4,
                               "seconds": 0.004})  # 1000 entries/s: 4 ms packets
        worker.sock.send(encode_frame(p.NEXT, {**worker.me, "processed": worker.reports}))
        frame = decode_frame(worker.sock.recv())
        assert frame.type == p.PACKET and frame.payload["path"] == path
        more = frame.payload["batch"]
        assert len(more) == int(BATCH_SECONDS / 0.004) - 1  # 4 ms packets: 30 ms of them
        assert all(set(m) == {"packet"} for m in more)
        batch = _batch({"kind": frame.type, **frame.payload})
        assert all(b["path"] == path and b["tree"] == "events" for b in batch)
    finally:
        worker.close()
        plane.close()


def test_only_the_grant_that_leaves_nothing_to_hand_out_says_last(tmp_path):
    address = f"ipc://{tmp_path}/master.ipc"
    plane = MasterPlane(session_id="s1", address=address)
    plane.worker_joined(f"worker-0#{os.getpid()}")
    plane.start_query("q1", QuerySpec(selector="m:S", cycles=250, packetizer="basic",
                                      packetizer_params={"packet_entries": 100},
                                      client_address=f"ipc://{tmp_path}/nobody.ipc"))
    worker = BareWorker(address, 0)
    try:
        lasts = []
        for _ in range(50):  # ever smaller packets at the end (no reports: no batches)
            kind, reply = worker.request(p.NEXT, {"processed": []})
            if kind != p.PACKET:
                break
            lasts.append(reply.get("last", False))
        assert kind == p.WAIT and reply == {"flush": True}  # nothing left: outputs, please
        assert len(lasts) > 2 and lasts[-1] is True and not any(lasts[:-1]), lasts
    finally:
        worker.sock.close()
        plane.close()
