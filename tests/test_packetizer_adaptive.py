"""AdaptivePacketizer: time-sized packets, locality, reader cap, joins; exactly once."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pyproof.packetizer import AdaptivePacketizer, Packet, Packetizer, WorkRange, make_packetizer
from pyproof.packetizer.common import on_boundary
from pyproof.packetizer.simulate import Scenario, simulate
from pyproof.packetizer.testing import PacketizerMachine


def files(*sizes: int, basket: int | None = None) -> list[WorkRange]:
    """Whole files of `sizes` entries; with `basket`, baskets of that many entries."""
    return [WorkRange(element=i, entry_start=0, entry_stop=n,
                      boundaries=() if basket is None else (*range(0, n, basket), n))
            for i, n in enumerate(sizes)]


def got(packet: Packet | None) -> Packet:
    assert packet is not None
    return packet


def learn(p: AdaptivePacketizer, worker: str, rate: float, now: float = 0.0) -> None:
    """Give `worker` its learning packet and report it processed at `rate` entries/s."""
    packet = got(p.next_packet(worker, now))
    p.packet_processed(worker, packet.packet_id, now, seconds=packet.entries / rate)
    assert p.accept_output(worker, frozenset({packet.packet_id}))


def test_a_workers_first_packet_is_a_small_learning_packet() -> None:
    p = AdaptivePacketizer(files(10**7), workers=2)
    assert got(p.next_packet("a", 0.0)).entries == 1000
    q = AdaptivePacketizer(files(40_000), workers=2, learn_entries=1000)
    assert got(q.next_packet("a", 0.0)).entries == 1000
    r = AdaptivePacketizer(files(16_000), workers=2, learn_entries=1000)
    assert got(r.next_packet("a", 0.0)).entries == 500  # not below min_learn_entries
    s = AdaptivePacketizer(files(4000), workers=2, learn_entries=1000, min_learn_entries=1)
    assert got(s.next_packet("a", 0.0)).entries == 100  # capped at total / (20 * workers)


def test_a_tiny_query_goes_out_as_one_packet_per_file() -> None:
    """1,000 events over 8 files: 8 packets, not 25-entry slivers (a round trip each)."""
    p = AdaptivePacketizer(files(*[125] * 8), workers=2)
    packets = [p.next_packet(w, 0.0) for w in ["a", "b"] * 4]
    assert [(x.element, x.entries) for x in map(got, packets)] == [(i, 125) for i in range(8)]
    assert p.next_packet("a", 0.0) is None


def test_packets_are_sized_in_time_by_each_workers_own_rate() -> None:
    p = AdaptivePacketizer(files(10**8), workers=2)
    learn(p, "fast", 10_000.0)
    learn(p, "slow", 1_000.0)
    fast, slow = got(p.next_packet("fast", 1.0)), got(p.next_packet("slow", 1.0))
    assert fast.entries == 10 * slow.entries


def test_packet_time_is_a_fraction_of_the_time_left_clamped_to_the_limits() -> None:
    p = AdaptivePacketizer(files(10**8), workers=1, max_packet_time=20.0)
    learn(p, "w", 1000.0)
    assert got(p.next_packet("w", 1.0)).entries == 20_000  # 10^5 s left: max 20 s
    q = AdaptivePacketizer(files(1_000_000), workers=1, max_packet_time=10**6)
    learn(q, "w", 1000.0)
    assert got(q.next_packet("w", 1.0)).entries == (1_000_000 - 1000) // 4
    r = AdaptivePacketizer(files(100_000), workers=1, min_packet_time=5.0)
    learn(r, "w", 1_000_000.0)
    assert got(r.next_packet("w", 1.0)).entries == 99_000  # 5 s of work > what is left


def test_packets_shrink_as_the_end_nears() -> None:
    p = AdaptivePacketizer(files(10**6), workers=1, min_packet_time=0.01)
    learn(p, "w", 1000.0)
    sizes = []
    while (packet := p.next_packet("w", 0.0)) is not None:
        p.packet_processed("w", packet.packet_id, 0.0, seconds=packet.entries / 1000)
        sizes.append(packet.entries)
    assert sizes[0] == 20_000 and sizes[-1] < 100
    assert sizes[-20:] == sorted(sizes[-20:], reverse=True)


def test_packets_stay_large_while_work_is_plentiful_and_shrink_to_50_ms_at_the_end() -> None:
    p = AdaptivePacketizer(files(10**6), workers=1)  # default parameters
    learn(p, "w", 1000.0)
    sizes, now = [], 1.0
    while (packet := p.next_packet("w", now)) is not None:
        now += packet.entries / 1000
        p.packet_processed("w", packet.packet_id, now, seconds=packet.entries / 1000)
        sizes.append(packet.entries)
    assert sizes[:3] == [20_000] * 3  # max_packet_time: 20 s
    assert sizes == sorted(sizes, reverse=True)
    assert min(sizes[:-1]) == 50 and sizes[-1] < 75  # the 50 ms floor, then what is left


def test_a_worker_busy_with_a_prefetched_packet_gets_less_than_an_idle_one() -> None:
    p = AdaptivePacketizer(files(100_000), workers=2, max_packet_time=10**6)
    learn(p, "a", 1000.0)
    learn(p, "b", 1000.0)
    held = got(p.next_packet("a", 1.0))  # "a" will be busy with it for a while
    idle_share = got(p.next_packet("b", 1.0)).entries
    busy_share = got(p.next_packet("a", 1.0)).entries
    assert busy_share < idle_share - held.entries / 8
    p.validate()


def test_two_workers_with_prefetch_finish_within_50_ms_of_each_other() -> None:
    """A lite-sized run (8 files x 1M entries, 1M entries/s per worker): a 1 s floor left
    one worker idle 0.34 s at the end, as measured on the real cluster."""
    scenario = Scenario(
        workers=2, files=8, entries=1_000_000, speed=1e6, speed_spread=1.2,
        overhead=0.002, seed=1, prefetch=True,
    )
    report = simulate(scenario)
    assert report["finish_spread"] < 0.05
    assert report["makespan_over_ideal"] < 1.01


def test_a_worker_prefers_files_on_its_own_host() -> None:
    p = AdaptivePacketizer(
        files(1000, 1000), workers=2, element_hosts={0: "a", 1: "b"}, worker_hosts={"wb": "b"}
    )
    p.add_worker("wa", 0.0, host="a")
    assert got(p.next_packet("wb", 0.0)).element == 1
    assert got(p.next_packet("wa", 0.0)).element == 0


def test_a_node_without_local_workers_is_read_from_the_start() -> None:
    hosts = {0: "a", 1: "a", 2: "storage"}
    p = AdaptivePacketizer(files(10**6, 10**6, 10**6), workers=3, element_hosts=hosts)
    for w in ("a1", "a2", "a3"):
        p.add_worker(w, 0.0, host="a")
    elements = [got(p.next_packet(w, 0.0)).element for w in ("a1", "a2", "a3")]
    assert elements == [2, 0, 1]


def test_the_reader_cap_limits_concurrent_readers_of_a_node() -> None:
    hosts = {i: "s" for i in range(3)}
    p = AdaptivePacketizer(
        files(10**5, 10**5, 10**5), workers=3, element_hosts=hosts, max_readers_per_node=2
    )
    first = got(p.next_packet("a", 0.0))
    assert p.next_packet("b", 0.0) is not None
    assert p.next_packet("c", 0.0) is None
    p.packet_processed("a", first.packet_id, 1.0, seconds=1.0)
    assert p.next_packet("c", 1.0) is not None
    p.validate()


def test_a_worker_joining_mid_query_gets_a_packet_at_once() -> None:
    p = AdaptivePacketizer(files(10**6), workers=1)
    learn(p, "old", 1000.0)
    p.add_worker("new", 5.0)
    assert got(p.next_packet("new", 5.0)).entries == 1000
    p.validate()


def test_a_lost_worker_stops_counting_toward_the_cluster_rate() -> None:
    p = AdaptivePacketizer(files(10**7), workers=1, max_packet_time=10**6)
    learn(p, "a", 1000.0)
    learn(p, "b", 1000.0)
    two = got(p.next_packet("a", 1.0))
    assert p.accept_output("a", frozenset({two.packet_id}))
    p.worker_lost("b", 1.0)
    # alone, "a" gets a quarter of what is left rather than an eighth
    assert got(p.next_packet("a", 2.0)).entries == int((10**7 - 2000 - two.entries) / 4)
    p.validate()


def test_bad_parameters_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"^max_readers_per_node must be >= 1, got 0$"):
        AdaptivePacketizer(files(1), workers=1, max_readers_per_node=0)
    with pytest.raises(ValueError, match=r"^packet_time_fraction must be >= 1, got 0.5$"):
        AdaptivePacketizer(files(1), workers=1, packet_time_fraction=0.5)
    with pytest.raises(ValueError, match=r"^min_packet_entries must be >= 1, got 0$"):
        AdaptivePacketizer(files(1), workers=1, min_packet_entries=0)


def test_make_packetizer_builds_an_adaptive_packetizer_with_parameters() -> None:
    p = make_packetizer("adaptive", files(10**6), workers=4, learn_entries=10)
    assert isinstance(p, AdaptivePacketizer)
    assert got(p.next_packet("w", 0.0)).entries == 10


def drain_at(p: AdaptivePacketizer, rates: dict[str, float]) -> list[Packet]:
    """Every packet, workers asking in turn and processing at `rates` (entries/s)."""
    now, out = 0.0, []
    while not p.finished:
        for worker, rate in rates.items():
            packet = p.next_packet(worker, now)
            if packet is None:
                continue
            now += packet.entries / rate
            p.packet_processed(worker, packet.packet_id, now, seconds=packet.entries / rate)
            assert p.accept_output(worker, frozenset({packet.packet_id}))
            out.append(packet)
    return out


def test_packet_edges_are_on_basket_boundaries() -> None:
    """An edge inside a basket makes two packets decompress it: 8 files of 166,666 entries
    in baskets of 10,000, as the bench's, go out in packets that start and end on one."""
    p = AdaptivePacketizer(files(*[166_666] * 8, basket=10_000), workers=2)
    packets = drain_at(p, {"a": 1.5e6, "b": 1.2e6})
    assert len(packets) > 16
    cut = [(x.element, x.entry_start, x.entry_stop) for x in packets
           if x.entry_start % 10_000 or x.entry_stop % 10_000 and x.entry_stop != 166_666]
    assert cut == []
    assert sum(x.entries for x in packets) == 8 * 166_666


def test_the_learning_packet_grows_to_its_basket_only_within_its_cap() -> None:
    p = AdaptivePacketizer(files(10**7, basket=10_000), workers=2)
    assert got(p.next_packet("a", 0.0)).entries == 10_000  # cap 250,000: one basket
    q = AdaptivePacketizer(files(100_000, basket=50_000), workers=2, min_learn_entries=1)
    assert got(q.next_packet("a", 0.0)).entries == 1000  # cap 2,500: cut inside


def test_without_boundaries_packets_are_cut_as_sized() -> None:
    p = AdaptivePacketizer(files(10**7), workers=2)
    assert got(p.next_packet("a", 0.0)).entries == 1000


def test_on_boundary_moves_an_edge_to_the_nearest_basket_start_within_half_a_packet() -> None:
    grid = (0, 100, 200, 300, 400)
    assert on_boundary(grid, 0, 400, 140) == 100
    assert on_boundary(grid, 0, 400, 160) == 200
    assert on_boundary(grid, 0, 400, 30) == 30  # 100 is too far: cut inside the basket
    assert on_boundary(grid, 50, 400, 120) == 150  # a packet that began inside one
    assert on_boundary(grid, 0, 330, 280) == 300
    assert on_boundary((0, 100, 200), 0, 230, 215) == 230  # the segment's end counts
    assert on_boundary((), 0, 400, 140) == 140
    assert on_boundary(grid, 0, 400, 500) == 500  # past the end: with_rest decides
    assert on_boundary(grid, 0, 400, 10, slack=20.0) == 100


class AdaptiveMachine(PacketizerMachine):
    def build(self, data: st.DataObject) -> tuple[Packetizer, list[WorkRange], int]:
        sizes = data.draw(st.lists(st.sampled_from([0, 1, 3, 20, 60]), max_size=6))
        basket = data.draw(st.sampled_from([None, 1, 4, 7]), label="basket")
        places = st.sampled_from(["a", "b", "s", None])
        hosts = {i: h for i in range(len(sizes)) if (h := data.draw(places)) is not None}
        worker_hosts = {f"w{i}": h for i in range(12) if (h := data.draw(places)) is not None}
        packetizer = AdaptivePacketizer(
            files(*sizes, basket=basket),
            workers=data.draw(st.integers(1, 4), label="planned workers"),
            element_hosts=hosts,
            worker_hosts=worker_hosts,
            min_packet_time=data.draw(st.sampled_from([0.01, 0.1, 1.0])),
            max_packet_time=2.0,
            learn_entries=data.draw(st.sampled_from([1, 5, 1000])),
            max_readers_per_node=data.draw(st.sampled_from([None, 1, 2])),
            max_strikes=data.draw(st.integers(1, 3), label="max_strikes"),
        )
        return packetizer, files(*sizes), data.draw(st.integers(0, 3), label="workers at start")


TestAdaptiveMachine = AdaptiveMachine.TestCase
TestAdaptiveMachine.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class EndGameMachine(PacketizerMachine):
    """The end-game under arbitrary rates, requests (prefetching or not), reports out of
    order, outputs overtaking reports, deaths and failures: small floors, so most packets
    are cut from the projected finish and the in-flight estimates move all the time."""

    def build(self, data: st.DataObject) -> tuple[Packetizer, list[WorkRange], int]:
        sizes = data.draw(st.lists(st.sampled_from([1, 7, 40, 150]), min_size=1, max_size=5))
        basket = data.draw(st.sampled_from([None, 3, 10]), label="basket")
        packetizer = AdaptivePacketizer(
            files(*sizes, basket=basket),
            workers=data.draw(st.integers(1, 4), label="planned workers"),
            min_packet_time=data.draw(st.sampled_from([0.001, 0.05])),
            max_packet_time=data.draw(st.sampled_from([0.5, 20.0])),
            packet_time_fraction=data.draw(st.sampled_from([1.0, 2.0, 4.0])),
            min_packet_entries=data.draw(st.sampled_from([1, 3])),
            learn_entries=data.draw(st.sampled_from([1, 4])),
            max_strikes=data.draw(st.integers(1, 3), label="max_strikes"),
        )
        return packetizer, files(*sizes), data.draw(st.integers(1, 4), label="workers at start")


TestEndGameMachine = EndGameMachine.TestCase
TestEndGameMachine.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_work_may_arrive_after_the_start_and_the_end_waits_for_the_whole_input():
    from pyproof.packetizer import make_packetizer

    p = make_packetizer("adaptive", [], workers=2, learn_entries=1000)
    p.expect(0.0)  # files are being looked up: nothing known yet
    assert p.next_packet("w1", 0.0) is None and not p.finished
    p.add_work([WorkRange(element=1, entry_start=0, entry_stop=40_000)], 0.1)
    p.expect(400_000.0)  # ten more files like it, estimated
    first = p.next_packet("w1", 0.2)
    # the learning packet is sized on the whole expected input, not the 40,000 known
    assert (first.element, first.entry_start, first.entry_stop) == (1, 0, 1000)
    with pytest.raises(ValueError, match=r"^element 1 already has work: add an element once$"):
        p.add_work([WorkRange(element=1, entry_start=40_000, entry_stop=40_001)], 0.3)
    p.add_work([WorkRange(element=0, entry_start=0, entry_stop=5)], 0.3)
    packets = [first]
    while (packet := p.next_packet("w2", 0.4)) is not None:
        packets.append(packet)
    for packet in packets:
        worker = "w1" if packet is first else "w2"
        assert p.accept_output(worker, frozenset({packet.packet_id}))
    assert not p.finished  # every known entry delivered, but the look-up goes on
    p.expect(None)
    assert p.finished
    p.validate()
    assert sum(x.entries for x in packets) == 40_005
