"""A model checker for packetizers: drive one as a master would, and check exactly-once.

`Driver` keeps its own model of where every entry is (queued, held by a
worker, delivered, poisoned) and asserts, on every event, that the
packetizer agrees: a packet covers only queued entries, an output is accepted
exactly when the model says merging it counts nothing twice, a lost worker's
undelivered ranges come back (or are poisoned), and in the end every entry is
in exactly one delivered packet. Tests (hypothesis state machines) and the
master's own tests use it; it needs nothing but the Packetizer protocol.
`PacketizerMachine` wraps it in a hypothesis state machine (hypothesis is
a test dependency: import this module from tests only).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pyproof.packetizer.base import Packet, Packetizer, WorkRange

QUEUED, HELD, DELIVERED, OUTSIDE = "queued", "held", "delivered", "outside"
POISONED, SKIPPED = "poisoned", "skipped"


class Driver:
    """The model; see the module docstring. Meant for small work (one slot per entry)."""

    def __init__(self, packetizer: Packetizer, work: Sequence[WorkRange]) -> None:
        self.packetizer = packetizer
        self.place: dict[int, list[str]] = {}
        for w in work:
            slots = self.place.setdefault(w.element, [])
            slots.extend([OUTSIDE] * (w.entry_stop - len(slots)))
            slots[w.entry_start : w.entry_stop] = [QUEUED] * w.entries
        self.held: dict[str, dict[int, Packet]] = {}
        self.delivered: dict[int, Packet] = {}
        self.gone: set[str] = set()
        self.revoked: list[tuple[str, frozenset[int]]] = []
        self.refused = 0
        self.now = 0.0
        self.suspects: set[tuple[int, int]] = set()  # entries lost in flight (see `lose`)
        self.processed: set[int] = set()  # packets reported processed by their worker

    @property
    def workers(self) -> list[str]:
        return sorted(self.held)

    def join(self, worker: str) -> None:
        self.packetizer.add_worker(worker, self.now)
        self.held.setdefault(worker, {})
        self.gone.discard(worker)

    def request(self, worker: str) -> Packet | None:
        packet = self.packetizer.next_packet(worker, self.now)
        if worker in self.gone:
            assert packet is None, f"lost worker {worker} was given {packet}"
            return None
        if packet is None:
            return None
        return self._take(worker, packet)

    def request_batch(self, worker: str) -> list[Packet]:
        """Ask for a batch (`next_packets`, when the packetizer cuts batches); assert each
        packet covers queued entries only, and that the batch respects the policy: one
        packet for a worker not measured yet or in the end-game, never over `max_batch`."""
        many = getattr(self.packetizer, "next_packets", None)
        if many is None:
            packet = self.request(worker)
            return [] if packet is None else [packet]
        stats = self.packetizer.statistics()
        batch = many(worker, self.now)
        if worker in self.gone:
            assert batch == [], f"lost worker {worker} was given {batch}"
            return []
        if len(batch) > 1:
            p = self.packetizer
            assert len(batch) <= p.max_batch, f"a batch of {len(batch)} > {p.max_batch}"
            speed = p._speed.get(worker)  # noqa: SLF001 - the model checks the policy
            assert speed is not None, f"{worker} got a batch before its speed was known"
            # each packet was cut while the batch was under the budget (the last may cross it)
            seconds = sum(x.entries for x in batch[:-1]) / speed
            assert seconds <= p.batch_seconds * (1 + 1e-9), f"a batch of {seconds} s + 1"
            assert stats.entries_queued + p.expected > 0
        return [self._take(worker, packet) for packet in batch]

    def _take(self, worker: str, packet: Packet) -> Packet:
        slots = self.place[packet.element]
        span = slots[packet.entry_start : packet.entry_stop]
        assert packet.entries > 0 and len(span) == packet.entries, f"bad packet {packet}"
        assert set(span) == {QUEUED}, f"{packet} covers entries that are not queued: {set(span)}"
        slots[packet.entry_start : packet.entry_stop] = [HELD] * packet.entries
        self.held.setdefault(worker, {})[packet.packet_id] = packet
        span_keys = _entries([(packet.element, packet.entry_start, packet.entry_stop)])
        if span_keys <= self.suspects:
            assert packet.confirm, f"{packet} was held in flight by a lost worker: not confirm"
        return packet

    def report(self, worker: str, packet_id: int, seconds: float) -> None:
        self.packetizer.packet_processed(worker, packet_id, self.now, seconds=seconds)
        if packet_id in self.held.get(worker, {}):
            self.processed.add(packet_id)  # by its own worker: a loss gives it no strike

    def deliver(self, worker: str, packet_ids: frozenset[int]) -> bool:
        """Send an output; assert it is accepted exactly when merging it is safe."""
        mine = self.held.get(worker, {})
        expected = bool(packet_ids) and all(i in mine for i in packet_ids)
        accepted = self.packetizer.accept_output(worker, packet_ids)
        assert accepted == expected, f"output {sorted(packet_ids)} of {worker}: got {accepted}"
        if not accepted:
            self.refused += 1
            return False
        for packet_id in packet_ids:
            packet = mine.pop(packet_id)
            self._set(packet, DELIVERED)
            self.delivered[packet_id] = packet
        return True

    def lose(self, worker: str, running: frozenset[int] | None = None) -> None:
        """Lose `worker`; assert its undelivered ranges are requeued or poisoned, no more,
        and, given the packets it was `running`, that no other range is poisoned and every
        other one it held comes back `confirm`."""
        poisoned_before = len(self.packetizer.poisoned)
        mine = self.held.get(worker, {})
        if running is None:
            requeued = self.packetizer.worker_lost(worker, self.now)
        else:
            requeued = self.packetizer.worker_lost(worker, self.now, running=running)
            ran = _entries((p.element, p.entry_start, p.entry_stop)
                           for i, p in mine.items() if i in running)
        # a range it held in flight is a suspect now: confirmed when cut again (a
        # processed one is not)
        self.suspects |= _entries((p.element, p.entry_start, p.entry_stop)
                                  for i, p in mine.items() if i not in self.processed)
        self.suspects -= _entries((p.element, p.entry_start, p.entry_stop)
                                  for i, p in mine.items() if i in self.processed)
        newly_poisoned = self.packetizer.poisoned[poisoned_before:]
        if running is not None:
            dead = _entries((r.element, r.entry_start, r.entry_stop) for r in newly_poisoned)
            assert dead <= ran, f"{worker}: poisoned {newly_poisoned}, ran {sorted(running)}"
        lost = self.held.pop(worker, {})
        self.gone.add(worker)
        if lost:
            self.revoked.append((worker, frozenset(lost)))
        had = _entries((p.element, p.entry_start, p.entry_stop) for p in lost.values())
        back = _entries((r.element, r.entry_start, r.entry_stop) for r in requeued)
        dead = _entries((r.element, r.entry_start, r.entry_stop) for r in newly_poisoned)
        assert back.isdisjoint(dead) and back | dead == had, f"{worker}: requeued {requeued}"
        for element, entry in back:
            self.place[element][entry] = QUEUED
        for element, entry in dead:
            self.place[element][entry] = POISONED

    def fail(self, worker: str, packet_id: int, *, whole_element: bool) -> None:
        """Report a packet's file failed; assert exactly the right ranges are skipped."""
        skipped = self.packetizer.packet_failed(
            worker, packet_id, self.now, reason="unreadable", whole_element=whole_element
        )
        packet = self.held.get(worker, {}).pop(packet_id, None)
        if packet is None:
            assert skipped == [], f"{worker} failed a packet it does not hold: {skipped}"
            return
        expected = _entries([(packet.element, packet.entry_start, packet.entry_stop)])
        if whole_element:
            slots = self.place[packet.element]
            expected |= {(packet.element, i) for i, s in enumerate(slots) if s == QUEUED}
        got = _entries((r.element, r.entry_start, r.entry_stop) for r in skipped)
        assert got == expected, f"skipped {skipped} for {packet}"
        for element, entry in got:
            self.place[element][entry] = SKIPPED

    def drain(self, *, max_rounds: int = 100_000) -> None:
        """Drive everything left to delivery with the workers alive (one if none)."""
        if not self.held:
            self.join("drainer")
        for _ in range(max_rounds):
            for worker in self.workers:
                if self.held[worker]:
                    self.deliver(worker, frozenset(self.held[worker]))
            if self.packetizer.finished:
                return
            progressed = False
            for worker in self.workers:
                packet = self.request(worker)
                if packet is not None:
                    progressed = True
                    self.report(worker, packet.packet_id, seconds=packet.entries / 1000)
            assert progressed, f"stuck: {self.packetizer.statistics()}"
            self.now += 1.0
        raise AssertionError("drain did not finish")

    def check_exactly_once(self) -> None:
        """At the end: every entry delivered once, or poisoned (and reported) once."""
        assert self.packetizer.finished
        count: dict[tuple[int, int], int] = {}
        for p in self.delivered.values():
            for key in _entries([(p.element, p.entry_start, p.entry_stop)]):
                count[key] = count.get(key, 0) + 1
        given_up = [*self.packetizer.poisoned, *self.packetizer.skipped]
        for key in _entries((r.element, r.entry_start, r.entry_stop) for r in given_up):
            assert key not in count, f"entry {key} was delivered and given up"
            count[key] = count.get(key, 0) + 1
        for element, slots in self.place.items():
            for entry, place in enumerate(slots):
                if place != OUTSIDE:
                    assert count.get((element, entry)) == 1, f"entry {entry} of {element}"
                    assert place in (DELIVERED, POISONED, SKIPPED), f"{entry} of {element}: {place}"
        inside = sum(place != OUTSIDE for slots in self.place.values() for place in slots)
        assert sum(count.values()) == inside

    def _set(self, packet: Packet, place: str) -> None:
        self.place[packet.element][packet.entry_start : packet.entry_stop] = [
            place
        ] * packet.entries


def _entries(ranges: Iterable[tuple[int, int, int]]) -> set[tuple[int, int]]:
    out: set[tuple[int, int]] = set()
    for element, start, stop in ranges:
        out.update((element, entry) for entry in range(start, stop))
    return out


class PacketizerMachine(RuleBasedStateMachine):
    """Random masters against a packetizer, checked by a `Driver` (needs hypothesis).

    Subclasses define `build`. Rules: workers join (with a speed), request,
    report processed (in any order, duplicated, for others' or unknown ids),
    deliver outputs covering several packets (plus stale, foreign or unknown
    ids), resend accepted outputs, die before or after delivering; time moves.
    Every step validates; teardown drains the rest and checks exactly-once.
    """

    driver: Driver | None = None

    def build(self, data: st.DataObject) -> tuple[Packetizer, list[WorkRange], int]:
        """The packetizer, its work and the number of workers at the start."""
        raise NotImplementedError

    def make_driver(self, packetizer: Packetizer, work: list[WorkRange]) -> Driver:
        """The model to check with (a subclass may check more, e.g. the order of parts)."""
        return Driver(packetizer, work)

    @initialize(data=st.data())
    def start(self, data: st.DataObject) -> None:
        packetizer, work, workers = self.build(data)
        self.driver = self.make_driver(packetizer, work)
        self.speeds: dict[str, float] = {}
        self.accepted: list[tuple[str, frozenset[int]]] = []
        for _ in range(workers):
            self.join(data)

    @rule(data=st.data())
    def join(self, data: st.DataObject) -> None:
        assert self.driver is not None
        name = f"w{len(self.speeds)}"
        self.speeds[name] = data.draw(st.sampled_from([1.0, 3.0, 10.0, 100.0]), label="speed")
        self.driver.join(name)

    @rule(data=st.data())
    def request(self, data: st.DataObject) -> None:
        assert self.driver is not None
        names = self.driver.workers + sorted(self.driver.gone)
        if names:
            self.driver.request(data.draw(st.sampled_from(names), label="requester"))

    @rule(data=st.data())
    def request_batch(self, data: st.DataObject) -> None:
        """Ask for several packets at once (the master's batched grant)."""
        assert self.driver is not None
        names = self.driver.workers + sorted(self.driver.gone)
        if names:
            self.driver.request_batch(data.draw(st.sampled_from(names), label="batch asker"))

    @rule(data=st.data())
    def batch_policy(self, data: st.DataObject) -> None:
        """Batches of any length (the real policy's times are too short for small work)."""
        assert self.driver is not None
        p = self.driver.packetizer
        if hasattr(p, "batch_seconds"):
            p.batch_seconds = data.draw(st.sampled_from([0.02, 10.0, 1e6]), label="budget")
            p.endgame_seconds = data.draw(st.sampled_from([0.0, 0.25, 10.0]), label="endgame")
            p.max_batch = data.draw(st.integers(1, 5), label="max batch")

    @rule(data=st.data())
    def report(self, data: st.DataObject) -> None:
        assert self.driver is not None
        d = self.driver
        mine = [(w, p) for w in d.workers for p in d.held[w].values()]
        if not mine:
            return
        worker, packet = data.draw(st.sampled_from(mine), label="report")
        if data.draw(st.booleans(), label="as someone else") and len(self.speeds) > 1:
            worker = data.draw(st.sampled_from(sorted(self.speeds)), label="reporter")
        d.report(worker, packet.packet_id, packet.entries / self.speeds[worker])

    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        assert self.driver is not None
        d = self.driver
        holders = [w for w in d.workers if d.held[w]]
        if not holders:
            return
        worker = data.draw(st.sampled_from(holders), label="deliverer")
        ids = set(data.draw(st.sets(st.sampled_from(sorted(d.held[worker])), min_size=1)))
        extra = data.draw(st.sampled_from(["none", "delivered", "foreign", "unknown"]))
        others = [i for w in d.workers if w != worker for i in d.held[w]]
        if extra == "delivered" and d.delivered:
            ids.add(data.draw(st.sampled_from(sorted(d.delivered))))
        elif extra == "foreign" and others:
            ids.add(data.draw(st.sampled_from(others)))
        elif extra == "unknown":
            ids.add(10**9)
        if d.deliver(worker, frozenset(ids)):
            self.accepted.append((worker, frozenset(ids)))

    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        assert self.driver is not None
        if self.accepted:
            worker, ids = data.draw(st.sampled_from(self.accepted), label="duplicate")
            assert not self.driver.deliver(worker, ids)

    @rule(data=st.data())
    def late_output(self, data: st.DataObject) -> None:
        """An output of a lost worker arrives after all (its ids were revoked)."""
        assert self.driver is not None
        if self.driver.revoked:
            worker, ids = data.draw(st.sampled_from(self.driver.revoked), label="late")
            assert not self.driver.deliver(worker, ids)

    @rule(data=st.data())
    def rejoin(self, data: st.DataObject) -> None:
        """A lost worker is restarted under its old name."""
        assert self.driver is not None
        if self.driver.gone:
            self.driver.join(data.draw(st.sampled_from(sorted(self.driver.gone)), label="back"))

    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        assert self.driver is not None
        if self.driver.workers:
            self.driver.lose(data.draw(st.sampled_from(self.driver.workers), label="lost"))

    @rule(data=st.data())
    def lose_running(self, data: st.DataObject) -> None:
        """Lose a worker that was running some of its packets (the master knows which):
        only those may be poisoned; every range it held comes back `confirm`."""
        assert self.driver is not None
        d = self.driver
        if d.workers:
            worker = data.draw(st.sampled_from(d.workers), label="lost running")
            held = sorted(d.held[worker])
            running = data.draw(st.sets(st.sampled_from(held)) if held else st.just(set()),
                                label="running")
            d.lose(worker, frozenset(running))

    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        """A worker cannot read a packet's file (sometimes someone else's packet id)."""
        assert self.driver is not None
        d = self.driver
        mine = [(w, i) for w in d.workers for i in d.held[w]]
        if mine:
            worker, packet_id = data.draw(st.sampled_from(mine), label="failed")
            if data.draw(st.booleans(), label="as someone else"):
                worker = data.draw(st.sampled_from(sorted(self.speeds)), label="claimer")
            d.fail(worker, packet_id, whole_element=data.draw(st.booleans(), label="whole"))

    @rule(dt=st.sampled_from([0.1, 1.0, 10.0]))
    def tick(self, dt: float) -> None:
        assert self.driver is not None
        self.driver.now += dt

    @invariant()
    def valid(self) -> None:
        if self.driver is not None:
            packetizer = self.driver.packetizer
            packetizer.validate()
            assert packetizer.entries_queued == packetizer.statistics().entries_queued

    def teardown(self) -> None:
        if self.driver is not None:
            self.driver.drain()
            self.driver.packetizer.validate()
            self.driver.check_exactly_once()
