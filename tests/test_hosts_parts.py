"""Which hosts the master's host counts as having a part of a session (`part_hosts`): the
answer to another host's check that its part's session still runs (hosts.py), and who may
send that session's data frames; which parts are told of a query (`hosts_to_tell`); and
which queries a worker starting on another host is given (`pending_queries`,
`forget_query`). Pure: no
actors, no sockets."""

from __future__ import annotations

import pytest

from pyproof.actors import messages as m
from pyproof.actors.hosts import (
    MAX_ACTIVE,
    Spanned,
    active_list,
    forget_told,
    hosts_to_tell,
    new_master,
    part_hosts,
)
from pyproof.actors.remote_session import KEEP_QUERIES, forget_query, pending_queries
from pyproof.query.spec import QuerySpec, SpecError


def span(*, plan: dict[str, int], pending=(), remote=None) -> Spanned:
    create = m.CreateSession(corr="c", session_id="5e55", workers=sum(plan.values()),
                             run_dir="/run", log_dir="/logs")
    return Spanned(create=create, reply_to=None, corr="c", plan=plan, pending=set(pending),
                   remote=remote or {})


def test_a_host_asked_to_start_a_part_counts_before_its_answer_is_heard():
    # h2 answered that its part runs, and checks at once that the session runs: the
    # master has not heard the answer yet (h2 is still pending), and says it does
    assert part_hosts(span(plan={"m": 1, "h2": 1}, pending={"h2"}), (), "m") == {"h2"}


def test_a_host_whose_part_runs_counts_and_one_whose_start_failed_does_not():
    started = span(plan={"m": 1, "h2": 1, "h3": 1}, remote={"h2": {"worker-0@h2": 7}})
    assert part_hosts(started, (), "m") == {"h2"}  # h3's start failed: not pending, no part


def test_a_part_between_two_workers_still_counts():
    assert part_hosts(span(plan={"m": 1, "h2": 1}, remote={"h2": {}}), (), "m") == {"h2"}


def test_hosts_that_workers_are_being_added_on_count_and_the_masters_own_host_never():
    # an add on h3 (no part there yet) and on the master's own host, both in flight
    got = part_hosts(span(plan={"m": 1, "h2": 1}, remote={"h2": {"worker-0@h2": 7}}),
                     [{"h3", "m"}], "m")
    assert got == {"h2", "h3"}


def test_each_part_is_told_of_a_query_once_and_a_leaving_host_never():
    spanned = span(plan={"m": 1, "h2": 2, "h3": 1, "h4": 1},
                   remote={"h2": {"worker-0@h2": 7, "worker-1@h2": 8}, "h3": {"worker-0@h3": 9},
                           "h4": {}})
    assert hosts_to_tell(spanned, "q1", {"h3": 1.0}) == ["h2"]  # h4: no worker runs there
    assert hosts_to_tell(spanned, "q1", {}) == ["h3"]  # a repeat for h2's second worker: none
    assert hosts_to_tell(spanned, "q2", {}) == ["h2", "h3"]


def test_a_new_part_on_a_host_whose_part_was_lost_is_told_of_the_running_query():
    spanned = span(plan={"m": 1, "h2": 1}, remote={"h2": {"worker-0@h2": 7}})
    assert hosts_to_tell(spanned, "q1", {}) == ["h2"]
    del spanned.remote["h2"]  # h2 lost mid-query; it rejoins and gets workers again
    forget_told(spanned, "h2")
    spanned.remote["h2"] = {"worker-1@h2": 12}
    # the master sends q1 for the worker that joined: it reaches the new part
    assert hosts_to_tell(spanned, "q1", {}) == ["h2"]


def run(query_id: str, *active: str) -> m.RunQuery:
    return m.RunQuery(query_id=query_id, spec=QuerySpec(selector="s", cycles=1),
                      active=tuple(active))


def test_a_worker_starting_on_another_host_is_given_the_running_and_queued_queries_in_order():
    queries = pending_queries({}, run("q1", "q1"))
    queries = pending_queries(queries, run("q2", "q1", "q2"))  # q1 runs, q2 waits
    assert list(queries) == ["q1", "q2"]
    # q1 ended: the master no longer names it with q3
    assert list(pending_queries(queries, run("q3", "q2", "q3"))) == ["q2", "q3"]
    # a restarted master's first query: the old master's are gone with it
    assert list(pending_queries(queries, run("n1", "n1"))) == ["n1"]
    # told again: it keeps its place, with the spec last told
    again = run("q1", "q1", "q2")
    assert list(pending_queries(queries, again)) == ["q1", "q2"]
    assert pending_queries(queries, again)["q1"] is again


def test_a_query_the_master_said_is_over_is_no_longer_given_to_a_worker_starting_later():
    queries = pending_queries({}, run("q1", "q1"))
    queries = pending_queries(queries, run("q2", "q1", "q2"))
    # q1 ended (a worker here was answered DONE): before the master's next RunQuery
    assert list(forget_query(queries, "q1")) == ["q2"]
    assert list(forget_query(forget_query(queries, "q1"), "q1")) == ["q2"]  # said twice
    assert list(forget_query(queries, "q9")) == ["q1", "q2"]  # one never heard of
    assert list(queries) == ["q1", "q2"]  # pure: the dict given is not changed


def test_without_the_masters_list_the_last_queries_heard_of_are_kept_within_a_bound():
    queries: dict = {}
    for i in range(KEEP_QUERIES + 5):
        queries = pending_queries(queries, run(f"q{i}"))
    assert list(queries) == [f"q{i}" for i in range(5, KEEP_QUERIES + 5)]


def test_a_run_querys_list_of_active_queries_is_checked():
    assert active_list(None, "q2") == () and active_list([], "q2") == ()
    assert active_list(["q1", "q2"], "q2") == ("q1", "q2")
    for bad in (["q1"], "q2", [1, "q2"], ["", "q2"], ["q2"] * (MAX_ACTIVE + 1)):
        with pytest.raises(SpecError, match=r"^'active' of query 'q2' must list at most "
                                            r"1024 query ids, 'q2' among them$"):
            active_list(bad, "q2")


def test_a_restarted_master_hears_of_the_workers_on_other_hosts_and_its_queries_go_there():
    spanned = span(plan={"m": 1, "h2": 2, "h3": 1, "h4": 1},
                   remote={"h2": {"worker-0@h2": 7, "worker-1@h2": 8}, "h3": {"worker-0@h3": 9},
                           "h4": {}})
    spanned.master = "old"
    assert hosts_to_tell(spanned, "q1", {}) == ["h2", "h3"]
    # h3 is leaving (its workers drain): the new master gives them nothing
    assert new_master(spanned, "new", {"h3": 1.0}) == [("worker-0@h2", 7), ("worker-1@h2", 8)]
    assert spanned.master == "new"
    assert hosts_to_tell(spanned, "q1", {}) == ["h2", "h3"]  # the new master ran it again
    assert new_master(spanned, "new", {}) == []  # said twice: nothing more
