"""BasicPacketizer (PROOF's TPacketizer) and the exactly-once ledger under it."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pyproof.packetizer import (
    BasicPacketizer,
    Packetizer,
    PoisonedRange,
    SkippedRange,
    WorkRange,
    make_packetizer,
)
from pyproof.packetizer.testing import Driver, PacketizerMachine


def files(*sizes: int) -> list[WorkRange]:
    return [WorkRange(element=i, entry_start=0, entry_stop=n) for i, n in enumerate(sizes)]


def take_all(p: Packetizer, worker: str = "w0") -> list[tuple[int, int, int]]:
    """Every packet `worker` gets, each processed and delivered at once."""
    out = []
    while (packet := p.next_packet(worker, 0.0)) is not None:
        p.packet_processed(worker, packet.packet_id, 0.0, seconds=1.0)
        assert p.accept_output(worker, frozenset({packet.packet_id}))
        out.append((packet.element, packet.entry_start, packet.entry_stop))
    p.validate()
    return out


def test_packets_never_cross_a_file_boundary() -> None:
    p = BasicPacketizer(files(7, 13, 5), workers=1, packet_entries=4)
    packets = take_all(p)
    for element, start, stop in packets:
        assert 0 <= start < stop <= [7, 13, 5][element]
    assert p.finished


def test_base_size_is_a_twentieth_of_each_workers_share() -> None:
    assert BasicPacketizer(files(10_000), workers=5).packet_entries == 100
    assert BasicPacketizer(files(10), workers=5).packet_entries == 1


def test_base_size_is_recomputed_when_more_workers_join_than_planned() -> None:
    p = BasicPacketizer(files(10_000), workers=1)
    for w in ("a", "b", "c", "d"):
        p.add_worker(w, 0.0)
    assert p.packet_entries == 10_000 // (20 * 4)


def test_packets_shrink_near_the_end_to_half_a_share_of_what_is_left() -> None:
    p = BasicPacketizer(files(1000), workers=2, packet_entries=100)
    sizes = [stop - start for _, start, stop in take_all(p)]
    assert sizes[:9] == [100] * 9
    queued = 100
    for size in sizes[9:]:
        assert size <= max(1, queued // 4) or size == queued
        queued -= size
    assert sizes[-1] <= 2


def test_the_rest_of_a_file_goes_in_one_packet_when_under_one_and_a_half_sizes() -> None:
    p = BasicPacketizer(files(1000, 1000), workers=1, packet_entries=450)
    assert take_all(p)[:2] == [(0, 0, 450), (0, 450, 1000)]


def test_empty_ranges_produce_no_packet() -> None:
    p = BasicPacketizer(files(0, 3, 0), workers=1)
    assert {element for element, _, _ in take_all(p)} == {1}


def test_zero_total_entries_is_finished_at_once() -> None:
    p = BasicPacketizer(files(0, 0), workers=2)
    assert p.finished
    assert p.next_packet("w0", 0.0) is None


def test_each_new_worker_opens_a_file_nobody_reads() -> None:
    p = BasicPacketizer(files(100, 100, 100), workers=3, packet_entries=10)
    assert [p.next_packet(w, 0.0).element for w in ("a", "b", "c")] == [0, 1, 2]  # type: ignore[union-attr]


def test_overlapping_ranges_of_one_file_are_refused() -> None:
    work = [
        WorkRange(element=0, entry_start=0, entry_stop=10),
        WorkRange(element=0, entry_start=5, entry_stop=20),
    ]
    with pytest.raises(ValueError, match=r"^element 0: ranges overlap at entry 5$"):
        BasicPacketizer(work, workers=1)


def test_an_output_is_accepted_once_and_a_duplicate_is_refused() -> None:
    p = BasicPacketizer(files(10), workers=1, packet_entries=5)
    a, b = p.next_packet("w", 0.0), p.next_packet("w", 0.0)
    assert a and b
    assert p.accept_output("w", frozenset({a.packet_id, b.packet_id}))
    assert not p.accept_output("w", frozenset({a.packet_id}))
    assert p.finished
    assert p.statistics().outputs_refused == 1


def test_an_output_with_a_foreign_or_unknown_id_is_refused_and_changes_nothing() -> None:
    p = BasicPacketizer(files(10), workers=2, packet_entries=5)
    a, b = p.next_packet("a", 0.0), p.next_packet("b", 0.0)
    assert a and b
    before = p.statistics()
    assert not p.accept_output("a", frozenset({a.packet_id, b.packet_id}))
    assert not p.accept_output("a", frozenset({a.packet_id, 12345}))
    assert not p.accept_output("a", frozenset())
    after = p.statistics()
    assert (after.entries_assigned, after.entries_delivered) == (before.entries_assigned, 0)
    assert p.accept_output("a", frozenset({a.packet_id}))


def test_an_output_may_arrive_before_the_processed_report() -> None:
    p = BasicPacketizer(files(10), workers=1, packet_entries=10)
    packet = p.next_packet("w", 0.0)
    assert packet
    assert p.accept_output("w", frozenset({packet.packet_id}))
    p.packet_processed("w", packet.packet_id, 1.0, seconds=1.0)
    p.validate()
    assert p.finished


def test_a_lost_worker_s_undelivered_ranges_come_back_under_new_ids() -> None:
    p = BasicPacketizer(files(40), workers=1, packet_entries=10)
    first, second, third = (p.next_packet("a", 0.0) for _ in range(3))
    assert first and second and third
    assert p.accept_output("a", frozenset({first.packet_id}))
    p.packet_processed("a", second.packet_id, 0.0, seconds=1.0)
    requeued = p.worker_lost("a", 1.0)
    assert requeued == [
        WorkRange(element=0, entry_start=10, entry_stop=20),
        WorkRange(element=0, entry_start=20, entry_stop=30),
    ]
    again = p.next_packet("b", 1.0)
    assert again and (again.entry_start, again.entry_stop) == (10, 20)
    assert again.packet_id not in {first.packet_id, second.packet_id, third.packet_id}
    assert not p.accept_output("a", frozenset({second.packet_id}))
    assert p.statistics().entries_delivered == 10
    p.validate()


def test_a_lost_worker_gets_no_packet_until_it_is_added_again() -> None:
    p = BasicPacketizer(files(30), workers=1, packet_entries=10)
    p.worker_lost("a", 0.0)
    assert p.next_packet("a", 0.0) is None
    p.add_worker("a", 1.0)
    assert p.next_packet("a", 1.0) is not None


def test_a_range_that_kills_three_workers_is_poisoned_not_requeued() -> None:
    p = BasicPacketizer(files(10), workers=1, packet_entries=10)
    for n in range(3):
        packet = p.next_packet(f"w{n}", float(n))
        assert packet and (packet.entry_start, packet.entry_stop) == (0, 10)
        requeued = p.worker_lost(f"w{n}", float(n), reason=f"signal {n}")
    assert requeued == []
    assert p.poisoned == (
        PoisonedRange(
            element=0,
            entry_start=0,
            entry_stop=10,
            workers=("w0", "w1", "w2"),
            reasons=("signal 0", "signal 1", "signal 2"),
        ),
    )
    assert p.finished and p.next_packet("w3", 3.0) is None
    p.validate()


def test_only_the_packet_its_worker_was_running_takes_a_strike_the_one_ahead_comes_back_confirm(
) -> None:
    p = BasicPacketizer(files(20), workers=1, packet_entries=10)
    for n in range(3):
        a, b = p.next_packet(f"w{n}", float(n)), p.next_packet(f"w{n}", float(n))
        assert a and b and (a.entry_start, b.entry_start) == (0, 10)
        assert a.confirm == b.confirm == (n > 0)  # held in flight by a worker that died
        p.worker_lost(f"w{n}", float(n), reason=f"signal {n}", running={a.packet_id})
        p.validate()
    assert p.poisoned == (
        PoisonedRange(element=0, entry_start=0, entry_stop=10, workers=("w0", "w1", "w2"),
                      reasons=("signal 0", "signal 1", "signal 2")),
    )
    c = p.next_packet("w3", 3.0)
    assert c and (c.entry_start, c.entry_stop, c.confirm) == (10, 20, True)
    p.packet_processed("w3", c.packet_id, 3.0, seconds=1.0)
    p.worker_lost("w3", 4.0, running={c.packet_id})  # processed: no strike, no suspect
    d = p.next_packet("w4", 4.0)
    assert d and (d.entry_start, d.confirm) == (10, False) and p.poisoned[1:] == ()


def test_a_range_processed_before_its_worker_died_takes_no_strike() -> None:
    p = BasicPacketizer(files(10), workers=1, packet_entries=10, max_strikes=1)
    packet = p.next_packet("a", 0.0)
    assert packet
    p.packet_processed("a", packet.packet_id, 0.0, seconds=1.0)
    assert p.worker_lost("a", 1.0) == files(10)
    assert p.poisoned == ()


def test_a_failed_file_is_skipped_and_reported_and_the_query_finishes() -> None:
    p = BasicPacketizer(files(30, 10), workers=2, packet_entries=10)
    a, b = p.next_packet("a", 0.0), p.next_packet("b", 0.0)
    assert a and b and (a.element, b.element) == (0, 1)
    skipped = p.packet_failed("a", a.packet_id, 1.0, reason="not a ROOT file")
    assert skipped == [
        SkippedRange(element=0, entry_start=0, entry_stop=10, reason="not a ROOT file"),
        SkippedRange(element=0, entry_start=10, entry_stop=30, reason="not a ROOT file"),
    ]
    assert p.skipped == tuple(skipped)
    assert not p.accept_output("a", frozenset({a.packet_id}))
    assert p.accept_output("b", frozenset({b.packet_id}))
    assert p.finished and p.statistics().entries_skipped == 30
    p.validate()


def test_a_packet_failure_reported_for_someone_elses_packet_changes_nothing() -> None:
    p = BasicPacketizer(files(10), workers=2)
    a = p.next_packet("a", 0.0)
    assert a
    assert p.packet_failed("b", a.packet_id, 0.0, reason="x") == []
    assert p.packet_failed("a", 999, 0.0, reason="x") == []
    assert p.skipped == ()


def test_the_package_exports_its_public_names() -> None:
    import pyproof.packetizer as package

    assert all(getattr(package, name) is not None for name in package.__all__)
    assert set(package.KINDS) == {"adaptive", "basic", "file", "unit", "multi"}


def test_statistics_account_for_every_entry() -> None:
    p = BasicPacketizer(files(10, 5), workers=2, packet_entries=5)
    a = p.next_packet("a", 0.0)
    p.next_packet("b", 0.0)
    assert a
    p.packet_processed("a", a.packet_id, 0.0, seconds=1.0)
    s = p.statistics()
    assert (s.entries_total, s.entries_queued, s.entries_assigned, s.entries_processed) == (
        15,
        5,
        5,
        5,
    )
    assert (s.packets_assigned, s.workers) == (2, 2)


def test_make_packetizer_rejects_an_unknown_kind_listing_the_valid_ones() -> None:
    message = r"^unknown packetizer kind 'fast'; valid kinds: adaptive, basic, file, unit, multi$"
    with pytest.raises(ValueError, match=message):
        make_packetizer("fast", files(1), workers=1)


def test_make_packetizer_rejects_an_unknown_parameter_by_name() -> None:
    with pytest.raises(TypeError, match=r"^packetizer 'basic' has no parameter 'size'; valid: "):
        make_packetizer("basic", files(1), workers=1, size=3)


def test_make_packetizer_passes_parameters_on() -> None:
    p = make_packetizer("basic", files(100), workers=1, packet_entries=7)
    assert isinstance(p, BasicPacketizer) and p.packet_entries == 7


def test_driver_drains_a_basic_packetizer_exactly_once() -> None:
    work = files(50, 0, 1, 33)
    d = Driver(BasicPacketizer(work, workers=3), work)
    for w in ("a", "b", "c"):
        d.join(w)
    d.request("a")
    d.lose("a")
    d.drain()
    d.check_exactly_once()


class BasicMachine(PacketizerMachine):
    def build(self, data: st.DataObject) -> tuple[Packetizer, list[WorkRange], int]:
        sizes = data.draw(st.lists(st.sampled_from([0, 1, 2, 5, 17, 40]), max_size=6))
        work = files(*sizes)
        if data.draw(st.booleans(), label="split a file with a gap") and sizes:
            n = sizes[0] + 10
            work.append(WorkRange(element=0, entry_start=n, entry_stop=n + 7))
        packetizer = BasicPacketizer(
            work,
            workers=data.draw(st.integers(1, 4), label="planned workers"),
            packet_entries=data.draw(st.none() | st.integers(1, 12), label="packet_entries"),
            max_strikes=data.draw(st.integers(1, 3), label="max_strikes"),
        )
        return packetizer, work, data.draw(st.integers(0, 3), label="workers at start")


TestBasicMachine = BasicMachine.TestCase
TestBasicMachine.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
