"""Once: a request with side effects runs once per request id, every repeat gets its answer."""

from __future__ import annotations

from pyproof.hosts.once import Once


def test_a_repeat_while_running_waits_for_the_first_outcome_and_a_later_one_gets_it_at_once():
    once, got = Once(), []
    assert once.begin("r1", got.append)  # runs
    assert not once.begin("r1", got.append)  # a retry while it runs: not run again
    assert got == []
    once.end("r1", {"added": ["worker-1"]})
    assert got == [{"added": ["worker-1"]}]
    assert not once.begin("r1", got.append)  # a retry after its answer was lost
    assert got == [{"added": ["worker-1"]}] * 2
    assert once.begin("r2", got.append)  # another request runs
    once.validate()


def test_requests_without_an_id_always_run_and_only_the_last_outcomes_are_kept():
    once, got = Once(keep=2), []
    assert once.begin("", got.append) and once.begin("", got.append)
    once.end("", "x")
    for rid in ("a", "b", "c"):
        assert once.begin(rid, got.append)
        once.end(rid, rid)
    assert once.begin("a", got.append)  # forgotten: runs again
    assert not once.begin("c", got.append) and got == ["c"]
    once.validate()
