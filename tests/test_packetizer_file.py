"""FilePacketizer (PROOF's TPacketizerFile): whole files as packets."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pyproof.packetizer import FilePacketizer, Packet, Packetizer, WorkRange, make_packetizer
from pyproof.packetizer.testing import PacketizerMachine


def files(*sizes: int) -> list[WorkRange]:
    return [WorkRange(element=i, entry_start=0, entry_stop=n) for i, n in enumerate(sizes)]


def got(packet: Packet | None) -> Packet:
    assert packet is not None
    return packet


def test_each_packet_is_a_whole_file() -> None:
    p = FilePacketizer(files(1, 1, 500), workers=1)
    packets = [got(p.next_packet("w", 0.0)) for _ in range(3)]
    assert [(x.element, x.entry_start, x.entry_stop) for x in packets] == [
        (0, 0, 1),
        (1, 0, 1),
        (2, 0, 500),
    ]
    assert p.next_packet("w", 0.0) is None


def test_a_worker_takes_its_hosts_files_then_unplaced_ones_then_the_busiest_node() -> None:
    hosts = {0: "b", 1: "a", 2: "c", 3: "c", 4: "c"}
    p = FilePacketizer(files(1, 1, 1, 1, 1, 1), workers=1, element_hosts=hosts)
    p.add_worker("w", 0.0, host="a")
    order = [got(p.next_packet("w", 0.0)).element for _ in range(6)]
    assert order[:4] == [1, 5, 2, 3] and sorted(order[4:]) == [0, 4]


def test_a_lost_workers_file_is_given_again_whole() -> None:
    p = FilePacketizer(files(1, 1), workers=2)
    first = got(p.next_packet("a", 0.0))
    assert p.worker_lost("a", 1.0) == [WorkRange(element=0, entry_start=0, entry_stop=1)]
    again = got(p.next_packet("b", 1.0))
    assert (again.element, again.packet_id != first.packet_id) == (0, True)


def test_make_packetizer_builds_a_file_packetizer() -> None:
    p = make_packetizer("file", files(1), workers=1, worker_hosts={"w": "a"})
    assert isinstance(p, FilePacketizer)


class FileMachine(PacketizerMachine):
    def build(self, data: st.DataObject) -> tuple[Packetizer, list[WorkRange], int]:
        sizes = data.draw(st.lists(st.sampled_from([0, 1, 1, 4]), max_size=8))
        places = st.sampled_from(["a", "b", None])
        hosts = {i: h for i in range(len(sizes)) if (h := data.draw(places)) is not None}
        worker_hosts = {f"w{i}": h for i in range(12) if (h := data.draw(places)) is not None}
        packetizer = FilePacketizer(
            files(*sizes),
            workers=data.draw(st.integers(1, 3)),
            element_hosts=hosts,
            worker_hosts=worker_hosts,
            max_strikes=data.draw(st.integers(1, 3)),
        )
        return packetizer, files(*sizes), data.draw(st.integers(0, 3), label="workers at start")


TestFileMachine = FileMachine.TestCase
TestFileMachine.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
