"""Actors for tests of the supervisor shell on a real Thespian system (imported by name)."""

from __future__ import annotations

import os
import subprocess
import sys
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
    independent: bool = False  # SupFlags(independent=...): the core issues every start at once


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
                                            period=60.0, independent=message.independent),
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


# ---------------------------------------------- the watchdog with heartbeats (real Thespian)

@dataclass(frozen=True)
class Stall:
    """Stay in the handler `seconds`: spinning on the CPU (busy) or asleep (hung). With
    `starve_on` (a CPU number), spin there under SCHED_IDLE next to three CPU burners of its
    own (its session: autogroup shares the CPU between sessions first) that stop after
    `seconds`: runnable all along, but left waiting for the CPU (an overloaded machine)."""

    seconds: float
    spin: bool
    starve_on: int | None = None


@dataclass(frozen=True)
class PatientStart:
    """A watched child's init: log each start and ping under `directory`; first incarnation
    stalls as told once started."""

    directory: str
    name: str
    stall: Stall | None = None


@dataclass(frozen=True)
class Watched:
    """Start these children (`needy`: ones that want pings) under a watchdog of 0.5 s
    interval and 2 s timeout; answer `Running` once all run."""

    corr: str
    children: tuple[PatientStart, ...]
    needy: tuple[str, ...] = ()


def _log_line(directory: str, name: str, kind: str, text: str) -> None:
    with open(os.path.join(directory, f"{name}.{kind}"), "a") as f:
        f.write(text + "\n")


def read_lines(directory: str, name: str, kind: str) -> list[str]:
    try:
        with open(os.path.join(directory, f"{name}.{kind}")) as f:
            return [line for line in f.read().splitlines() if line]
    except FileNotFoundError:
        return []


_BURN = ("import os, sys, time; os.sched_setaffinity(0, {int(sys.argv[1])}); print(flush=True)\n"
         "while time.monotonic() < float(sys.argv[2]): pass")


class Patient(ProofActor):
    """Logs its starts ('<pid> <monotonic>') and the pings it answers; stalls once if told."""

    start: PatientStart | None = None

    def receive(self, message, sender) -> None:
        if isinstance(message, PatientStart):
            self.start = message
            first = not read_lines(message.directory, message.name, "starts")
            _log_line(message.directory, message.name, "starts",
                      f"{os.getpid()} {time.monotonic()}")
            self.send(sender, m.Started(pid=os.getpid()))
            if message.stall is not None and first:
                self.send(self.myAddress, message.stall)
        elif isinstance(message, Stall):
            assert self.start is not None
            _log_line(self.start.directory, self.start.name, "stalls", f"{time.monotonic()}")
            until = time.monotonic() + message.seconds
            burners = []
            if message.starve_on is not None:
                burners = [subprocess.Popen(
                    [sys.executable, "-c", _BURN, str(message.starve_on), str(until)],
                    stdout=subprocess.PIPE) for _ in range(3)]
                for b in burners:  # each burns on that CPU before this one goes there
                    assert b.stdout is not None and b.stdout.readline() == b"\n"
                os.sched_setaffinity(0, {message.starve_on})
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
                cpu = time.thread_time()
            if not message.spin:
                time.sleep(message.seconds)  # deadlocked: no CPU at all
            while time.monotonic() < until:
                pass
            if message.starve_on is not None:
                _log_line(self.start.directory, self.start.name, "cpu",
                          f"{time.thread_time() - cpu}")
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
                os.sched_setaffinity(0, range(os.cpu_count() or 1))
                for b in burners:
                    b.wait(30.0)
                    if b.stdout is not None:
                        b.stdout.close()
            _log_line(self.start.directory, self.start.name, "stalls", "done")

    def answer_ping(self, message, sender) -> None:
        if self.start is not None:
            _log_line(self.start.directory, self.start.name, "pings", str(message.seq))
        super().answer_ping(message, sender)


class NeedyPatient(Patient):
    wants_pings = True


class WatchingSupervisor(SupervisorActor):
    asker = None
    corr = ""

    def receive_other(self, message, sender) -> None:
        if isinstance(message, Watched):
            self.asker, self.corr = sender, message.corr
            self.supervise(SupervisorSpec(
                name="watching", flags=SupFlags(strategy=Strategy.ONE_FOR_ONE, intensity=10,
                                                period=60.0, ping_interval=0.5,
                                                ping_timeout=2.0),
                children=tuple(ChildSpec(id=c.name, start=m.ActorStart(
                    actor="tests.supervisor_helpers:"
                          + ("NeedyPatient" if c.name in message.needy else "Patient"),
                    init=c, start_timeout=60.0)) for c in message.children)))

    def on_running(self) -> None:
        assert self.core is not None
        self.send(self.asker, Running(corr=self.corr, started=tuple(self.core.child_ids()),
                                      restarts=0, pid=os.getpid()))
