"""A worker facing a broken or hostile master ends its query cleanly; it never hangs."""

from __future__ import annotations

import contextlib
import threading

import pynng

from pyproof.actors import worker_loop
from pyproof.query.spec import QuerySpec
from pyproof.transport.frames import encode_frame


def serve(address: str, replies: list[bytes], stop: threading.Event,
          seen: list[bytes]) -> None:
    with contextlib.suppress(pynng.NNGException), \
            pynng.Rep0(listen=address, recv_timeout=200) as rep:
        for reply in replies:
            while not stop.is_set():
                try:
                    seen.append(rep.recv())
                    break
                except pynng.Timeout:
                    continue
            if stop.is_set():
                return
            rep.send(reply)
        stop.wait(20)  # the last reply is delivered before the socket closes


def run_against(tmp_path, replies: list[bytes], *, selector: str = "Cycles",
                seen: list[bytes] | None = None, die=None) -> worker_loop.WorkerLoop:
    """A worker loop against a fake master that answers `replies` in order."""
    address = f"ipc://{tmp_path}/master.ipc"
    stop = threading.Event()
    server = threading.Thread(target=serve, args=(address, replies, stop,
                                                  [] if seen is None else seen), daemon=True)
    server.start()
    with pynng.Req0(recv_timeout=2000, send_timeout=2000, resend_time=-1) as sock:
        sock.dial(address, block=False)
        loop = worker_loop.WorkerLoop(
            worker_id="worker-0", session_id="s", query_id="q", socket=sock, die=die,
            spec=QuerySpec(selector=f"tests.sample_selectors:{selector}", cycles=1))
        loop.start()
        assert loop.join(20), "the worker loop did not end"
    stop.set()
    server.join(5)
    return loop


def test_garbage_from_the_master_ends_the_query_cleanly(tmp_path):
    loop = run_against(tmp_path, [b"\x00\x01garbage"])
    assert not loop.socket_ok  # the worker's next query dials afresh (worker.py)


def test_a_packet_of_the_wrong_shape_ends_the_query_cleanly(tmp_path):
    run_against(tmp_path, [encode_frame("packet", {"packet": {"entry_start": "zero"}})])


def test_an_abort_ends_the_query(tmp_path):
    died: list[bool] = []
    loop = run_against(tmp_path, [encode_frame("abort", {"reason": "stopped"})],
                       die=lambda: died.append(True))
    assert not died and not loop.over  # the master's word: this worker goes on


def test_an_abort_from_its_hosts_tunnel_that_could_not_reach_the_master_ends_the_worker(
        tmp_path):
    # the master may have granted packets it now waits for: only the worker's death (its
    # supervisor reports it lost) gives them back (host_links.Tunnel)
    died: list[bool] = []
    loop = run_against(tmp_path, [encode_frame("abort", {
        "reason": "the master's host is not reachable: reset", "unreachable": True})],
        die=lambda: died.append(True))
    assert died == [True] and not loop.socket_ok and not loop.over


def test_done_from_the_master_marks_the_query_over_for_every_worker(tmp_path):
    # a worker on another host tells its part, which gives it to no worker starting later
    assert run_against(tmp_path, [encode_frame("done", {})]).over


def test_a_silent_master_ends_the_query_within_the_request_timeout(tmp_path):
    loop = run_against(tmp_path, [])
    assert not loop.socket_ok


def test_a_refused_chunk_fails_the_query_instead_of_leaving_packets_held(tmp_path):
    from pyproof.packetizer.base import CYCLES
    from pyproof.transport.frames import decode_frame

    packet = {"packet_id": 0, "element": CYCLES, "entry_start": 0, "entry_stop": 10}
    replies = [encode_frame("packet", {"packet": packet}), encode_frame("done", {}),
               encode_frame("error", {"reason": "protocol error: too many streams"}),
               encode_frame("abort", {"reason": "query failed"})]
    seen: list[bytes] = []
    run_against(tmp_path, replies, selector="BigCycles", seen=seen)
    frames = [decode_frame(raw) for raw in seen]
    assert [f.type for f in frames] == ["next", "next", "chunk", "failed"]
    error = frames[-1].payload["error"]
    assert error.type.endswith("OutputsRefused") and "chunk 0 of 2" in error.message


def test_after_a_held_wait_the_worker_asks_again_at_once_without_polling(tmp_path):
    """The master held the request to its bound: a pause here would only add latency."""
    import time

    from pyproof.transport.frames import decode_frame

    held = [encode_frame("wait", {"held": 2.0})] * 20
    seen: list[bytes] = []
    t0 = time.monotonic()
    run_against(tmp_path, [*held, encode_frame("done", {})], seen=seen)
    assert [decode_frame(raw).type for raw in seen] == ["next"] * 21
    # the old backoff (10 ms doubling to 200 ms) spent over 3 s on 20 WAITs
    assert time.monotonic() - t0 < 1.5


def test_a_workers_last_outputs_carry_its_next_request(tmp_path):
    """At a query's end: outputs and the next request in one round trip, not two."""
    from pyproof.packetizer.base import CYCLES
    from pyproof.transport.frames import decode_frame

    packet = {"packet_id": 0, "element": CYCLES, "entry_start": 0, "entry_stop": 10}
    replies = [encode_frame("packet", {"packet": packet}), encode_frame("wait", {"flush": True}),
               encode_frame("done", {"accepted": True})]
    seen: list[bytes] = []
    loop = run_against(tmp_path, replies, seen=seen)
    frames = [decode_frame(raw) for raw in seen]
    assert [f.type for f in frames] == ["next", "next", "outputs"]
    assert frames[-1].payload["next"] is True and frames[-1].payload["packets"] == [0]
    assert loop.socket_ok


def test_a_worker_given_the_last_packets_sends_its_outputs_at_once_without_asking_ahead(
        tmp_path):
    """"last": nothing else to hand out, so no request ahead (answered "flush", a round
    trip more): the outputs, with the next request, go as soon as the batch is done."""
    from pyproof.transport.frames import decode_frame

    batch = [_cycles(i, 10 * i, 10 * i + 10) for i in range(3)]
    replies = [encode_frame("packet", {**batch[0], "batch": batch[1:], "last": True}),
               encode_frame("done", {"accepted": True})]
    seen: list[bytes] = []
    loop = run_against(tmp_path, replies, seen=seen)
    frames = [decode_frame(raw) for raw in seen]
    assert [f.type for f in frames] == ["next", "outputs"]
    outputs = frames[1].payload
    assert outputs["next"] is True and outputs["packets"] == [0, 1, 2]
    assert [r["packet"] for r in outputs["processed"]] == [0, 1, 2]
    assert outputs["outputs"] == {"sum": sum(range(30)), "count": 30}
    assert loop.socket_ok


def _cycles(packet_id: int, start: int, stop: int) -> dict:
    from pyproof.packetizer.base import CYCLES

    return {"packet": {"packet_id": packet_id, "element": CYCLES, "entry_start": start,
                       "entry_stop": stop}}


def test_a_batch_is_processed_in_order_and_the_next_request_goes_as_the_last_starts(tmp_path):
    from pyproof.transport.frames import decode_frame

    batch = [_cycles(i, 10 * i, 10 * i + 10) for i in range(4)]
    replies = [encode_frame("packet", {**batch[0], "batch": batch[1:]}),
               encode_frame("done", {}), encode_frame("ack", {"accepted": True})]
    seen: list[bytes] = []
    loop = run_against(tmp_path, replies, seen=seen)
    frames = [decode_frame(raw) for raw in seen]
    assert [f.type for f in frames] == ["next", "next", "outputs"]
    # asked ahead as it started the last packet: the reports of the three before it
    assert [r["packet"] for r in frames[1].payload["processed"]] == [0, 1, 2]
    outputs = frames[2].payload
    assert outputs["packets"] == [0, 1, 2, 3] and [r["packet"] for r in outputs["processed"]] \
        == [3]
    assert outputs["outputs"] == {"sum": sum(range(40)), "count": 40}
    assert loop.socket_ok and loop.packets_queued == 3


def test_a_worker_stopped_mid_batch_drops_the_packets_it_did_not_start(tmp_path):
    """Stopped (removed, its host leaving): it sends what it processed and nothing more;
    the packets it did not start go back to the master's queue when it is gone."""
    import time

    from pyproof.transport.frames import decode_frame

    batch = [_cycles(i, 10 * i, 10 * i + 10) for i in range(5)]
    address = f"ipc://{tmp_path}/master.ipc"
    stop, seen = threading.Event(), []
    replies = [encode_frame("packet", {**batch[0], "batch": batch[1:]}),
               encode_frame("ack", {"accepted": True})]
    server = threading.Thread(target=serve, args=(address, replies, stop, seen), daemon=True)
    server.start()
    with pynng.Req0(recv_timeout=2000, send_timeout=2000, resend_time=-1) as sock:
        sock.dial(address, block=False)
        loop = worker_loop.WorkerLoop(  # 10 cycles of 20 ms: 0.2 s per packet
            worker_id="worker-0", session_id="s", query_id="q", socket=sock,
            spec=QuerySpec(selector="tests.sample_selectors:SlowCycles", cycles=1,
                           inputs={"per_entry": 0.02}))
        loop.start()
        deadline = time.monotonic() + 20
        while len(loop._held) < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        loop.stop()  # during the second packet
        assert loop.join(20), "the worker loop did not end"
    stop.set()
    server.join(5)
    frames = [decode_frame(raw) for raw in seen]
    assert [f.type for f in frames] == ["next", "outputs"]  # no next request: it stopped
    sent = frames[1].payload["packets"]
    assert sent in ([0], [0, 1]), sent  # the packet under way is finished, no other starts
    assert frames[1].payload["outputs"]["count"] == 10 * len(sent)


def test_a_confirm_packet_starts_only_once_the_master_answered_the_request_saying_so(tmp_path):
    """A packet a worker died holding comes `confirm`: the worker asks ahead as it starts
    it and waits for the answer first, so the master knows for sure it was running if
    the worker dies (packetizer/ledger.py: only that packet takes a strike)."""
    import time

    from pyproof.transport.frames import decode_frame

    address = f"ipc://{tmp_path}/master.ipc"
    stop, seen, started_before_answer = threading.Event(), [], []
    first = {**_cycles(0, 0, 5), "batch": [{"packet": {**_cycles(1, 5, 55)["packet"],
                                                       "confirm": True}}]}

    def master() -> None:
        with contextlib.suppress(pynng.NNGException), \
                pynng.Rep0(listen=address, recv_timeout=5000) as rep:
            seen.append(rep.recv())
            rep.send(encode_frame("packet", first))
            seen.append(rep.recv())  # asked ahead as it starts the confirm packet
            time.sleep(0.3)  # its 50 cycles of 20 ms would be under way by now
            started_before_answer.append(loop.current_packet(time.monotonic()))
            rep.send(encode_frame("done", {}))
            seen.append(rep.recv())
            rep.send(encode_frame("ack", {"accepted": True}))
            stop.wait(20)

    server = threading.Thread(target=master, daemon=True)
    with pynng.Req0(recv_timeout=5000, send_timeout=2000, resend_time=-1) as sock:
        sock.dial(address, block=False)
        loop = worker_loop.WorkerLoop(
            worker_id="worker-0", session_id="s", query_id="q", socket=sock,
            spec=QuerySpec(selector="tests.sample_selectors:SlowCycles", cycles=1,
                           inputs={"per_entry": 0.02}))
        server.start()
        loop.start()
        assert loop.join(20), "the worker loop did not end"
    stop.set()
    server.join(5)
    assert started_before_answer == [None]  # it waited for the answer
    frames = [decode_frame(raw) for raw in seen]
    assert [f.type for f in frames] == ["next", "next", "outputs"]
    assert [r["packet"] for r in frames[1].payload["processed"]] == [0]
    assert frames[2].payload["packets"] == [0, 1]
    assert frames[2].payload["outputs"]["count"] == 55
