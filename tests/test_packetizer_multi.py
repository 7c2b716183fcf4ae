"""MultiPacketizer (PROOF's TPacketizerMulti): datasets in turn, exactly once across parts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant

from pyproof.packetizer import (
    AdaptivePacketizer,
    MultiPacketizer,
    Packet,
    Packetizer,
    PoisonedRange,
    SkippedRange,
    WorkRange,
    make_packetizer,
)
from pyproof.packetizer.testing import Driver, PacketizerMachine


def parts(*sizes: list[int]) -> list[list[WorkRange]]:
    """Parts of files with global element indices: parts([3, 4], [5]) -> elements 0, 1 | 2."""
    out, element = [], 0
    for part in sizes:
        out.append([])
        for n in part:
            out[-1].append(WorkRange(element=element, entry_start=0, entry_stop=n))
            element += 1
    return out


def got(packet: Packet | None) -> Packet:
    assert packet is not None
    return packet


def whole_files(*sizes: list[int]) -> MultiPacketizer:
    """A multi packetizer over `parts(*sizes)` whose packets are whole files (predictable)."""
    return MultiPacketizer(parts(*sizes), workers=2, part_kind="file")


def test_parts_are_served_in_order_and_each_packet_names_its_part() -> None:
    p = whole_files([20, 10], [30], [5])
    seen = []
    while (packet := p.next_packet("w", 0.0)) is not None:
        seen.append((packet.part, packet.element))
        assert p.accept_output("w", frozenset({packet.packet_id}))
    assert [part for part, _ in seen] == sorted(part for part, _ in seen)
    assert {(part, element) for part, element in seen} == {(0, 0), (0, 1), (1, 2), (2, 3)}
    assert p.finished
    p.validate()


def test_packet_ids_are_unique_across_parts() -> None:
    p = whole_files([10], [10])
    ids = [got(p.next_packet("w", 0.0)).packet_id for _ in range(2)]
    assert ids == [0, 1]


def test_a_worker_moves_on_once_every_range_of_the_part_is_assigned_not_processed() -> None:
    p = whole_files([10], [10])
    a = got(p.next_packet("a", 0.0))
    b = got(p.next_packet("b", 0.0))
    assert (a.part, b.part) == (0, 1)  # "a" still processes part 0; "b" is not kept idle


def test_no_packet_of_the_next_part_while_the_current_one_has_queued_work() -> None:
    p = whole_files([10, 10, 10], [10])
    assert [got(p.next_packet(w, 0.0)).part for w in ("a", "b", "a", "b")] == [0, 0, 0, 1]


def test_ranges_of_an_earlier_part_that_come_back_are_served_first() -> None:
    p = whole_files([10], [50])
    a = got(p.next_packet("a", 0.0))
    assert got(p.next_packet("b", 0.0)).part == 1
    assert p.worker_lost("a", 1.0) == [WorkRange(element=0, entry_start=0, entry_stop=10)]
    again = got(p.next_packet("b", 1.0))
    assert (again.part, again.element, again.packet_id != a.packet_id) == (0, 0, True)
    p.validate()


def test_a_lost_worker_gives_back_its_ranges_of_every_part() -> None:
    p = whole_files([10], [10])
    first = got(p.next_packet("a", 0.0))
    p.packet_processed("a", first.packet_id, 0.0, seconds=1.0)
    got(p.next_packet("a", 0.0))
    assert p.worker_lost("a", 1.0) == [
        WorkRange(element=0, entry_start=0, entry_stop=10),
        WorkRange(element=1, entry_start=0, entry_stop=10),
    ]
    assert p.next_packet("a", 1.0) is None
    p.add_worker("a", 2.0)
    assert got(p.next_packet("a", 2.0)).part == 0
    p.validate()


def test_an_output_covering_several_parts_is_merged_whole_or_not_at_all() -> None:
    p = whole_files([10], [10])
    a0, a1 = got(p.next_packet("a", 0.0)), got(p.next_packet("a", 0.0))
    assert p.next_packet("b", 0.0) is None  # all work is out
    assert not p.accept_output("a", frozenset({a0.packet_id, a1.packet_id, 999}))
    assert p.statistics().entries_delivered == 0
    assert p.accept_output("a", frozenset({a0.packet_id, a1.packet_id}))
    assert not p.accept_output("a", frozenset({a1.packet_id}))
    assert p.finished
    s = p.statistics()
    assert (s.entries_delivered, s.packets_delivered, s.outputs_refused) == (20, 2, 2)
    p.validate()


def test_an_output_whose_share_one_part_refuses_changes_no_part() -> None:
    p = whole_files([10], [10, 10])
    a0 = got(p.next_packet("a", 0.0))
    a1 = got(p.next_packet("a", 0.0))
    b1 = got(p.next_packet("b", 0.0))
    assert (a0.part, a1.part, b1.part) == (0, 1, 1)
    assert not p.accept_output("a", frozenset({a0.packet_id, b1.packet_id}))
    assert [s.entries_delivered for s in p.part_statistics()] == [0, 0]
    assert p.accept_output("a", frozenset({a0.packet_id, a1.packet_id}))
    assert [s.entries_delivered for s in p.part_statistics()] == [10, 10]


def test_statistics_sum_the_parts() -> None:
    p = whole_files([10, 5], [7])
    got(p.next_packet("a", 0.0))
    s = p.statistics()
    assert (s.entries_total, s.entries_queued, s.entries_assigned, s.workers) == (22, 12, 10, 1)
    assert [x.entries_total for x in p.part_statistics()] == [15, 7]


def test_poisoned_and_skipped_ranges_are_reported_across_parts_in_order() -> None:
    p = MultiPacketizer(
        parts([10], [10, 10]),
        workers=1,
        part_kind="basic",
        params={"packet_entries": 10},
        part_params=[{"max_strikes": 1}, {}],
    )
    zero = got(p.next_packet("a", 0.0))
    assert p.worker_lost("a", 0.0, reason="killed") == []
    one = got(p.next_packet("b", 1.0))
    assert one.part == 1
    skipped = p.packet_failed("b", one.packet_id, 1.0, reason="corrupt")
    assert skipped == [SkippedRange(element=1, entry_start=0, entry_stop=10, reason="corrupt")]
    assert p.poisoned == (
        PoisonedRange(
            element=zero.element, entry_start=0, entry_stop=10, workers=("a",), reasons=("killed",)
        ),
    )
    assert p.skipped == tuple(skipped)
    assert p.packet_failed("b", 12345, 1.0, reason="x") == []
    last = got(p.next_packet("b", 1.0))
    assert p.accept_output("b", frozenset({last.packet_id}))
    assert p.finished
    p.validate()


def test_a_reader_cap_keeps_a_worker_waiting_unless_parts_may_overlap() -> None:
    kwargs: dict[str, Any] = {
        "workers": 2,
        "params": {"element_hosts": {0: "s", 1: "s"}, "max_readers_per_node": 1},
    }
    strict = MultiPacketizer(parts([10**5], [10**5]), **kwargs)
    assert got(strict.next_packet("a", 0.0)).part == 0
    assert strict.next_packet("b", 0.0) is None
    overlapping = MultiPacketizer(parts([10**5], [10**5]), overlap=True, **kwargs)
    assert got(overlapping.next_packet("a", 0.0)).part == 0
    assert got(overlapping.next_packet("b", 0.0)).part == 1
    overlapping.validate()


def test_each_part_has_its_own_packetizer_and_parameters() -> None:
    p = MultiPacketizer(
        parts([10**6], [10**6]),
        workers=1,
        params={"learn_entries": 100},
        part_params=[{}, {"learn_entries": 7}],
    )
    assert got(p.next_packet("w", 0.0)).entries == 100
    p.worker_lost("w", 0.0)  # so part 0 is not left with queued work
    p.add_worker("v", 0.0)
    first = got(p.next_packet("v", 0.0))
    assert (first.part, first.entries) == (0, 100)


def test_a_workers_host_reaches_the_parts_that_know_hosts() -> None:
    hosts = {0: "a", 1: "b", 2: "a", 3: "b"}
    p = MultiPacketizer(
        parts([1, 1], [1, 1]), workers=2, part_kind="file", params={"element_hosts": hosts}
    )
    p.add_worker("wb", 0.0, host="b")
    assert [got(p.next_packet("wb", 0.0)).element for _ in range(2)] == [1, 0]
    assert got(p.next_packet("wb", 0.0)).element == 3


def test_make_packetizer_groups_work_into_parts_by_element() -> None:
    work = [WorkRange(element=i, entry_start=0, entry_stop=10) for i in range(4)]
    p = make_packetizer(
        "multi",
        work,
        workers=1,
        parts=[[2, 3], [0, 1]],
        part_kind="basic",
        params={"packet_entries": 10},
    )
    assert isinstance(p, MultiPacketizer) and p.parts == 2
    order = []
    while (packet := p.next_packet("w", 0.0)) is not None:
        order.append((packet.part, packet.element))
    assert order == [(0, 2), (0, 3), (1, 0), (1, 1)]


def test_make_packetizer_multi_builds_adaptive_parts_by_default() -> None:
    work = [WorkRange(element=i, entry_start=0, entry_stop=10**6) for i in range(2)]
    p = make_packetizer("multi", work, workers=2, parts=[[0], [1]])
    assert isinstance(p, MultiPacketizer)
    assert all(isinstance(inner, AdaptivePacketizer) for inner in p._parts)


def test_bad_parts_are_refused_by_name() -> None:
    work = [WorkRange(element=i, entry_start=0, entry_stop=10) for i in range(3)]
    with pytest.raises(ValueError, match=r"^element 2 is in no part$"):
        make_packetizer("multi", work, workers=1, parts=[[0], [1]])
    with pytest.raises(ValueError, match=r"^element 1 is in parts 0 and 1$"):
        make_packetizer("multi", work, workers=1, parts=[[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"^element 0 is in parts 0 and 1$"):
        MultiPacketizer([work[:1], work[:1]], workers=1)
    with pytest.raises(ValueError, match=r"^a part's kind must be one of adaptive, basic, file"):
        make_packetizer("multi", work, workers=1, parts=[[0, 1, 2]], part_kind="unit")
    with pytest.raises(ValueError, match=r"^part_params has 1 entries for 2 parts$"):
        MultiPacketizer([work[:1], work[1:]], workers=1, part_params=[{}])
    with pytest.raises(TypeError, match=r"^packetizer 'basic' has no parameter 'learn_entries'"):
        MultiPacketizer([work], workers=1, part_kind="basic", params={"learn_entries": 1})
    with pytest.raises(TypeError, match=r"^packetizer 'multi' has no parameter 'size'; valid: "):
        make_packetizer("multi", work, workers=1, parts=[[0, 1, 2]], size=3)


def test_no_parts_or_empty_parts_are_finished_at_once() -> None:
    assert MultiPacketizer([], workers=1).finished
    p = whole_files([0], [], [0, 0])
    assert p.finished and p.next_packet("w", 0.0) is None


class PartsDriver(Driver):
    """The model, also checking that parts are served in order (see multi.py)."""

    def __init__(
        self, packetizer: MultiPacketizer, work_parts: list[list[WorkRange]], *, overlap: bool
    ) -> None:
        super().__init__(packetizer, [w for part in work_parts for w in part])
        self.owner = {w.element: k for k, part in enumerate(work_parts) for w in part}
        self.overlap = overlap

    def request(self, worker: str) -> Packet | None:
        multi = self.packetizer
        assert isinstance(multi, MultiPacketizer)
        queued = [s.entries_queued for s in multi.part_statistics()]
        packet = super().request(worker)
        if packet is not None:
            assert packet.part == self.owner[packet.element], f"{packet} in the wrong part"
            first = next(k for k, q in enumerate(queued) if q)
            if self.overlap:
                assert packet.part >= first, f"{packet} before part {first}"
            else:
                assert packet.part == first, f"{packet} while part {first} had queued work"
        return packet


class MultiMachine(PacketizerMachine):
    work_parts: list[list[WorkRange]] = []
    overlap = False

    def make_driver(self, packetizer: Packetizer, work: list[WorkRange]) -> Driver:
        assert isinstance(packetizer, MultiPacketizer)
        return PartsDriver(packetizer, self.work_parts, overlap=self.overlap)

    def build(self, data: st.DataObject) -> tuple[Packetizer, list[WorkRange], int]:
        sizes = data.draw(
            st.lists(st.lists(st.sampled_from([0, 1, 3, 20, 40]), max_size=3), max_size=3),
            label="parts",
        )
        work_parts = parts(*sizes)
        work = [w for part in work_parts for w in part]
        if data.draw(st.booleans(), label="split a file with a gap") and work:
            w = work_parts[-1][-1] if work_parts[-1] else work[0]
            extra = WorkRange(
                element=w.element, entry_start=w.entry_stop + 5, entry_stop=w.entry_stop + 12
            )
            next(p for p in work_parts if w in p).append(extra)
            work.append(extra)
        kind = data.draw(st.sampled_from(["adaptive", "basic", "file"]), label="kind")
        places = st.sampled_from(["a", "s", None])
        hosts = {w.element: h for w in work if (h := data.draw(places)) is not None}
        params: dict[str, Any] = {}
        if kind == "adaptive":
            params = {
                "element_hosts": hosts,
                "worker_hosts": {f"w{i}": "a" for i in range(0, 12, 2)},
                "min_packet_time": data.draw(st.sampled_from([0.01, 1.0])),
                "max_packet_time": 2.0,
                "learn_entries": data.draw(st.sampled_from([1, 5, 1000])),
                "max_readers_per_node": data.draw(st.sampled_from([None, 1, 2])),
            }
        elif kind == "basic":
            params = {"packet_entries": data.draw(st.none() | st.integers(1, 12))}
        else:
            params = {"element_hosts": hosts}
        strikes = st.fixed_dictionaries({"max_strikes": st.integers(1, 3)})
        overlap = data.draw(st.booleans(), label="overlap")
        packetizer = MultiPacketizer(
            work_parts,
            workers=data.draw(st.integers(1, 4), label="planned workers"),
            part_kind=kind,
            params=params,
            part_params=[data.draw(strikes) for _ in work_parts],
            overlap=overlap,
        )
        self.work_parts, self.overlap = work_parts, overlap
        return packetizer, work, data.draw(st.integers(0, 3), label="workers at start")

    @invariant()
    def statistics_add_up(self) -> None:
        if self.driver is not None:
            s = self.driver.packetizer.statistics()
            placed = (
                s.entries_queued
                + s.entries_assigned
                + s.entries_processed
                + s.entries_delivered
                + s.entries_poisoned
                + s.entries_skipped
            )
            assert placed == s.entries_total


TestMultiMachine = MultiMachine.TestCase
TestMultiMachine.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
