"""Actors for tests of the supervisor shell on a real Thespian system (imported by name)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from pyproof.actors import messages as m
from pyproof.actors.base import ProofActor
from pyproof.actors.supervisor import SupervisorActor
from pyproof.supervision import events as ev
from pyproof.supervision.process_tree import is_alive
from pyproof.supervision.spec import ChildSpec, Strategy, SupervisorSpec, SupFlags

RENDEZVOUS_TIMEOUT = 20.0


@dataclass(frozen=True)
class Meet:
    """A child's init: write `<directory>/<name>.up`, then wait for `wait_for`'s file."""

    directory: str
    name: str
    wait_for: str | None = None
    fail_once: bool = False  # the first incarnation answers StartError
    wait_gone: str | None = None  # ...and wait until that child's first process is gone


@dataclass(frozen=True)
class Children:
    """Start these children under one supervisor; answer `Running` once all run."""

    corr: str
    directory: str
    children: tuple[Meet, ...]
    parallel: bool


@dataclass(frozen=True)
class Running:
    corr: str
    started: tuple[str, ...]  # in the order the core saw them start
    restarts: int
    pid: int  # the supervisor's: a test kills its tree when done


class Rendezvous(ProofActor):
    """Starts only once `wait_for` has started too: a serial start never gets there."""

    def receive(self, message, sender) -> None:
        if not isinstance(message, Meet):
            return
        marker = os.path.join(message.directory, f"{message.name}.up")
        first = not os.path.exists(marker)
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
        if message.fail_once and first:
            self.send(sender, m.StartError(reason="failed once, on purpose"))
            return
        if message.wait_for:
            other = os.path.join(message.directory, f"{message.wait_for}.up")
            deadline = time.monotonic() + RENDEZVOUS_TIMEOUT
            while not os.path.exists(other):  # a file another process writes: poll, bounded
                if time.monotonic() > deadline:
                    self.send(sender, m.StartError(reason=f"{message.wait_for} never started"))
                    return
                time.sleep(0.01)
        if message.wait_gone:
            first_pid = _first_pid(os.path.join(message.directory, f"{message.wait_gone}.up"))
            deadline = time.monotonic() + RENDEZVOUS_TIMEOUT
            while first_pid is None or is_alive(first_pid):
                if time.monotonic() > deadline:
                    self.send(sender, m.StartError(reason=f"{message.wait_gone} never went"))
                    return
                time.sleep(0.01)
                first_pid = first_pid or _first_pid(
                    os.path.join(message.directory, f"{message.wait_gone}.up"))
        self.send(sender, m.Started(pid=os.getpid()))


def _first_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            line = f.readline()
    except FileNotFoundError:
        return None
    return int(line) if line.endswith("\n") else None


class ChoosySupervisor(SupervisorActor):
    """A supervisor whose `parallel_start` each test chooses."""

    asker = None
    corr = ""
    order: list[str]

    def receive_other(self, message, sender) -> None:
        if isinstance(message, Children):
            self.asker, self.corr, self.order = sender, message.corr, []
            self.parallel_start = message.parallel
            self.supervise(SupervisorSpec(
                name="test", flags=SupFlags(strategy=Strategy.ONE_FOR_ONE, intensity=3,
                                            period=60.0),
                children=tuple(ChildSpec(id=c.name, start=m.ActorStart(
                    actor="tests.supervisor_helpers:Rendezvous", init=c, start_timeout=60.0))
                    for c in message.children)))

    def execute(self, command) -> None:
        if isinstance(command, ev.Log) and command.event == "child_started":
            self.order.append(command.child_id)  # the core's view of the starts
        super().execute(command)

    def on_running(self) -> None:
        assert self.core is not None
        self.send(self.asker, Running(corr=self.corr, started=tuple(self.order),
                                      restarts=self.core.statistics().restarts, pid=os.getpid()))

    def on_gone(self, reason, escalated) -> None:
        self.send(self.asker, Running(corr=self.corr, started=(f"gone: {reason}",),
                                      restarts=-1, pid=os.getpid()))
