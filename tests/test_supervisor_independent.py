"""A supervisor of independent children (`SupFlags(independent=True)`) on a real Thespian
system: its shell carries out several starts at once (one deadline and one ref per child),
where the core of an ordered supervisor would ask for one start at a time."""

from __future__ import annotations

import uuid

import pytest

from pyproof.supervision.process_tree import kill_tree
from tests.supervisor_helpers import Children, ChoosySupervisor, Meet, Running

ASK_TIMEOUT = 60.0
# the actor system's client end lives in this process: its sockets are Thespian's own
pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


def test_independent_children_are_started_together_by_the_core_itself(system, tmp_path):
    # "a" starts only once "b" and "c" have: one start at a time would wait for "a" until
    # its rendezvous timed out; no parallel_start here, the core asks for all three at once
    d = str(tmp_path)
    sup = system.createActor(ChoosySupervisor)
    corr = uuid.uuid4().hex
    reply = system.ask(sup, Children(
        corr=corr, directory=d, parallel=False, independent=True,
        children=(Meet(directory=d, name="a", wait_for="c"),
                  Meet(directory=d, name="b", wait_for="c"),
                  Meet(directory=d, name="c"))), ASK_TIMEOUT)
    assert isinstance(reply, Running) and reply.corr == corr, reply
    kill_tree(reply.pid)  # the supervisor and its children: this test's processes
    assert sorted(reply.started) == ["a", "b", "c"]
    assert reply.restarts == 0
