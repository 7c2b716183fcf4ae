"""`parallel_start`: a supervisor creates its initial children at once, on a real Thespian
system, while its core still sees them start one at a time, in list order."""

from __future__ import annotations

import uuid

import pytest

from pyproof.supervision.process_tree import kill_tree
from tests.supervisor_helpers import Children, ChoosySupervisor, Meet, Running

ASK_TIMEOUT = 60.0
# the actor system's client end lives in this process: its sockets are Thespian's own
pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]






def start(system, directory, children, parallel=True) -> Running:
    sup = system.createActor(ChoosySupervisor)
    corr = uuid.uuid4().hex
    reply = system.ask(sup, Children(corr=corr, directory=str(directory),
                                     children=tuple(children), parallel=parallel), ASK_TIMEOUT)
    assert isinstance(reply, Running) and reply.corr == corr, reply
    kill_tree(reply.pid)  # the supervisor and its children: this test's processes
    return reply


def test_children_start_side_by_side_but_the_core_sees_them_in_list_order(system, tmp_path):
    # "a" starts only once "b" has: a serial start would wait for "a" forever
    reply = start(system, tmp_path, [Meet(directory=str(tmp_path), name="a", wait_for="b"),
                                     Meet(directory=str(tmp_path), name="b")])
    assert reply.started == ("a", "b")
    assert reply.restarts == 0


def test_a_child_that_fails_before_its_turn_is_started_afresh_unseen_by_the_core(
        system, tmp_path):
    # "b" fails at once; "a" reports only after that first "b" is gone, so the failure
    # reaches the supervisor before the core asks for "b": a fresh "b" is started then
    d = str(tmp_path)
    reply = start(system, tmp_path, [Meet(directory=d, name="a", wait_gone="b"),
                                     Meet(directory=d, name="b", fail_once=True),
                                     Meet(directory=d, name="c")])
    assert reply.started == ("a", "b", "c")
    assert reply.restarts == 0
    with open(tmp_path / "b.up") as f:
        assert len(f.read().split()) == 2  # two incarnations of "b"
