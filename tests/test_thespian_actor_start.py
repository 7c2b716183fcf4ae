"""What Thespian does as each actor process starts, made cheaper (actors/system.py
`start_actors_quicker`): the same handlers, one look for setproctitle in all."""

from __future__ import annotations

from tests.fresh_python import run_json

# a fresh interpreter, as in test_startup_admin.py (Thespian leaves sockets to the collector)
SCRIPT = r"""
import json, os, signal, sys
from thespian.actors import Actor, ActorExitRequest
from tests.thespian_system import in_process_system

looks = []  # this process's looks for setproctitle (a forked child has its own copy)

class Recorder:
    def find_spec(self, name, path=None, target=None):
        if name == "setproctitle":
            looks.append(os.getpid())
        return None  # (the other finders go on: it is not installed)

sys.meta_path.insert(0, Recorder())

class Probe(Actor):
    def receiveMessage(self, message, sender):
        term = signal.getsignal(signal.SIGTERM)
        self.send(sender, {"looks_here": looks.count(os.getpid()),
                           "term_handler": getattr(term, "__name__", repr(term))})

with in_process_system(sys.argv[1]) as system:
    probes = [system.createActor(Probe) for _ in range(2)]
    answers = [system.ask(probe, "?", 10.0) for probe in probes]
    for probe in probes:
        system.tell(probe, ActorExitRequest())
print(json.dumps({"looks_in_starter": looks.count(os.getpid()), "answers": answers}))
"""


def test_actors_start_with_thespians_signal_handlers_and_look_for_setproctitle_never(
        tmp_path) -> None:
    # it was a failed import in every actor (and in the admin and its logger), a search of
    # sys.path each; it is looked for once, in the process that starts the system
    seen, _ = run_json(SCRIPT, str(tmp_path))
    assert seen["looks_in_starter"] == 1
    assert seen["answers"] == [{"looks_here": 0,
                                "term_handler": "shutdown_signal_detected"}] * 2
