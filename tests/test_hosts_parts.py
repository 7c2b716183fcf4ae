"""Which hosts the master's host counts as having a part of a session (`part_hosts`): the
answer to another host's check that its part's session still runs (hosts.py), and who may
send that session's data frames; and which parts are told of a query (`hosts_to_tell`).
Pure: no actors, no sockets."""

from __future__ import annotations

from pyproof.actors import messages as m
from pyproof.actors.hosts import Spanned, forget_told, hosts_to_tell, part_hosts


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
