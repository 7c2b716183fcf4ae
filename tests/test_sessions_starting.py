"""The sessions supervisor answers "retry" to requests that reach it before its start message.

Its start message comes from the root, requests from the gateway: Thespian gives no order
between two senders. Before the start the registry is not read, so "no such session"
would tell a client its session is lost when it is about to be re-adopted. Real Thespian
system, real `Sessions` actor.
"""

from __future__ import annotations

import pytest

from pyproof.actors import messages as m
from pyproof.actors.sessions import Sessions
from tests.thespian_system import in_process_system

ASK_TIMEOUT = 30.0
# the actor system's client end lives in this process: its sockets are Thespian's own
pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


@pytest.fixture
def system(tmp_path):
    with in_process_system(str(tmp_path)) as system:
        yield system


def test_requests_before_the_start_are_answered_retry_and_after_it_for_real(system, tmp_path):
    sessions = system.createActor(Sessions)
    starting = "the daemon is starting (re-adopting its sessions); try again"
    status = system.ask(sessions, m.StatusRequest(corr="a", session_id="s1", user="u"),
                        ASK_TIMEOUT)
    assert status == m.StatusReply(corr="a", status={"error": starting, "retry": True})
    query = system.ask(sessions, m.StartQuery(corr="b", session_id="s1", query_id="q1",
                                              spec=None, user="u"), ASK_TIMEOUT)
    assert query == m.QueryRejected(corr="b", query_id="q1", error=starting, retry=True)
    opened = system.ask(sessions, m.CreateSession(corr="c", session_id="s2", workers=1,
                                                  run_dir=str(tmp_path), log_dir=str(tmp_path),
                                                  user="u"), ASK_TIMEOUT)
    assert opened == m.SessionFailed(corr="c", session_id="s2", error=starting, retry=True)
    listed = system.ask(sessions, m.ListSessions(corr="d"), ASK_TIMEOUT)
    assert listed == m.StatusReply(corr="d", status={"error": starting, "retry": True})

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    started = system.ask(sessions, m.SessionsStart(log_dir=str(tmp_path), run_dir=str(run_dir)),
                         ASK_TIMEOUT)
    assert isinstance(started, m.Started)
    status = system.ask(sessions, m.StatusRequest(corr="e", session_id="s1", user="u"),
                        ASK_TIMEOUT)
    assert status == m.StatusReply(corr="e", status={
        "error": "no session 's1' (closed, or it failed)"})
    listed = system.ask(sessions, m.ListSessions(corr="f"), ASK_TIMEOUT)
    assert listed == m.StatusReply(corr="f", status={"sessions": {}})
