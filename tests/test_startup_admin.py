"""The actors' modules are loaded in Thespian's admin, once, before it creates an actor.

Every actor is forked from the admin: what the admin loaded before, each has
at once. The daemon process itself (which runs no actor) does not load them;
the admin does while its logger process starts (actors/daemon.py, system.py).
"""

from __future__ import annotations

from tests.fresh_python import run_json

# run in a fresh interpreter: Thespian's createActor from outside the system leaves sockets
# to the collector (ResourceWarnings that pytest turns into errors), and the probe module
# must not be loaded already
SCRIPT = r"""
import json, os, sys
from thespian.actors import Actor, ActorExitRequest
from tests.thespian_system import in_process_system

PROBE = "colorsys"  # nothing in pyproof imports it: where it is loaded, the preload ran
admins = []

def preload():
    if len(sys.argv) > 3:
        raise ImportError("a broken module")
    import colorsys  # noqa: F401
    with open(sys.argv[1], "a") as mark:
        mark.write(f"{os.getpid()}\n")

class Probe(Actor):
    def receiveMessage(self, message, sender):
        if message == "where":
            self.send(sender, {"parent": os.getppid(), "loaded": PROBE in sys.modules})

with in_process_system(sys.argv[2], admin_preload=preload) as system:
    probes = [system.createActor(Probe) for _ in range(2)]
    answers = [system.ask(probe, "where", 10.0) for probe in probes]
    marked_before = open(sys.argv[1]).read().split() if os.path.exists(sys.argv[1]) else []
    for probe in probes:
        system.tell(probe, ActorExitRequest())
print(json.dumps({"me": os.getpid(), "loaded_here": PROBE in sys.modules,
                  "marked_before": marked_before, "answers": answers}))
"""


def test_the_admin_loads_the_actors_modules_before_its_first_actor_and_only_there(
        tmp_path) -> None:
    mark = tmp_path / "preloaded"
    seen, _ = run_json(SCRIPT, str(mark), str(tmp_path))
    (admin,) = {int(pid) for pid in mark.read_text().split()}  # once, in one process
    assert seen["marked_before"] == [str(admin)]  # before its first actor answered
    assert admin != seen["me"] and not seen["loaded_here"]  # not in the starting process
    assert seen["answers"] == [{"parent": admin, "loaded": True}] * 2  # forked from it


def test_an_admin_whose_preload_fails_serves_anyway_and_says_why(tmp_path) -> None:
    # the actors then import what they need themselves; the daemon is not left waiting
    seen, stderr = run_json(SCRIPT, str(tmp_path / "mark"), str(tmp_path), "fail")
    assert [a["loaded"] for a in seen["answers"]] == [False, False]
    assert "ImportError: a broken module" in stderr


WHILE = r"""
import json, os, sys, time
from thespian.actors import Actor, ActorExitRequest
from tests.thespian_system import in_process_system

go, seen = os.path.join(sys.argv[1], "go"), os.path.join(sys.argv[1], "seen")

def preload():  # waits (bounded) for what the starter does once the system answered it
    deadline = time.monotonic() + 3.0
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)  # (a fork that did not wait for us would come first)
    with open(seen, "w") as mark:
        mark.write(json.dumps(os.path.exists(go)))

class Probe(Actor):
    def receiveMessage(self, message, sender):
        self.send(sender, os.path.exists(seen))

with in_process_system(sys.argv[1], admin_preload=preload) as system:
    open(go, "w").close()  # the system answered: the admin's preload still runs
    probe = system.createActor(Probe)  # forked once the preload is done
    preloaded = system.ask(probe, "preloaded?", 10.0)
    system.tell(probe, ActorExitRequest())
print(json.dumps({"answered_first": json.load(open(seen)), "preloaded": preloaded}))
"""


def test_the_admin_answers_its_starter_while_it_preloads_and_forks_only_after(
        tmp_path) -> None:
    # the daemon's request for the root then waits in the admin for the preload, instead
    # of being sent once the preload is done (a round trip later)
    seen, _ = run_json(WHILE, str(tmp_path))
    assert seen == {"answered_first": True, "preloaded": True}
