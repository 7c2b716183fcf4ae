"""QueryCore under fake workers: exactly once through duplicates, resends, deaths, stop, abort.

Fake workers ask, process, send outputs (sometimes twice: a chunk resent after
its answer was lost, or a duplicate), die before or after delivering, and join
late; merges complete in any order; the user stops or aborts at any point.
The model counts every merged entry, so the invariants are the issue's:
every entry counted at most once, exactly once at a normal finish, a stopped
result's ranges equal what was merged, and no instruction after the end.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import event as note
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pyproof.packetizer.base import WorkRange
from pyproof.query import core as qc
from pyproof.query.spec import QuerySpec
from pyproof.transport.codec import RemoteError


class FakeWorker:
    def __init__(self, name: str) -> None:
        self.name = name
        self.alive = True
        self.assigned: list[int] = []
        self.held: list[int] = []
        self.reports: list[qc.Report] = []
        self.done = False


class QueryMachine(RuleBasedStateMachine):
    @initialize(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=4),
                packet=st.integers(1, 12), feedback=st.booleans(),
                workers=st.integers(0, 3))
    def setup(self, sizes, packet, feedback, workers):
        self.now = 0.0
        self.work = tuple(WorkRange(element=i, entry_start=0, entry_stop=n)
                          for i, n in enumerate(sizes))
        self.packet_entries = packet
        spec = QuerySpec(selector="m:S", cycles=1, feedback=("h",) if feedback else ())
        self.workers: dict[str, FakeWorker] = {}
        self.serial = 0
        for _ in range(workers):
            self._new_worker()
        self.core = qc.QueryCore(query_id="q", spec=spec, workers=list(self.workers), now=0.0)
        self.ranges: dict[int, tuple[int, int, int]] = {}  # packet id -> range (from Grant)
        self.pending: dict[int, frozenset[int]] = {}        # merge token -> packet ids
        self.merged: Counter[tuple[int, int]] = Counter()   # (element, entry) -> times
        self.batches: list[tuple[str, frozenset[int]]] = []
        self.finish_pending = False
        self.looked_up = False
        self.cause = 0
        self.granted_batches = 0
        # batches of any length from the start: the real policy (20 ms of work, never in
        # the end-game) would rarely batch a query this small
        self.policy = (1e6, 0.0, 4)

    def _new_worker(self) -> str:
        name = f"worker-{self.serial}#{100 + self.serial}"
        self.serial += 1
        self.workers[name] = FakeWorker(name)
        return name

    # -- feeding the core, checking what comes back -----------------------------------
    def feed(self, event: qc.Event, *, request: str | None = None) -> list:
        ended_before = self.core.ended
        had_packetizer = self.core.packetizer is not None
        out = self.core.handle(event)
        if not had_packetizer:
            self._set_policy()
        self.core.validate()
        if ended_before:  # nothing but answers to workers once the query is over
            assert all(isinstance(i, qc.ANSWERS) for i in out), out
        answers = [i for i in out if isinstance(i, qc.ANSWERS)]
        if request is not None:
            assert len(answers) == 1 and answers[0].worker == request, out
        else:
            assert not answers, out
        for i in out:
            if isinstance(i, qc.Grant):
                assert i.packets and i.packet is i.packets[0]
                if len(i.packets) > 1:
                    self.granted_batches += 1
                for p in i.packets:  # a batch: queued at the worker, processed in order
                    assert p.packet_id not in self.ranges
                    self.ranges[p.packet_id] = (p.element, p.entry_start, p.entry_stop)
                    self.workers[i.worker].assigned.append(p.packet_id)
            elif isinstance(i, qc.Merge):
                self.pending[i.token] = i.packet_ids
            elif isinstance(i, qc.Finish):
                assert not self.pending, "Finish before every merge was done"
                assert not self.finish_pending
                self.finish_pending = True
            elif isinstance(i, qc.Done):
                self.workers[i.worker].done = True
        return out

    def cause_id(self) -> str:
        self.cause += 1
        return f"e{self.cause}"

    def alive(self) -> list[str]:
        return sorted(w for w, f in self.workers.items() if f.alive)

    # -- rules ---------------------------------------------------------------------------
    @precondition(lambda self: not self.looked_up)
    @rule()
    def lookup(self):
        self.looked_up = True
        self.feed(qc.LookupDone(work=self.work, kind="basic",
                                params={"packet_entries": self.packet_entries},
                                now=self.now, cause=self.cause_id()))

    @rule(budget=st.sampled_from([0.02, 1e6]), endgame=st.sampled_from([0.0, 0.25, 1e6]),
          most=st.integers(1, 6))
    def batch_policy(self, budget, endgame, most):
        """Change the batch policy mid-query (see `_policy`)."""
        self.policy = (budget, endgame, most)
        self._set_policy()

    def _set_policy(self):
        p = self.core.packetizer
        if p is not None and hasattr(p, "batch_seconds"):
            p.batch_seconds, p.endgame_seconds, p.max_batch = self.policy

    @rule(data=st.data())
    def leave_dropping_queue(self, data):
        """A worker stopped locally (removed, its host leaving): it sends the outputs of what
        it processed, drops the queued packets it did not start, and is then lost: the
        master requeues exactly those."""
        names = [w for w in self.alive() if self.workers[w].assigned]
        if not names:
            return
        w = self.workers[data.draw(st.sampled_from(names))]
        if w.held:
            ids = frozenset(w.held)
            reports, w.reports = tuple(w.reports), []
            w.held = []
            self.batches.append((w.name, ids))
            self.feed(qc.OutputArrived(worker=w.name, packet_ids=ids, reports=reports,
                                       now=self.now, cause=self.cause_id()), request=w.name)
        w.assigned = []
        w.alive = False
        self.feed(qc.WorkerLost(worker=w.name, now=self.now, cause=self.cause_id()))

    @rule()
    def join(self):
        self.feed(qc.WorkerJoined(worker=self._new_worker(), now=self.now,
                                  cause=self.cause_id()))

    @rule(data=st.data())
    def request(self, data):
        names = self.alive()
        if not names:
            return
        w = self.workers[data.draw(st.sampled_from(names))]
        reports, w.reports = tuple(w.reports), []
        self.feed(qc.PacketRequested(worker=w.name, reports=reports, now=self.now,
                                     cause=self.cause_id()), request=w.name)

    @rule(data=st.data())
    def process(self, data):
        busy = [w for w in self.alive() if self.workers[w].assigned]
        if not busy:
            return
        w = self.workers[data.draw(st.sampled_from(busy))]
        pid = w.assigned.pop(0)
        element, start, stop = self.ranges[pid]
        w.held.append(pid)
        w.reports.append(qc.Report(packet=pid, entries=stop - start, seconds=0.01))

    @rule(data=st.data())
    def send_outputs(self, data):
        holding = [w for w in self.alive() if self.workers[w].held]
        if not holding:
            return
        w = self.workers[data.draw(st.sampled_from(holding))]
        ids = frozenset(w.held)
        reports, w.reports = tuple(w.reports), []
        w.held = []
        self.batches.append((w.name, ids))
        self.feed(qc.OutputArrived(worker=w.name, packet_ids=ids, reports=reports,
                                   now=self.now, cause=self.cause_id()), request=w.name)

    @rule(data=st.data())
    def send_outputs_with_next(self, data):
        """A worker's outputs carry its next request (master_query.QueryRun.handle): the
        shell feeds OutputArrived, then, if it was answered Ack, PacketRequested."""
        holding = [w for w in self.alive() if self.workers[w].held]
        if not holding:
            return
        w = self.workers[data.draw(st.sampled_from(holding))]
        ids = frozenset(w.held)
        reports, w.reports = tuple(w.reports), []
        w.held = []
        self.batches.append((w.name, ids))
        out = self.feed(qc.OutputArrived(worker=w.name, packet_ids=ids, reports=reports,
                                         now=self.now, cause=self.cause_id()), request=w.name)
        if any(isinstance(i, qc.Ack) for i in out):
            self.feed(qc.PacketRequested(worker=w.name, now=self.now, cause=self.cause_id()),
                      request=w.name)

    @precondition(lambda self: self.batches)
    @rule(data=st.data())
    def resend_outputs(self, data):
        """A chunk resent, or a duplicated request: never merged a second time."""
        worker, ids = data.draw(st.sampled_from(self.batches))
        out = self.feed(qc.OutputArrived(worker=worker, packet_ids=ids, now=self.now,
                                         cause=self.cause_id()), request=worker)
        assert not any(isinstance(i, qc.Merge) for i in out)
        assert not any(isinstance(i, qc.Ack) and i.accepted for i in out)

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), fail=st.integers(0, 30))
    def complete_merge(self, data, fail):
        token = data.draw(st.sampled_from(sorted(self.pending)))
        ids = self.pending.pop(token)
        error = RemoteError(type="MergeError", message="boom") if fail == 0 else None
        if error is None:
            for pid in ids:
                element, start, stop = self.ranges[pid]
                for entry in range(start, stop):
                    self.merged[(element, entry)] += 1
        self.feed(qc.Merged(token=token, error=error, cause=self.cause_id()))

    @rule(data=st.data(), dice=st.integers(0, 2))
    def lose_worker(self, data, dice):
        names = self.alive()
        if not names or dice:
            return
        w = self.workers[data.draw(st.sampled_from(names))]
        w.alive = False
        self.feed(qc.WorkerLost(worker=w.name, now=self.now, cause=self.cause_id()))

    @rule(dt=st.floats(0.0, 2.0))
    def tick(self, dt):
        self.now += dt
        self.feed(qc.Tick(now=self.now, cause=self.cause_id()))

    # stop and abort end the interesting part: rarer than the other rules
    @rule(dice=st.integers(0, 5))
    def stop(self, dice):
        if dice == 0:
            self.feed(qc.StopRequested(now=self.now, cause=self.cause_id()))

    @rule(dice=st.integers(0, 11))
    def abort(self, dice):
        if dice == 0:
            self.feed(qc.AbortRequested(cause=self.cause_id()))

    @precondition(lambda self: self.finish_pending)
    @rule()
    def finished(self):
        self.finish_pending = False
        self.feed(qc.Finished(now=self.now, cause=self.cause_id()))

    @rule()
    def run_to_the_end(self):
        """Every live worker does all it can until the query ends (or no one is left)."""
        if not self.looked_up:
            self.lookup()
        if not self.alive() and not self.core.ended:
            self.join()
        for _ in range(500):
            if self.core.ended:
                break
            for token in sorted(self.pending):
                ids = self.pending.pop(token)
                for pid in ids:
                    element, start, stop = self.ranges[pid]
                    for entry in range(start, stop):
                        self.merged[(element, entry)] += 1
                self.feed(qc.Merged(token=token, cause=self.cause_id()))
            if self.finish_pending:
                self.finished()
                continue
            for name in self.alive():
                w = self.workers[name]
                while w.assigned:
                    pid = w.assigned.pop(0)
                    w.held.append(pid)
                    e, s, t = self.ranges[pid]
                    w.reports.append(qc.Report(packet=pid, entries=t - s))
                reports, w.reports = tuple(w.reports), []
                out = self.feed(qc.PacketRequested(worker=name, reports=reports, now=self.now,
                                                   cause=self.cause_id()), request=name)
                if w.held and any(isinstance(i, qc.Done | qc.Wait) for i in out):
                    ids = frozenset(w.held)
                    w.held = []
                    self.batches.append((name, ids))
                    self.feed(qc.OutputArrived(worker=name, packet_ids=ids, now=self.now,
                                               cause=self.cause_id()), request=name)
        assert self.core.ended, (self.core.state, self.core.story()[-5:])

    # -- invariants ------------------------------------------------------------------
    @invariant()
    def a_worker_s_queued_and_unsent_packets_are_outstanding(self):
        """What `flush` and a loss rely on: the core knows every packet a worker holds."""
        for name in self.alive():
            w = self.workers[name]
            mine = set(w.assigned) | set(w.held)
            assert mine <= self.core.outstanding.get(name, set()), (name, mine)

    @invariant()
    def every_entry_is_counted_at_most_once(self):
        assert all(n == 1 for n in self.merged.values()), self.merged.most_common(1)

    @invariant()
    def a_normal_finish_counts_every_entry_exactly_once(self):
        if self.core.state == qc.QueryState.FINISHED:
            expected = {(w.element, e) for w in self.work for e in range(w.entry_start,
                                                                        w.entry_stop)}
            poisoned = {(r.element, e) for r in self.core.packetizer.poisoned
                        for e in range(r.entry_start, r.entry_stop)}
            assert set(self.merged) == expected - poisoned
            assert self.core.delivered == len(self.merged)

    @invariant()
    def a_stopped_result_covers_exactly_what_was_merged(self):
        if self.core.state == qc.QueryState.STOPPED:
            covered = {(c_element, e)
                       for c_element, s, t in self.core.covered for e in range(s, t)}
            assert covered == set(self.merged)
            lineage = self.core.lineage()
            assert lineage["stopped"] is True
            assert sum(r["entry_stop"] - r["entry_start"] for r in lineage["covered"]) \
                == len(self.merged)


QueryMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=50,
                                          deadline=None)
TestQueryMachine = QueryMachine.TestCase


def fed(core: qc.QueryCore, *events: qc.Event) -> list:
    out = core.handle(*events)
    core.validate()
    return out


def test_a_stop_while_packets_are_in_flight_finishes_them_then_ends_partial():
    core = qc.QueryCore(query_id="q", spec=QuerySpec(selector="m:S", cycles=1),
                        workers=["w#1"], now=0.0)
    fed(core, qc.LookupDone(work=(WorkRange(element=0, entry_start=0, entry_stop=100),),
                            kind="basic", params={"packet_entries": 10}, now=0.0))
    [grant] = fed(core, qc.PacketRequested(worker="w#1", now=0.1))
    assert isinstance(grant, qc.Grant) and grant.packet.entry_stop == 10
    assert fed(core, qc.StopRequested(now=0.2)) == []
    assert core.state == qc.QueryState.STOPPING
    report = qc.Report(packet=grant.packet.packet_id, entries=10)
    assert fed(core, qc.PacketRequested(worker="w#1", reports=(report,), now=0.3)) == [
        qc.Done(worker="w#1")]
    merge, ack = fed(core, qc.OutputArrived(worker="w#1", now=0.4,
                                            packet_ids=frozenset({grant.packet.packet_id})))
    assert isinstance(merge, qc.Merge) and ack == qc.Ack(worker="w#1", accepted=True)
    assert fed(core, qc.Merged(token=merge.token)) == [qc.Finish(stopped=True)]
    assert fed(core, qc.Finished(now=0.5)) == []
    assert core.state == qc.QueryState.STOPPED
    assert core.lineage()["covered"] == [{"entry_start": 0, "entry_stop": 10}]
    assert core.stats(9.0)["wall_time"] == pytest.approx(0.5)


def test_an_abort_fails_the_query_and_refuses_the_workers_after_it():
    core = qc.QueryCore(query_id="q", spec=QuerySpec(selector="m:S", cycles=1),
                        workers=["w#1"], now=0.0)
    [fail] = fed(core, qc.AbortRequested(reason="aborted by the user"))
    assert fail.aborted and fail.error.type == "QueryAborted"
    assert fed(core, qc.PacketRequested(worker="w#1", now=1.0)) == [
        qc.Refuse(worker="w#1", reason="query q aborted", ended=True)]  # for every worker


def test_a_worker_declared_lost_is_refused_but_the_query_is_not_over_for_the_others():
    core = qc.QueryCore(query_id="q", spec=QuerySpec(selector="m:S", cycles=1),
                        workers=["w#1", "w#2"], now=0.0)
    fed(core, qc.LookupDone(work=(WorkRange(element=0, entry_start=0, entry_stop=100),),
                            kind="basic", params={"packet_entries": 10}, now=0.0))
    fed(core, qc.WorkerLost(worker="w#1", now=0.5))
    assert fed(core, qc.PacketRequested(worker="w#1", now=1.0)) == [
        qc.Refuse(worker="w#1", reason="w#1 was declared lost")]  # ended=False: not over
    assert isinstance(fed(core, qc.PacketRequested(worker="w#2", now=1.0))[0], qc.Grant)


def test_feedback_is_sent_at_its_interval_only_after_something_new_was_merged():
    core = qc.QueryCore(query_id="q", spec=QuerySpec(selector="m:S", cycles=1, feedback=("h",),
                                                     feedback_interval=1.0),
                        workers=["w#1"], now=0.0)
    fed(core, qc.LookupDone(work=(WorkRange(element=0, entry_start=0, entry_stop=100),),
                            kind="basic", params={"packet_entries": 10}, now=0.0))
    [grant] = fed(core, qc.PacketRequested(worker="w#1", now=0.0))
    merge, _ = fed(core, qc.OutputArrived(worker="w#1", now=0.1,
                                          packet_ids=frozenset({grant.packet.packet_id})))
    assert not any(isinstance(i, qc.SendFeedback) for i in fed(core, qc.Tick(now=1.5)))
    fed(core, qc.Merged(token=merge.token))
    assert fed(core, qc.Tick(now=1.6))[-1] == qc.SendFeedback(names=("h",))
    assert not any(isinstance(i, qc.SendFeedback) for i in fed(core, qc.Tick(now=3.0)))


def test_a_worker_failing_before_the_look_up_is_done_fails_the_query_at_once():
    # the selector did not import on the worker while the master still looked files up:
    # telling it to wait would lose the error, and the query would wait for ever
    core = qc.QueryCore(query_id="q", spec=QuerySpec(selector="m:S", cycles=1),
                        workers=["w#1"], now=0.0)
    error = RemoteError(type="SelectorError", message="cannot import", traceback="")
    fail, refuse = fed(core, qc.WorkerFailed(worker="w#1", error=error))
    assert isinstance(fail, qc.Fail) and fail.error.type == "SelectorError"
    assert refuse == qc.Refuse(worker="w#1", reason="query failed", ended=True)
    assert core.state == qc.QueryState.FAILED
    assert fed(core, qc.LookupDone(work=(WorkRange(element=0, entry_start=0, entry_stop=1),),
                                   kind="unit", params={}, now=0.1)) == []


def test_a_worker_asking_ahead_with_unsent_outputs_is_told_not_to_be_held():
    # it asked for its next packet before processing its last one: the end of the query
    # waits for that packet's outputs, so holding its request would stall the query
    core = qc.QueryCore(query_id="q", spec=QuerySpec(selector="m:S", cycles=1),
                        workers=["w#1", "w#2"], now=0.0)
    fed(core, qc.LookupDone(work=(WorkRange(element=-1, entry_start=0, entry_stop=1),),
                            kind="unit", params={}, now=0.0))
    [grant] = fed(core, qc.PacketRequested(worker="w#1", now=0.1))
    assert fed(core, qc.PacketRequested(worker="w#1", now=0.1)) == [
        qc.Wait(worker="w#1", hold=False)]
    assert fed(core, qc.PacketRequested(worker="w#2", now=0.1)) == [
        qc.Wait(worker="w#2", hold=True)]  # nothing of its own: it may wait for work
    merge, ack = fed(core, qc.OutputArrived(worker="w#1", now=0.2,
                                            packet_ids=frozenset({grant.packet.packet_id})))
    assert ack.accepted and fed(core, qc.Merged(token=merge.token)) == [
        qc.Finish(stopped=False)]


# -- a look-up file by file: packets go out while other files are still looked up ----------

class _File:
    """An element as the shell gives it (the core reads path, tree, entries, dataset)."""

    def __init__(self, index: int) -> None:
        self.path, self.tree, self.entries, self.dataset = f"/d/{index}.root", "t", 0, None


class IncrementalQueryMachine(QueryMachine):
    """The same workers and invariants, with the input arriving file by file: counts in
    any order, interleaved with requests, outputs, losses, stop and abort; some files
    missing (skipped). Every entry of the files found is counted exactly once."""

    def setup(self, **kwargs):  # not an initialize rule here: setup_incremental is
        super().setup(**kwargs)

    @initialize(sizes=st.lists(st.integers(0, 30), min_size=1, max_size=5),
                packet=st.integers(1, 12), workers=st.integers(1, 3),
                kind=st.sampled_from(["basic", "adaptive"]))
    def setup_incremental(self, sizes, packet, workers, kind):
        super().setup(sizes=sizes, packet=packet, feedback=False, workers=workers)
        self.all_work = self.work
        self.work = ()  # what the invariants expect: the files found so far
        self.kind = kind
        self.params = {"packet_entries": packet} if kind == "basic" else {
            "learn_entries": packet, "min_packet_time": 0.01}
        self.begun = False
        self.unresolved = list(range(len(sizes)))
        self.found_entries = 0

    def lookup(self):  # what run_to_the_end calls: finish the look-up, every file found
        if not self.begun:
            self.begin()
        while self.unresolved:
            self._resolve(self.unresolved[0], missing=False)
        self.end_lookup()

    # run_to_the_end only once every file is looked up (or the look-up failed): before,
    # requests, outputs and losses interleave with the counts arriving one by one
    @precondition(lambda self: not self.unresolved or self.looked_up)
    @rule()
    def run_to_the_end(self):
        super().run_to_the_end()

    @precondition(lambda self: not self.begun)
    @rule()
    def begin(self):
        self.begun = True
        self.feed(qc.LookupBegun(kind=self.kind, params=self.params,
                                 elements=tuple(_File(i) for i in range(len(self.all_work))),
                                 now=self.now, cause=self.cause_id()))

    @precondition(lambda self: self.begun and self.unresolved)
    @rule(data=st.data(), missing=st.integers(0, 4), ask=st.booleans())
    def look_up_one(self, data, missing, ask):
        element = data.draw(st.sampled_from(self.unresolved))
        self._resolve(element, missing=missing == 0)
        if ask:  # the workers held for work ask again (the plane answers held requests)
            for name in self.alive():
                w = self.workers[name]
                reports, w.reports = tuple(w.reports), []
                self.feed(qc.PacketRequested(worker=name, reports=reports, now=self.now,
                                             cause=self.cause_id()), request=name)

    def _resolve(self, element: int, *, missing: bool) -> None:
        self.unresolved.remove(element)
        running = self.core.state in (qc.QueryState.RUNNING, qc.QueryState.STOPPING)
        if missing:
            self.feed(qc.ElementMissing(element=element, now=self.now, cause=self.cause_id(),
                                        missing={"file": f"/d/{element}.root", "reason": "x"}))
            return
        work = self.all_work[element]
        self.feed(qc.ElementFound(element=element, work=(work,), now=self.now,
                                  cause=self.cause_id()))
        if running:
            self.work = (*self.work, work)
            self.found_entries += work.entries

    @precondition(lambda self: self.begun and not self.unresolved and not self.looked_up)
    @rule()
    def end_lookup(self):
        self.looked_up = True
        self.feed(qc.LookupDone(work=(), kind=self.kind, params={}, now=self.now,
                                lookups={"lookups_opened": len(self.all_work)},
                                cause=self.cause_id()))

    @precondition(lambda self: self.begun and not self.looked_up)
    @rule(dice=st.integers(0, 9))
    def look_up_fails(self, dice):
        if dice == 0:
            self.looked_up = True
            out = self.feed(qc.LookupFailed(error=RemoteError(type="DatasetError",
                                                              message="gone"),
                                            cause=self.cause_id()))
            if self.core.state == qc.QueryState.FAILED:
                assert any(isinstance(i, qc.Fail) for i in out) or not out

    @invariant()
    def the_total_is_what_was_found(self):
        if self.begun and not self.core.ended and self.core.state != qc.QueryState.PREPARING:
            assert self.core.total == self.found_entries

    @invariant()
    def nothing_finishes_before_the_look_up_ends(self):
        if self.core.state in (qc.QueryState.FINISHING, qc.QueryState.FINISHED) \
                and not self.core.stop_reason:
            assert self.core.lookup_done_at is not None and not self.unresolved


IncrementalQueryMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60,
                                                     deadline=None)
TestIncrementalQueryMachine = IncrementalQueryMachine.TestCase


def test_packets_go_out_from_files_found_while_others_are_looked_up():
    core = qc.QueryCore(query_id="q", spec=QuerySpec(selector="m:S", cycles=1),
                        workers=["w#1"], now=0.0)
    fed(core, qc.LookupBegun(kind="basic", params={"packet_entries": 10},
                             elements=(_File(0), _File(1)), now=0.0))
    assert fed(core, qc.PacketRequested(worker="w#1", now=0.1)) == [qc.Wait(worker="w#1")]
    fed(core, qc.ElementFound(element=1, now=0.2,
                              work=(WorkRange(element=1, entry_start=0, entry_stop=10),)))
    [grant] = fed(core, qc.PacketRequested(worker="w#1", now=0.3))
    assert grant.packet.element == 1 and core.packets_before_lookup == 1
    merge, _ = fed(core, qc.OutputArrived(worker="w#1", now=0.4,
                                          packet_ids=frozenset({grant.packet.packet_id})))
    assert fed(core, qc.Merged(token=merge.token)) == []  # file 0 is still looked up
    assert fed(core, qc.ElementMissing(element=0, now=0.5,
                                       missing={"file": "/d/0.root", "reason": "gone"})) == []
    assert fed(core, qc.LookupDone(work=(), kind="basic", params={}, now=0.6)) == [
        qc.Finish(stopped=False)]
    lineage = core.lineage()
    assert lineage["lookup"] == {
        "file_by_file": True, "first_packet_seconds": pytest.approx(0.3),
        "lookup_seconds": pytest.approx(0.6), "packets_before_lookup_done": 1,
        "entries_processed_before_lookup_done": 0}
    assert [e["file"] for e in lineage["elements"]] == ["/d/1.root"]
    assert lineage["missing"] == [{"file": "/d/0.root", "reason": "gone"}]


def test_a_look_up_that_ends_without_a_file_fails_the_query_instead_of_losing_it():
    core = qc.QueryCore(query_id="q", spec=QuerySpec(selector="m:S", cycles=1),
                        workers=["w#1"], now=0.0)
    fed(core, qc.LookupBegun(kind="adaptive", params={}, elements=(_File(0), _File(1)),
                             now=0.0))
    fed(core, qc.ElementFound(element=0, now=0.1,
                              work=(WorkRange(element=0, entry_start=0, entry_stop=5),)))
    [fail] = fed(core, qc.LookupDone(work=(), kind="adaptive", params={}, now=0.2))
    assert isinstance(fail, qc.Fail)
    assert fail.error.message == "the look-up ended without 1 file(s): /d/1.root"


def test_a_failed_look_up_of_one_file_fails_a_running_query():
    core = qc.QueryCore(query_id="q", spec=QuerySpec(selector="m:S", cycles=1),
                        workers=["w#1"], now=0.0)
    fed(core, qc.LookupBegun(kind="basic", params={}, elements=(_File(0), _File(1)), now=0.0))
    fed(core, qc.ElementFound(element=0, now=0.1,
                              work=(WorkRange(element=0, entry_start=0, entry_stop=5),)))
    [grant] = fed(core, qc.PacketRequested(worker="w#1", now=0.2))
    error = RemoteError(type="DatasetError", message="file not found: /d/1.root")
    [fail] = fed(core, qc.LookupFailed(error=error))
    assert fail.error is error and core.state == qc.QueryState.FAILED


def test_last_outputs_with_the_next_request_are_held_until_merged_then_done():
    # the worker's next request rides on its outputs: while the merge runs the query
    # is not over (a lost worker's packets could come back), so it is held, not done
    core = qc.QueryCore(query_id="q", spec=QuerySpec(selector="m:S", cycles=1),
                        workers=["w#1", "w#2"], now=0.0)
    fed(core, qc.LookupDone(work=(WorkRange(element=-1, entry_start=0, entry_stop=1),),
                            kind="unit", params={}, now=0.0))
    [grant] = fed(core, qc.PacketRequested(worker="w#1", now=0.1))
    ids = frozenset({grant.packet.packet_id})
    report = qc.Report(packet=grant.packet.packet_id, entries=1)
    merge, ack = fed(core, qc.OutputArrived(worker="w#1", packet_ids=ids, reports=(report,),
                                            now=0.2))
    assert isinstance(merge, qc.Merge) and ack.accepted
    assert fed(core, qc.PacketRequested(worker="w#1", now=0.2)) == [
        qc.Wait(worker="w#1", hold=True)]
    assert fed(core, qc.Merged(token=merge.token)) == [qc.Finish(stopped=False)]
    assert fed(core, qc.PacketRequested(worker="w#1", now=0.3)) == [qc.Done(worker="w#1")]
    # sent again (a resend): refused, never merged twice
    [ack] = fed(core, qc.OutputArrived(worker="w#1", packet_ids=ids, now=0.4))
    assert ack == qc.Done(worker="w#1") and core.delivered == 1


# -- strikes: only the packet a dying worker was running ------------------------------------

MAX_STRIKES = 3


class ProtocolWorker:
    """A fake worker that follows `WorkerLoop._loop` step by step (`steps` mirrors it):
    it runs its granted packets in grant order, asks ahead as it starts the last one of
    a grant (with the reports of the others), waits for that answer first when the packet
    is `confirm`, and sends its outputs when told (`last`, WAIT, DONE) or for feedback.
    Its requests travel in `outbox` until the machine delivers them (or they are lost
    with it); answers wait in `inbox`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.alive = True
        self.held: list[int] = []            # processed, outputs not sent
        self.reports: list[qc.Report] = []   # processed, not reported
        self.outbox: list[tuple] = []
        self.inbox: list[qc.Instruction] = []
        self.unreceived: list[qc.Instruction] = []  # answered after it died
        self.started: set[int] = set()       # the truth: packets it started
        self.starting: int | None = None     # said it starts it, has not yet
        self.running: qc.Packet | None = None
        self.action = None
        self.steps = self._loop()
        self.advance(None)

    def advance(self, value) -> None:
        try:
            self.action = self.steps.send(value)
        except StopIteration:
            self.action = None

    def next_start(self) -> set[int]:
        """The packet it would start next, without another word to the master."""
        if self.action is not None and self.action[0] == "start":
            return {self.action[1].packet_id}
        grants = [i for i in self.inbox + self.unreceived if isinstance(i, qc.Grant)]
        return {grants[0].packet.packet_id} if grants else set()

    def _take_reports(self) -> tuple[qc.Report, ...]:
        reports, self.reports = tuple(self.reports), []
        return reports

    def _request(self):
        yield ("send", ("next", self._take_reports()))
        return (yield ("recv",))

    def _flush(self, then_next: bool):
        if not self.held:
            if then_next:
                return (yield from self._request())
            return None
        ids = frozenset(self.held)
        yield ("send", ("outputs", ids, self._take_reports(), then_next))
        reply = yield ("recv",)
        taken = isinstance(reply, qc.Grant | qc.Wait | qc.Done) if then_next else \
            isinstance(reply, qc.Ack)
        if not taken:
            return None
        self.held = []
        return reply if then_next else None

    def _loop(self):
        reply = yield from self._request()
        while reply is not None:
            if isinstance(reply, qc.Grant):
                ahead = None
                for index, packet in enumerate(reply.packets):
                    if index == len(reply.packets) - 1 and not getattr(reply, "last", False):
                        self.starting = packet.packet_id
                        yield ("send", ("next", self._take_reports()))
                        if getattr(packet, "confirm", False):
                            ahead = yield ("recv",)
                    yield ("start", packet)
                    yield ("finish", packet)
                if getattr(reply, "last", False):
                    reply = yield from self._flush(then_next=True)
                    continue
                reply = ahead if ahead is not None else (yield ("recv",))
                if (yield ("feedback?",)):
                    yield from self._flush(then_next=False)
            elif isinstance(reply, qc.Wait):
                reply = yield from self._flush(then_next=True)
            elif isinstance(reply, qc.Done):
                yield from self._flush(then_next=False)
                return
            else:
                return


class StrikeMachine(RuleBasedStateMachine):
    """The query core against workers that follow the real protocol and die at any point:
    some entries kill every worker that starts a packet holding them (a poisonous
    selector); with `chaos`, workers also die of other causes, and the requests on their
    way when a worker dies are lost, or arrive before or after its loss is known.

    Invariants: a packet a worker never started never takes a strike at its death
    (without chaos: only the packet that killed it may); no poisonous entry kills more
    than `MAX_STRIKES + 1` workers; at the end every entry is delivered exactly once or
    poisoned, every poisonous one poisoned, and each poisoned range names workers that
    died running it (without chaos: it holds a poisonous entry)."""

    @initialize(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=3),
                packet=st.integers(1, 8), workers=st.integers(1, 3), chaos=st.booleans(),
                budget=st.sampled_from([0.02, 1e6]), data=st.data())
    def setup(self, sizes, packet, workers, chaos, budget, data):
        self.now = 0.0
        self.chaos = chaos
        self.work = tuple(WorkRange(element=i, entry_start=0, entry_stop=n)
                          for i, n in enumerate(sizes))
        entries = [(i, e) for i, n in enumerate(sizes) for e in range(n)]
        self.poison = set(data.draw(st.lists(st.sampled_from(entries), max_size=3),
                                    label="poison"))
        self.kills: Counter[tuple[int, int]] = Counter()  # poisonous entry -> workers killed
        self.workers: dict[str, ProtocolWorker] = {}
        self.serial = 0
        self.cause = 0
        self.core = qc.QueryCore(query_id="q", workers=[],
                                 spec=QuerySpec(selector="m:S", cycles=1, on_missing="skip"),
                                 now=0.0)
        self.merged: Counter[tuple[int, int]] = Counter()
        self.ranges: dict[int, tuple[int, int, int]] = {}
        self.granted: dict[int, str] = {}
        self.feed(qc.LookupDone(work=self.work, kind="basic", now=0.0,
                                params={"packet_entries": packet, "max_strikes": MAX_STRIKES}))
        p = self.core.packetizer
        p.batch_seconds, p.endgame_seconds, p.max_batch = budget, 0.0, 4
        self.struck: list[tuple[str, frozenset[int]]] = []
        lose = p.worker_lost

        def spy(worker, now, *, reason="", **kwargs):
            running = kwargs.get("running")
            if running is None:  # every packet in flight may have been running
                held = p._ledger._held.get(worker, {})  # noqa: SLF001 - what it strikes
                running = [i for i in held if not p._ledger._records[i].reported]  # noqa: SLF001
            self.struck.append((worker, frozenset(running)))
            note(f"lost, struck {len(running)}")
            return lose(worker, now, reason=reason, **kwargs)

        p.worker_lost = spy
        for _ in range(workers):
            self.join()

    # -- the master's side -------------------------------------------------------------
    def feed(self, event: qc.Event) -> list:
        self.cause += 1
        out, todo = [], [event]
        while todo:
            got = self.core.handle(todo.pop(0))
            self.core.validate()
            for i in got:
                if isinstance(i, qc.Grant):
                    for p in i.packets:
                        self.ranges[p.packet_id] = (p.element, p.entry_start, p.entry_stop)
                        self.granted[p.packet_id] = i.worker
                        if getattr(p, "confirm", False):  # the last of a grant, not the end
                            assert p is i.packets[-1] and not i.last, i
                            note("a confirm packet granted")
                    if len(i.packets) > 1:
                        note("a batch granted")
                elif isinstance(i, qc.Merge):
                    for pid in i.packet_ids:
                        element, start, stop = self.ranges[pid]
                        self.merged.update((element, e) for e in range(start, stop))
                    todo.append(qc.Merged(token=i.token))
                elif isinstance(i, qc.Finish):
                    todo.append(qc.Finished(now=self.now))
            out += got
        return out

    def deliver_one(self, w: ProtocolWorker) -> None:
        message = w.outbox.pop(0)
        if message[0] == "next":
            out = self.feed(qc.PacketRequested(worker=w.name, reports=message[1], now=self.now))
        else:
            _, ids, reports, then_next = message
            out = self.feed(qc.OutputArrived(worker=w.name, packet_ids=ids, reports=reports,
                                             now=self.now))
            if then_next and any(isinstance(i, qc.Ack) for i in out):
                out = self.feed(qc.PacketRequested(worker=w.name, now=self.now))
        [answer] = [i for i in out if isinstance(i, qc.ANSWERS)]
        assert answer.worker == w.name
        (w.inbox if w.alive else w.unreceived).append(answer)

    def die(self, w: ProtocolWorker, fates: list[str], killer: qc.Packet | None) -> None:
        """`w` dies; each request on its way is lost, or arrives before or after."""
        w.alive = False
        late = []
        for message, fate in zip(list(w.outbox), fates, strict=True):
            note(f"a request on its way {fate}")
            if fate == "before":
                w.outbox.remove(message)
                w.outbox.insert(0, message)
                self.deliver_one(w)
            elif fate == "after":
                late.append(message)
        w.outbox = late
        self.feed(qc.WorkerLost(worker=w.name, how="exit status 1", now=self.now))
        name, running = self.struck[-1] if self.struck else (None, frozenset())
        if name == w.name:
            # the one invariant that matters: never a strike for a packet not started (a
            # worker killed from outside as it starts the next packet, the one it said it
            # starts or one it starts without a word: the master cannot tell it from one
            # that started it)
            allowed = w.started | {w.starting} | w.next_start()
            assert running <= allowed, (running, w.started, w.starting)
            if killer is not None:
                assert running <= w.started, (running, w.started)
            if killer is not None and not self.chaos:
                assert running <= {killer.packet_id}, (running, killer)
        while w.outbox:
            self.deliver_one(w)  # too late: refused, changes nothing

    # -- rules -------------------------------------------------------------------------
    @rule()
    def join(self):
        name = f"worker-{self.serial}#{100 + self.serial}"
        self.serial += 1
        self.feed(qc.WorkerJoined(worker=name, now=self.now))
        self.workers[name] = ProtocolWorker(name)

    def alive(self) -> list[ProtocolWorker]:
        return [w for w in self.workers.values() if w.alive]

    def step_one(self, w: ProtocolWorker, choice) -> bool:
        """Carry out `w`'s next action; False if it is waiting for an answer."""
        action = w.action
        if action is None:
            return False
        if action[0] == "send":
            w.outbox.append(action[1])
            w.advance(None)
        elif action[0] == "recv":
            if not w.inbox:
                return False
            w.advance(w.inbox.pop(0))
        elif action[0] == "start":
            packet = action[1]
            w.started.add(packet.packet_id)
            element = packet.element
            deadly = [(element, e) for e in range(packet.entry_start, packet.entry_stop)
                      if (element, e) in self.poison]
            if deadly:
                self.kills.update(deadly)
                assert max(self.kills[e] for e in deadly) <= MAX_STRIKES + 1, self.kills
                self.die(w, [choice("fate") for _ in w.outbox], packet)
                return True
            w.advance(None)
        elif action[0] == "finish":
            packet = action[1]
            w.held.append(packet.packet_id)
            w.reports.append(qc.Report(packet=packet.packet_id, entries=packet.entries,
                                       seconds=packet.entries / 1000))
            w.advance(None)
        else:  # feedback?
            w.advance(choice("feedback"))
        return True

    def chooser(self, data):
        def choice(what):
            if what == "fate":
                fates = ["lost", "before", "after"] if self.chaos else ["before"]
                return data.draw(st.sampled_from(fates), label="fate")
            return data.draw(st.booleans(), label=what)
        return choice

    @rule(data=st.data())
    def step(self, data):
        live = self.alive()
        if live:
            self.step_one(data.draw(st.sampled_from(live), label="worker"), self.chooser(data))

    @rule(data=st.data())
    def deliver(self, data):
        sending = [w for w in self.alive() if w.outbox]
        if sending:
            self.deliver_one(data.draw(st.sampled_from(sending), label="sender"))

    @precondition(lambda self: self.chaos)
    @rule(data=st.data())
    def crash(self, data):
        """A worker dies of something else (killed, out of memory) at any point."""
        live = self.alive()
        if live:
            w = data.draw(st.sampled_from(live), label="crashes")
            choice = self.chooser(data)
            self.die(w, [choice("fate") for _ in w.outbox], None)

    @rule()
    def run_to_the_end(self):
        """Every live worker runs (its requests delivered at once) until the query ends;
        a replacement joins when all are dead."""
        for _ in range(5000):
            if self.core.ended:
                break
            if not self.alive():
                self.join()
            for w in self.alive():
                for _ in range(20):  # until it waits for an answer (or dies)
                    while w.alive and w.outbox:
                        self.deliver_one(w)
                    if not w.alive or not self.step_one(w, lambda what: what == "fate"
                                                        and "before"):
                        break
        assert self.core.ended, self.core.story()[-5:]
        self.check_the_end()

    def check_the_end(self):
        assert self.core.state == qc.QueryState.FINISHED, self.core.state
        poisoned = self.core.packetizer.poisoned
        given_up = {(r.element, e) for r in poisoned for e in range(r.entry_start,
                                                                     r.entry_stop)}
        everything = {(w.element, e) for w in self.work for e in range(w.entry_stop)}
        assert all(n == 1 for n in self.merged.values())
        assert set(self.merged) | given_up == everything
        assert not set(self.merged) & given_up
        assert self.poison <= given_up
        for r in poisoned:
            assert len(r.workers) == MAX_STRIKES and len(set(r.workers)) == MAX_STRIKES
            assert r.reasons == tuple(f"{w} died (exit status 1)" for w in r.workers)
            for name in r.workers:  # each died running a packet holding this range
                assert any(self.granted[i] == name and self.ranges[i][0] == r.element
                           and self.ranges[i][1] <= r.entry_start < self.ranges[i][2]
                           for i in self.workers[name].started), (r, name)
            if not self.chaos:
                assert any((r.element, e) in self.poison
                           for e in range(r.entry_start, r.entry_stop)), r

    @invariant()
    def no_poisonous_entry_kills_more_than_max_strikes_plus_one_workers(self):
        assert all(n <= MAX_STRIKES + 1 for n in self.kills.values()), self.kills

    @invariant()
    def every_entry_is_merged_at_most_once(self):
        assert all(n == 1 for n in self.merged.values()), self.merged.most_common(1)

    def teardown(self):
        if hasattr(self, "core") and not self.core.ended:
            self.run_to_the_end()


StrikeMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60,
                                           deadline=None)
TestStrikeMachine = StrikeMachine.TestCase
