"""The actors' modules are loaded in Thespian's admin, once, before it creates an actor.

Every actor is forked from the admin: what the admin loaded before, each has
at once. The daemon process itself (which runs no actor) does not load them;
the admin does while its logger process starts (actors/daemon.py, system.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
    marked_before = open(sys.argv[1]).read().split() if os.path.exists(sys.argv[1]) else []
    probes = [system.createActor(Probe) for _ in range(2)]
    answers = [system.ask(probe, "where", 10.0) for probe in probes]
    for probe in probes:
        system.tell(probe, ActorExitRequest())
print(json.dumps({"me": os.getpid(), "loaded_here": PROBE in sys.modules,
                  "marked_before": marked_before, "answers": answers}))
"""


def test_the_admin_loads_the_actors_modules_before_its_first_actor_and_only_there(
        tmp_path) -> None:
    mark = tmp_path / "preloaded"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(mark), str(tmp_path)],
                         capture_output=True, text=True, timeout=60, check=True, cwd=root)
    seen = json.loads(out.stdout.splitlines()[-1])
    (admin,) = {int(pid) for pid in mark.read_text().split()}  # once, in one process
    assert seen["marked_before"] == [str(admin)]  # before the system answered its starter
    assert admin != seen["me"] and not seen["loaded_here"]  # not in the starting process
    assert seen["answers"] == [{"parent": admin, "loaded": True}] * 2  # forked from it


def test_an_admin_whose_preload_fails_serves_anyway_and_says_why(tmp_path) -> None:
    # the actors then import what they need themselves; the daemon is not left waiting
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "mark"), str(tmp_path),
                          "fail"], capture_output=True, text=True, timeout=60, check=True,
                         cwd=root)
    seen = json.loads(out.stdout.splitlines()[-1])
    assert [a["loaded"] for a in seen["answers"]] == [False, False]
    assert "ImportError: a broken module" in out.stderr
