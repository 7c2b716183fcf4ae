"""TPacketizerAdaptive done better: packets sized in time, so every worker finishes together.

Why each rule:

- A packet is sized by time, not entries: `rate(worker) * packet_time`, where
  `rate` is the worker's own speed over its last few packets, so a straggler
  10x slower gets a packet 10x smaller and is never left holding a big one.
- `packet_time` is a fraction (1/4) of the time this worker has left before
  the projected common finish, clamped to `[min_packet_time, max_packet_time]`:
  big packets while there is much to do (few requests, few basket re-reads),
  smaller and smaller ones near the end (PROOF's end-game), so every worker
  finishes within about one `min_packet_time` (50 ms) of the others. The
  projected finish is now + (queued entries + the in-flight entries not yet
  processed) / the sum of current worker rates (not PROOF's cumulative
  average, so joins, deaths and slowdowns count at once). The time left is
  counted from when the worker will start the packet: a worker asks for its
  next packet while it processes the current one, and is busy until then.
  In-flight work is estimated from each worker's packets and rate (`_Backlog`).
- Floors keep grants cheap: `min_packet_time` (a worker asks at most about 20
  times a second) and `min_packet_entries`. (Measured in the simulator, 100
  workers, 3x speed spread, 1% stragglers 10x slower: a 1 s floor ended 1.8%
  after the ideal with workers finishing 1.3 s apart; 50 ms, 0.3% and 0.06 s.)
- A worker's first packet is small (`learn_entries`): its rate is unknown.
  It is capped at total / (20 * workers) so that a small query is still
  shared, but never below `min_learn_entries` (500): a tiny query (1,000
  events over 8 files) goes out as one packet per file, not dozens of
  25-entry packets each costing a round trip, a read and a report.
- Work may arrive after the start (files looked up one by one, `add_work`):
  until the look-up ends, the entries still expected (`expect`, an estimate
  from the files known so far) count as queued when sizing packets, so the
  end-game is planned on the estimate and corrected as counts come in; the
  last packets are cut once everything is known, since `finished` waits for
  the input to be complete.
- The rest of a file goes in one packet when under 1.5 packet sizes.
- Packet edges go where baskets begin (`WorkRange.boundaries`, from the
  look-up) when one is within half a packet of the size asked: an edge inside
  a basket makes both packets decompress all of it (`on_boundary`); a first
  packet may grow to the end of its basket while that stays within its cap.
- Locality: elements may live on a storage node (`element_hosts`), workers on
  a host (`worker_hosts` or `add_worker(..., host=)`). A node's lag is its
  queued entries over the rate of the workers that will read it (its local
  workers, less those reading elsewhere, plus remote readers). A worker reads
  locally unless a remote node lags `local_preference` (1.5) times more than
  both its own node and the whole cluster's time left, i.e. would otherwise
  finish well after everyone. A node nobody local can read is thus helped
  from the start, not at the end; `max_readers_per_node` caps concurrent
  readers of one node. (1.5 measured in the simulator with remote reads 1.5x
  slower: 1.0 reads remotely too eagerly, +45% makespan; 1.2 costs +2-5%.)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from pyproof.hosts.locality import worker_host
from pyproof.packetizer.backlog import Backlog
from pyproof.packetizer.base import Packet, WorkRange
from pyproof.packetizer.common import LedgerPacketizer, on_boundary, with_rest
from pyproof.packetizer.ledger import Ledger, Node, Record
from pyproof.packetizer.rates import RateTable

_NOTHING = object()


class AdaptivePacketizer(LedgerPacketizer):
    """The default data packetizer; see the module docstring for the rules.

    Parameters (settable per query): `min_packet_time` 0.05 s, `max_packet_time`
    20 s, `packet_time_fraction` 4 (packet time = time left / 4),
    `min_packet_entries` 1,
    `learn_entries` 1000 (first packet, capped at total / (20 * workers), but not
    below `min_learn_entries` 500),
    `max_readers_per_node` None (no cap; counts local and remote readers),
    `local_preference` 1.5, `window` 5 packets for rates, `max_strikes` 3,
    `local_host` None (else a worker joining later without a `worker_hosts` entry
    is on the host its `@HOST` name suffix says, or on this one).
    With a reader cap, `next_packet` may answer None while work is queued:
    ask again after a packet is processed.
    """

    def __init__(
        self,
        work: Sequence[WorkRange],
        *,
        workers: int,
        element_hosts: Mapping[int, str] | None = None,
        worker_hosts: Mapping[str, str] | None = None,
        min_packet_time: float = 0.05,
        max_packet_time: float = 20.0,
        packet_time_fraction: float = 4.0,
        min_packet_entries: int = 1,
        learn_entries: int = 1000,
        min_learn_entries: int = 500,
        max_readers_per_node: int | None = None,
        local_preference: float = 1.5,
        window: int = 5,
        max_strikes: int = 3,
        local_host: str | None = None,
    ) -> None:
        if not 0 < min_packet_time <= max_packet_time:
            raise ValueError(
                f"need 0 < min_packet_time <= max_packet_time, "
                f"got {min_packet_time} and {max_packet_time}"
            )
        if packet_time_fraction < 1:
            raise ValueError(f"packet_time_fraction must be >= 1, got {packet_time_fraction}")
        if learn_entries < 1:
            raise ValueError(f"learn_entries must be >= 1, got {learn_entries}")
        if min_learn_entries < 1:
            raise ValueError(f"min_learn_entries must be >= 1, got {min_learn_entries}")
        if min_packet_entries < 1:
            raise ValueError(f"min_packet_entries must be >= 1, got {min_packet_entries}")
        if max_readers_per_node is not None and max_readers_per_node < 1:
            raise ValueError(f"max_readers_per_node must be >= 1, got {max_readers_per_node}")
        ledger = Ledger(work, nodes=element_hosts, max_strikes=max_strikes)
        super().__init__(ledger, workers=workers)
        self._min_time, self._max_time = min_packet_time, max_packet_time
        self._fraction = packet_time_fraction
        self._learn = learn_entries
        self._min_learn = min_learn_entries
        self._min_entries = min_packet_entries
        self._backlog = Backlog()
        self._cap = max_readers_per_node
        self._local_preference = local_preference
        self._rates = RateTable(window)
        self._worker_hosts = dict(worker_hosts or {})
        self._local_host = local_host
        self._hosts: dict[str, Node] = {}
        self._host_workers: Counter[Node] = Counter()
        self._host_measured: Counter[Node] = Counter()
        self._host_rate: dict[Node, float] = {}
        self._away: dict[Node, float] = {}
        self._remote_in: dict[Node, float] = {}
        self._reading: dict[str, tuple[int, Node, Node, float]] = {}
        self._current: dict[str, int] = {}

    def add_worker(self, worker: str, now: float, *, host: str | None = None) -> None:
        """`worker` joined, on `host` (default: `worker_hosts[worker]`, else no host)."""
        if host is not None:
            self._worker_hosts[worker] = host
        super().add_worker(worker, now)

    # -- choosing ------------------------------------------------------------------------

    def _next(self, worker: str, now: float) -> Packet | None:
        self._end_reading(worker)
        node = self._choose_node(worker)
        if node is _NOTHING:
            return None
        assert node is None or isinstance(node, str)
        element = self._ledger.pick(node, self._current.get(worker))
        assert element is not None
        packet = self._ledger.cut(worker, element, self._size(worker, element, now), now)
        self._backlog.assign(
            worker, packet.packet_id, packet.entry_stop - packet.entry_start,
            self._rates.rate_or_mean(worker), now
        )
        self._current[worker] = element
        self._start_reading(worker, packet.packet_id, node)
        return packet

    def _choose_node(self, worker: str) -> object:
        """Where `worker` reads next (see the module docstring), or _NOTHING if all are capped.

        Its own node (or unplaced work) unless a remote node lags more than
        `local_preference` times both its own node and the cluster's time left.
        O(nodes with work) per decision, arithmetic inlined: the hot loop.
        """
        host, ledger, cap = self._hosts.get(worker), self._ledger, self._cap
        nodes = ledger.nodes_with_work()
        if len(nodes) == 1 and None in nodes:  # no locality: unplaced work, anyone reads it
            return None
        mean = self._rates.mean() or 1.0
        cluster = self._rates.cluster(len(self._workers)) or float(len(self._workers))
        remote: tuple[float, int, Node] | None = None  # (lag, queued, node) of the worst
        local: tuple[float, int, Node] | None = None
        for node in nodes:
            if node is not None and cap is not None and ledger.node_readers(node) >= cap:
                continue
            queued = ledger.node_queued(node)
            if node is None:
                capacity = cluster
            else:
                unmeasured = self._host_workers[node] - self._host_measured[node]
                own = self._host_rate.get(node, 0.0) + unmeasured * mean
                capacity = max(0.0, own - self._away.get(node, 0.0))
                capacity += self._remote_in.get(node, 0.0)
            key = (queued / capacity if capacity > 0 else math.inf, queued, node)
            if node is None or node == host:
                if local is None or key[:2] > local[:2]:
                    local = key
            elif remote is None or key[:2] > remote[:2]:
                remote = key
        if local is None:
            return _NOTHING if remote is None else remote[2]
        left = ledger.queued / cluster
        if remote is not None and remote[0] > self._local_preference * max(local[0], left):
            return remote[2]
        return local[2]

    def _size(self, worker: str, element: int, now: float) -> int:
        """Entries for `worker`'s next packet: `packet_time_fraction` of the time it has
        left before the projected common finish, from when it will start the packet."""
        rate = self._rates.rate(worker)
        expected = self._expected or 0.0  # still being looked up: planned for, as queued
        start, stop = self._ledger.head(element)
        boundaries = self._ledger.boundaries(element)
        if rate is None:
            share = int(self._ledger.total + expected) // (20 * self.worker_count)
            size = min(self._learn, max(share, self._min_learn))
            # up to the end of the basket, if that is still a small share of the query
            size = on_boundary(boundaries, start, stop, size,
                               slack=max(0.5, share / size - 1))
        else:
            cluster = self._rates.cluster(self.worker_count)
            left = (self._ledger.queued + expected + self._backlog.entries(now)) / cluster
            own = max(0.0, self._backlog.busy(worker) - now)  # its own in-flight work first
            packet_time = min(max((left - own) / self._fraction, self._min_time), self._max_time)
            size = max(int(rate * packet_time), self._min_entries)
            size = on_boundary(boundaries, start, stop, size)
        return with_rest(stop - start, max(1, size))

    # -- who reads what ------------------------------------------------------------------

    def _start_reading(self, worker: str, packet_id: int, node: Node) -> None:
        host = self._hosts.get(worker)
        if node is None or node == host:
            return
        rate = self._rates.rate_or_mean(worker)
        self._reading[worker] = (packet_id, node, host, rate)
        self._remote_in[node] = self._remote_in.get(node, 0.0) + rate
        self._away[host] = self._away.get(host, 0.0) + rate

    def _end_reading(self, worker: str, packet_id: int | None = None) -> None:
        reading = self._reading.get(worker)
        if reading is None or (packet_id is not None and reading[0] != packet_id):
            return
        del self._reading[worker]
        _, node, host, rate = reading
        self._remote_in[node] -= rate
        self._away[host] -= rate

    # -- events --------------------------------------------------------------------------

    def _on_join(self, worker: str, now: float) -> None:
        host = self._worker_hosts.get(worker)
        if host is None and self._local_host is not None:  # joined later: its name says
            host = worker_host(worker, self._local_host)
        self._hosts[worker] = host
        self._host_workers[host] += 1

    def _on_processed(self, worker: str, record: Record, now: float, seconds: float) -> None:
        self._end_reading(worker, record.packet.packet_id)
        host = self._hosts[worker]
        old = self._rates.rate(worker)
        self._rates.record(worker, record.entries, seconds)
        new = self._rates.rate(worker)
        assert new is not None
        self._backlog.finish(record.packet.packet_id, new, now)
        self._host_rate[host] = self._host_rate.get(host, 0.0) + new - (old or 0.0)
        if old is None:
            self._host_measured[host] += 1

    def _on_failed(self, worker: str, packet_id: int, now: float) -> None:
        self._end_reading(worker, packet_id)
        self._backlog.finish(packet_id, self._rates.rate_or_mean(worker), now)

    def accept_output(self, worker: str, packet_ids: frozenset[int]) -> bool:
        accepted = super().accept_output(worker, packet_ids)
        if accepted:  # delivered before its processed report: no longer in flight
            rate = self._rates.rate_or_mean(worker)
            for packet_id in packet_ids:
                self._backlog.finish(packet_id, rate, None)
        return accepted

    def _on_lost(self, worker: str, now: float) -> None:
        self._end_reading(worker)
        self._current.pop(worker, None)
        host = self._hosts.pop(worker)
        self._host_workers[host] -= 1
        old = self._rates.rate(worker)
        if old is not None:
            self._host_rate[host] -= old
            self._host_measured[host] -= 1
        self._rates.forget(worker)
        self._backlog.forget(worker)

    def validate(self) -> None:
        super().validate()
        assert set(self._hosts) == set(self._workers), "host table drifted"
        assert +self._host_workers == Counter(self._hosts.values()), "host counts drifted"
        measured = Counter(h for w, h in self._hosts.items() if self._rates.rate(w) is not None)
        assert +self._host_measured == measured, "measured counts drifted"
        self._backlog.validate()
