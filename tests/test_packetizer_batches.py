"""Batched grants (`next_packets`): several packets only when they are short, never in the
end-game or for a worker not measured yet, and a loss requeues each packet exactly once."""

from __future__ import annotations

from pyproof.packetizer import AdaptivePacketizer, BasicPacketizer, UnitPacketizer, WorkRange
from pyproof.packetizer.common import BATCH_SECONDS, MAX_BATCH
from pyproof.packetizer.testing import Driver


def files(*sizes: int) -> list[WorkRange]:
    return [WorkRange(element=i, entry_start=0, entry_stop=n) for i, n in enumerate(sizes)]


def measured(p: BasicPacketizer, worker: str, speed: float) -> None:
    """`worker` processed one packet at `speed` entries/s (its speed is known now)."""
    packet = p.next_packet(worker, 0.0)
    assert packet is not None
    p.packet_processed(worker, packet.packet_id, 0.0, seconds=packet.entries / speed)


def test_short_packets_go_out_in_batches_of_at_most_the_batch_time() -> None:
    p = BasicPacketizer(files(10**7), workers=2, packet_entries=1000)
    measured(p, "w0", speed=1e7)  # 0.1 ms packets: 300 fit in 30 ms, capped at MAX_BATCH
    batch = p.next_packets("w0", 0.0)
    assert len(batch) == MAX_BATCH
    assert [b.entry_start for b in batch] == sorted(b.entry_start for b in batch)
    measured(p, "w1", speed=1e5)  # 10 ms packets: three fill the 30 ms budget
    assert len(p.next_packets("w1", 0.0)) == round(BATCH_SECONDS / 0.01)
    p.validate()


def test_long_packets_unmeasured_workers_and_the_end_game_get_one_packet() -> None:
    p = BasicPacketizer(files(10**7), workers=2, packet_entries=1000)
    assert len(p.next_packets("w0", 0.0)) == 1  # its speed is not known yet
    measured(p, "w1", speed=1e4)  # 100 ms packets: the request's cost does not matter
    assert len(p.next_packets("w1", 0.0)) == 1
    # the end-game: 0.1 s of queued work per worker at 1e6/s -> one packet at a time
    q = BasicPacketizer(files(200_000), workers=2, packet_entries=1000)
    measured(q, "w0", speed=1e6)
    measured(q, "w1", speed=1e6)
    assert len(q.next_packets("w0", 0.0)) == 1
    # the same packets with plenty of work left do go out in batches
    r = BasicPacketizer(files(10**7), workers=2, packet_entries=1000)
    measured(r, "w0", speed=1e6)
    measured(r, "w1", speed=1e6)
    assert len(r.next_packets("w0", 0.0)) > 1


def test_the_default_data_and_cycles_packetizers_keep_one_packet_per_request() -> None:
    """Their packets are at least 50 ms (adaptive) or 1 s (unit) long: no batches."""
    a = AdaptivePacketizer(files(10**8), workers=1)
    u = UnitPacketizer(10**9, workers=1)
    for p in (a, u):
        for _ in range(5):
            batch = p.next_packets("w0", 0.0)
            assert len(batch) == 1
            p.packet_processed("w0", batch[0].packet_id, 0.0, seconds=batch[0].entries / 1e6)


def test_a_worker_lost_holding_a_batch_has_every_packet_requeued_exactly_once() -> None:
    work = files(10**6)
    p = BasicPacketizer(work, workers=2, packet_entries=1000)
    d = Driver(p, work)
    d.join("w0")
    d.join("w1")
    first = d.request("w0")
    assert first is not None
    d.report("w0", first.packet_id, seconds=first.entries / 1e6)
    batch = d.request_batch("w0")
    assert len(batch) > 1
    d.deliver("w0", frozenset({first.packet_id, batch[0].packet_id}))
    before = p.statistics().packets_requeued
    d.lose("w0")  # the model asserts exactly the undelivered ranges come back
    assert p.statistics().packets_requeued == before + len(batch) - 1
    assert not p.accept_output("w0", frozenset(b.packet_id for b in batch[1:]))
    d.drain()
    d.check_exactly_once()
