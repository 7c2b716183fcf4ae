"""The re-adoption core: which registry entries live, which are stale, what gets killed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pyproof.supervision.adoption import Entry, Proc, reconcile


def entry(sid: str, sup: tuple[int, int], **children: tuple[int, int]) -> Entry:
    return Entry(session_id=sid, user="u", workers=len(children), created=0.0,
                 supervisor=Proc(pid=sup[0], start=sup[1]), address=("127.0.0.1", 1000),
                 children={k: Proc(pid=p, start=s) for k, (p, s) in children.items()})


def test_a_session_whose_supervisor_runs_is_adopted_and_nothing_of_it_is_killed():
    e = entry("a", (10, 100), master=(11, 101), worker_0=(12, 102))
    plan = reconcile([e], {10: 100, 11: 101, 12: 102})
    assert plan.adopt == (e,) and plan.stale == () and plan.kill == () and plan.remove == ()


def test_a_recycled_supervisor_pid_makes_the_entry_stale_and_the_stranger_is_spared():
    e = entry("a", (10, 100), master=(11, 101))
    plan = reconcile([e], {10: 555, 11: 101})  # pid 10 now belongs to someone else
    assert plan.stale == (e,)
    assert plan.kill == (Proc(pid=11, start=101),)  # the orphaned master
    # its sockets, its stuck master's last words (actors/last_words.py) and its hosts
    # actor's record of it, spread over hosts (hosts/spans.py)
    assert plan.remove == ("master-a.ipc", "outbox-a.ipc", "direct-a.ipc",
                           "last-words-a.cbor", "spanned-a.cbor")


def test_a_gone_session_kills_only_its_children_that_still_run_under_their_start_times():
    e = entry("a", (10, 100), master=(11, 101), worker_0=(12, 102))
    plan = reconcile([e], {12: 999})
    assert plan.kill == ()


def test_an_entry_without_an_address_cannot_be_adopted():
    e = Entry(session_id="a", user="u", workers=0, created=0.0, supervisor=Proc(pid=1, start=1))
    plan = reconcile([e], {1: 1})
    assert plan.stale == (e,) and plan.kill == (Proc(pid=1, start=1),)


procs = st.tuples(st.integers(1, 30), st.integers(0, 3))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(procs, st.lists(procs, max_size=3)), max_size=6),
       st.dictionaries(st.integers(1, 30), st.integers(0, 3)))
def test_a_live_session_is_never_killed_and_every_entry_is_judged_once(raw, running):
    entries = [entry(f"s{i}", sup, **{f"c{j}": c for j, c in enumerate(kids)})
               for i, (sup, kids) in enumerate(raw)]
    plan = reconcile(entries, running)
    plan.validate()
    assert len(plan.adopt) + len(plan.stale) == len(entries)
    for e in plan.adopt:
        assert running.get(e.supervisor.pid) == e.supervisor.start
    for proc in plan.kill:
        assert running.get(proc.pid) == proc.start
