"""A lite daemon opens its client's session while it boots (`--open-session`)."""

from __future__ import annotations

import pyproof
from pyproof.logs import read_records


def test_the_lite_daemon_opens_the_clients_session_while_it_boots_and_only_that_one() -> None:
    with pyproof.connect("lite://?workers=2") as session:
        cluster = session.cluster
        assert cluster is not None and cluster.open_request
        records = read_records(cluster.log_dir)
        preopened = [r for r in records if r.get("event") == "session_preopened"]
        assert [(r["session"], r["workers"]) for r in preopened] == [(session.id, 2)]
        # the client's open_session found it: no second session was started
        started = [r for r in records if r.get("actor") == "sessions"
                   and r.get("event") == "child_started"]
        assert [r["child_id"] for r in started] == [session.id]
        assert len(session.workers) == 2
        result = session.process("tests.sample_selectors:Cycles", cycles=40, progress=False)
        assert result.outputs["sum"] == sum(range(40))


def test_the_pre_opened_session_goes_only_to_the_same_request() -> None:
    with pyproof.connect("lite://?workers=2") as session:
        request = session.cluster.open_request
        again = session.control.call("open_session", {"workers": 2}, request_id=request)
        assert again["session"] == session.id
        # the same request id asking for another size is another request: a new session
        other = session.control.call("open_session", {"workers": 1}, request_id=request)
        assert other["session"] != session.id and len(other["workers"]) == 1
        session.control.call("close_session", session=other["session"], deadline=10.0)
