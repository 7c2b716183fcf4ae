"""UnitPacketizer (PROOF's TPacketizerUnit): cycles shared by measured speed."""

from __future__ import annotations

import heapq

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pyproof.packetizer import CYCLES, Packetizer, UnitPacketizer, WorkRange, make_packetizer
from pyproof.packetizer.testing import PacketizerMachine


def run(p: Packetizer, speeds: dict[str, float]) -> dict[str, tuple[float, list[int]]]:
    """Virtual-clock run: each worker's finish time and packet sizes."""
    done: dict[str, tuple[float, list[int]]] = {w: (0.0, []) for w in speeds}
    events = [(0.0, w) for w in speeds]
    while events:
        now, w = heapq.heappop(events)
        packet = p.next_packet(w, now)
        if packet is None:
            continue
        seconds = packet.entries / speeds[w]
        p.packet_processed(w, packet.packet_id, now + seconds, seconds=seconds)
        assert p.accept_output(w, frozenset({packet.packet_id}))
        done[w] = (now + seconds, [*done[w][1], packet.entries])
        heapq.heappush(events, (now + seconds, w))
    p.validate()
    assert p.finished
    return done


def test_packets_are_ranges_of_cycle_numbers() -> None:
    p = UnitPacketizer(10, workers=1)
    packet = p.next_packet("w", 0.0)
    assert packet and (packet.element, packet.entry_start) == (CYCLES, 0)


def test_each_worker_first_gets_a_calibration_packet_of_its_share() -> None:
    p = UnitPacketizer(100_000, workers=4)
    sizes = [p.next_packet(w, 0.0).entries for w in "abcd"]  # type: ignore[union-attr]
    assert sizes == [250] * 4  # 1% of 100,000 / 4


def test_calibration_is_at_least_one_cycle() -> None:
    p = UnitPacketizer(3, workers=8)
    assert p.next_packet("w", 0.0).entries == 1  # type: ignore[union-attr]


def test_after_calibration_a_packet_is_a_fraction_of_the_time_left_at_its_rate() -> None:
    """Fraction 1: the worker's whole share of what is left, by rate (PROOF's rule)."""
    p = UnitPacketizer(1_000_000, workers=2, max_packet_time=1e9, packet_time_fraction=1.0)
    for w, speed in (("fast", 3000.0), ("slow", 1000.0)):
        packet = p.next_packet(w, 0.0)
        assert packet
        p.packet_processed(w, packet.packet_id, 1.0, seconds=packet.entries / speed)
    left = 1_000_000 - 2 * 5000
    assert p.next_packet("fast", 1.0).entries == left * 3 // 4  # type: ignore[union-attr]
    q = UnitPacketizer(1_000_000, workers=2, max_packet_time=1e9)  # default: a quarter
    for w, speed in (("fast", 3000.0), ("slow", 1000.0)):
        packet = q.next_packet(w, 0.0)
        assert packet
        q.packet_processed(w, packet.packet_id, 1.0, seconds=packet.entries / speed)
    assert q.next_packet("fast", 1.0).entries == left * 3 // 16  # type: ignore[union-attr]


def test_a_short_query_is_shared_and_the_workers_finish_within_50_ms() -> None:
    """0.4 s of work per worker: both work (the old 1 s floor gave it all to the first
    that asked), and the packets shrink to 50 ms at the end."""
    speeds = {"a": 500_000.0, "b": 450_000.0}
    done = run(UnitPacketizer(400_000, workers=2), speeds)
    finishes = [t for t, _ in done.values()]
    assert all(len(sizes) > 2 for _, sizes in done.values())
    assert max(finishes) - min(finishes) <= 0.05
    assert max(finishes) <= 400_000 / sum(speeds.values()) * 1.05


def test_packet_time_is_clamped_between_min_and_max() -> None:
    p = UnitPacketizer(10**9, workers=1, min_packet_time=1.0, max_packet_time=3.0)
    packet = p.next_packet("w", 0.0)
    assert packet
    p.packet_processed("w", packet.packet_id, 1.0, seconds=packet.entries / 1000)
    assert p.next_packet("w", 1.0).entries == 3000  # type: ignore[union-attr]
    q = UnitPacketizer(10_000, workers=100, min_packet_time=2.0)
    packet = q.next_packet("w", 0.0)
    assert packet
    q.packet_processed("w", packet.packet_id, 1.0, seconds=packet.entries / 1000)
    assert q.next_packet("w", 1.0).entries == 2000  # type: ignore[union-attr]


def test_fixed_gives_every_worker_an_equal_count_whatever_its_speed() -> None:
    done = run(UnitPacketizer(900, workers=3, fixed=True), {"a": 1.0, "b": 10.0, "c": 100.0})
    assert sorted(sizes for _, sizes in done.values()) == [[300]] * 3


def test_workers_of_different_speeds_finish_within_a_min_packet_time() -> None:
    speeds = {"a": 1000.0, "b": 2000.0, "c": 500.0, "d": 4000.0}
    done = run(UnitPacketizer(1_000_000, workers=4), speeds)
    finishes = [t for t, _ in done.values()]
    ideal = 1_000_000 / sum(speeds.values())
    assert max(finishes) - min(finishes) <= 0.05  # one min_packet_time, not max's 3 s
    assert max(finishes) <= ideal * 1.01


def test_zero_cycles_is_finished_at_once() -> None:
    p = UnitPacketizer(0, workers=2)
    assert p.finished and p.next_packet("w", 0.0) is None


def test_bad_parameters_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"^need 0 < min_packet_time <= max_packet_time"):
        UnitPacketizer(10, workers=1, min_packet_time=5.0, max_packet_time=1.0)
    with pytest.raises(ValueError, match=r"^packet_time_fraction must be >= 1, got 0.5$"):
        UnitPacketizer(10, workers=1, packet_time_fraction=0.5)
    with pytest.raises(ValueError, match=r"^cycles must be >= 0, got -1$"):
        UnitPacketizer(-1, workers=1)


def test_make_packetizer_builds_a_unit_packetizer_from_one_range_of_cycles() -> None:
    work = [WorkRange(element=CYCLES, entry_start=0, entry_stop=500)]
    p = make_packetizer("unit", work, workers=2, fixed=True)
    assert isinstance(p, UnitPacketizer)
    assert p.next_packet("w", 0.0).entries == 250  # type: ignore[union-attr]


def test_make_packetizer_refuses_file_work_for_the_unit_kind() -> None:
    work = [WorkRange(element=0, entry_start=0, entry_stop=500)]
    with pytest.raises(ValueError, match=r"^the 'unit' packetizer takes cycles only"):
        make_packetizer("unit", work, workers=2)


class UnitMachine(PacketizerMachine):
    def build(self, data: st.DataObject) -> tuple[Packetizer, list[WorkRange], int]:
        cycles = data.draw(st.sampled_from([0, 1, 2, 7, 100, 400]), label="cycles")
        packetizer = UnitPacketizer(
            cycles,
            workers=data.draw(st.integers(1, 4), label="planned workers"),
            min_packet_time=data.draw(st.sampled_from([0.01, 0.5, 1.0])),
            max_packet_time=3.0,
            packet_time_fraction=data.draw(st.sampled_from([1.0, 4.0])),
            calibration_fraction=data.draw(st.sampled_from([0.01, 0.2, 1.0])),
            fixed=data.draw(st.booleans(), label="fixed"),
            max_strikes=data.draw(st.integers(1, 3), label="max_strikes"),
        )
        work = [WorkRange(element=CYCLES, entry_start=0, entry_stop=cycles)]
        return packetizer, work, data.draw(st.integers(0, 3), label="workers at start")


TestUnitMachine = UnitMachine.TestCase
TestUnitMachine.settings = settings(
    max_examples=80,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
