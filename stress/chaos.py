"""Chaos: clients run queries with exact known answers while actors are killed or frozen.

    python -m stress.chaos --seed S --duration T [--clients C] [--workers W] [--json]
    python -m stress.chaos --faults 1000   (a soak: runs until that many faults were injected)

A soak runs until N faults were injected (a fault whose target is not there at
that instant is skipped and does not count), within --max-wall seconds; a
50-fault soak takes about 75 s of wall time on 2 cores (about 1.5 s a fault),
so 1000 faults take about 25-30 minutes.

Starts its own proofd (sandboxed in a temp dir), runs C client threads, each
opening sessions and running queries in a loop, while an injector SIGKILLs
or SIGSTOPs the gateway, masters and workers found through the live tree,
and every control process: the sessions supervisor, the root, the Thespian
admin and logger, the daemon's main process (a killed daemon is started again
on its port, as systemd would: it must re-adopt every session), or all of
them at once ("restart"). A control process other than the sessions
supervisor is "frozen" for a pause (a GC or swap stall), then thawed. Clients
also run selectors that fault (exit, segfault, hang in begin(), an output over
the query's max_output_bytes) and queries whose master data thread deadlocks
(the test hook `thread_beats.FAULT_INPUT`; the daemon runs with
PYPROOF_TEST_HOOKS=1): each must fail its own query with a clean error naming
the fault, and cost nothing else.
The injection plan is a pure function of (seed, duration, clients, workers)
and is printed, so a run can be replayed (the timing of the clients varies).

Every query ends in one of: exact (the result equals the reference bit for
bit), wrong (a failure), a clean QueryError (explained when the session's
master was killed or frozen around it, or the daemon restarted), a timeout, or
a control failure. A session that disappears under its client is "lost" (a
failure: sessions outlive every control process).
At the end the daemon is stopped and audited: no process of its tree or its
Thespian session may survive, and no socket file may be left. Exit status 1
on any wrong result, leak, stuck client or failed final check (and, with
--strict, on unexplained errors, timeouts and stale socket files of closed
sessions too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import uproot

import pyproof
from pyproof.actors.survival import control_sessions, read_control
from pyproof.actors.thread_beats import FAULT_INPUT
from pyproof.errors import ConnectError, QueryError
from stress import (
    SandboxDaemon,
    become_subreaper,
    data_file,
    is_alive,
    kill_session,
    process_state,
    run_audited,
    sigcont,
)
from stress.selectors import mass_hist, muon_pt, pt_hist

QUERY_TIMEOUT = 30.0      # a query not done by then is stopped and counted as a timeout
FREEZE_BOUND = 10.0       # a frozen actor the watchdog has not replaced by then is a finding
JOIN_GRACE = 75.0         # clients finish their current query within this after the end
# the soak's daemon closes a session idle this long: one whose close could not reach the
# daemon (restarting) is re-adopted, and in a 45 min soak 128 of them (~500 processes) piled
# up until the default 24 h idle timeout, loading the machine into a watchdog restart spiral
SESSION_IDLE_TIMEOUT = 60
FINAL_CHECK_TIMEOUT = 30.0
MASTER_BLAME_BEFORE = 5.0  # a master fault this long before a query can still explain its error
GATEWAY_FAULTS_PER_10S = 3  # root's intensity is 5 restarts in 10 s: stay below it
ROLES = (("gateway", 0.2), ("master", 0.15), ("worker", 0.3), ("sessions", 0.1),
         ("logger", 0.04), ("admin", 0.05), ("root", 0.05), ("main", 0.05), ("restart", 0.06))
# a kill of these ends the daemon (exit 3, or gone): it is restarted. The logger too: in
# thespian 4.0.1 the admin's restart of a dead logger raises (no attribute 'logDefs') and
# the admin dies, and the root with it
DAEMON_ROLES = ("logger", "admin", "root", "main", "restart")
CONTROL_ROLES = ("sessions", *DAEMON_ROLES)
DAEMON_FAULT_GAP = 5.0    # seconds between two faults that restart the daemon
PAUSE = 2.0               # a frozen control process (not watched by a watchdog) thaws after
DAEMON_EXIT_TIMEOUT = 15.0  # a daemon whose root or admin was killed exits within this
SELECTOR_FAULTS = 0.08     # share of client queries that run a faulting selector
SELECTOR_FAULT_KINDS = ("exit", "segfault", "hang_begin", "huge_output", "deadlock")
STUCK_AFTER = 3.0          # the masters' data-thread bound here (PYPROOF_TEST_STUCK_AFTER)
BLAME_CONTROL_WITHIN = 8.0  # an error this close to a daemon restart may be explained by it
LOST = ("no session '", "the session is gone")  # errors that mean a session was lost
LOST_CHECK_DEADLINE = 20.0  # after an error: is the session still there? (a restart: 12 s)
SOAK_PLAN_SECONDS = 3.0    # a soak's plan covers this many seconds per fault asked (skips)
SOAK_WALL_SECONDS = 4.0    # ...and the soak gives up after this many per fault (+ 120 s)


def soak_horizon(faults: int) -> float:
    """How many seconds of plan a soak of `faults` faults gets: far more than it needs
    (faults are about 1.2 s apart; some are skipped), so it ends by count, not by plan."""
    return SOAK_PLAN_SECONDS * faults + 30.0


# -- the plan: pure, seeded --------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    index: int
    at: float          # seconds after the clients started
    action: str        # "kill" (SIGKILL) or "freeze" (SIGSTOP)
    role: str          # "gateway", "master", "worker", or a control process (CONTROL_ROLES)
    client: int        # whose session (master, worker)
    worker: int        # which worker

    def target(self) -> str:
        if self.role == "restart":
            return "every control process (then the daemon restarts)"
        if self.role == "gateway" or self.role in CONTROL_ROLES:
            return self.role
        if self.role == "master":
            return f"client-{self.client}/master"
        return f"client-{self.client}/worker-{self.worker}"

    def describe(self) -> str:
        return f"#{self.index:<3} t={self.at:6.2f}s  {self.action:<6} {self.target()}"


def make_plan(seed: int, duration: float, clients: int, workers: int) -> list[Fault]:
    """The faults to inject: same arguments, same plan."""
    rng = random.Random(seed)
    plan: list[Fault] = []
    gateway_times: list[float] = []
    daemon_faults: list[float] = []
    t = rng.uniform(1.0, 2.0)  # let the clients open their first sessions
    while t < duration - 0.5:
        role = rng.choices([r for r, _ in ROLES], weights=[w for _, w in ROLES])[0]
        # the root restarts the gateway and the sessions supervisor: 5 restarts in 10 s
        if role in ("gateway", "sessions") and sum(1 for g in gateway_times if t - g < 10.0) \
                >= GATEWAY_FAULTS_PER_10S:
            role = "worker"
        action = "kill" if rng.random() < 0.65 or role == "restart" else "freeze"
        if role in DAEMON_ROLES and action == "kill" and (
                t > duration - 3.0 or any(t - d < DAEMON_FAULT_GAP for d in daemon_faults)):
            role = "worker"  # restarts take a moment: spaced out, not at the very end
        if role in ("gateway", "sessions"):
            gateway_times.append(t)
        if role in DAEMON_ROLES and action == "kill":
            daemon_faults.append(t)
        plan.append(Fault(index=len(plan), at=round(t, 3), action=action,
                          role=role, client=rng.randrange(clients),
                          worker=rng.randrange(workers)))
        t += rng.uniform(0.6, 1.8)
    return plan


# -- queries with known exact answers ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class QuerySpec:
    name: str
    selector: str
    kwargs: dict[str, Any]
    expected: dict[str, Any]


class References:
    """Exact answers, computed once here with uproot (sequentially, no pyproof)."""

    def __init__(self) -> None:
        zmumu = data_file("uproot-Zmumu.root")
        zstd = data_file("uproot-Zmumu-zstd.root")
        hzz = data_file("uproot-HZZ.root")
        self.zmumu_files = (zmumu, zstd)
        self.hzz = hzz
        self.zmumu = {path: self._zmumu(path) for path in self.zmumu_files}
        self.hzz_ref = self._hzz(hzz)

    @staticmethod
    def _zmumu(path: str) -> dict[str, Any]:
        tree = uproot.open(path)["events"]
        arrays = tree.arrays(["M", "Q1", "Q2"], library="np")
        h = mass_hist()
        h.fill(arrays["M"])
        return {"n": len(arrays["M"]), "mass": h,
                "charge": int(arrays["Q1"].sum() + arrays["Q2"].sum())}

    @staticmethod
    def _hzz(path: str) -> dict[str, Any]:
        tree = uproot.open(path)["events"]
        arrays = tree.arrays(["Muon_Px", "Muon_Py"])
        h = pt_hist()
        h.fill(muon_pt(arrays["Muon_Px"], arrays["Muon_Py"]))
        return {"n": len(arrays), "muons": int(sum(len(x) for x in arrays["Muon_Px"])),
                "pt": h}

    def pick(self, rng: random.Random) -> QuerySpec:
        if rng.random() < SELECTOR_FAULTS:
            return self.pick_fault(rng)
        kind = rng.choice(("zmumu", "zmumu2", "hzz", "cycles"))
        sleep = {"sleep": 0.04}
        if kind == "zmumu":
            path = rng.choice(self.zmumu_files)
            return QuerySpec(kind, "stress.selectors:MassCount", dict(
                dataset=f"{path}:events", inputs=sleep, packetizer="basic",
                packetizer_params={"packet_entries": 192}), self.zmumu[path])
        if kind == "zmumu2":
            a, b = self.zmumu_files
            expected = {"n": 2 * self.zmumu[a]["n"], "charge": 2 * self.zmumu[a]["charge"],
                        "mass": self.zmumu[a]["mass"] + self.zmumu[b]["mass"]}
            return QuerySpec(kind, "stress.selectors:MassCount", dict(
                dataset=[f"{a}:events", f"{b}:events"], inputs=sleep, packetizer="basic",
                packetizer_params={"packet_entries": 256}), expected)
        if kind == "hzz":
            return QuerySpec(kind, "stress.selectors:MuonCount", dict(
                dataset=f"{self.hzz}:events", inputs=sleep, packetizer="basic",
                packetizer_params={"packet_entries": 200}), self.hzz_ref)
        n = rng.randrange(10_000, 400_000)
        return QuerySpec(kind, "stress.selectors:CycleSum", dict(
            cycles=n, inputs=sleep, packetizer="basic",
            packetizer_params={"packet_entries": max(1, n // 12)}),
            {"n": n, "sum": n * (n - 1) // 2})


    def pick_fault(self, rng: random.Random) -> QuerySpec:
        """A selector that faults: its query must fail cleanly, naming the fault."""
        kind = rng.choice(SELECTOR_FAULT_KINDS)
        path = self.zmumu_files[0]
        options = dict(dataset=f"{path}:events", packetizer="basic",
                       packetizer_params={"packet_entries": 192})
        if kind == "hang_begin":
            return QuerySpec(kind, "stress.selectors:HangsInBegin",
                             dict(options, packet_timeout=1.0),
                             {"error": r"PacketTimeout: .*in begin\(\)"})
        if kind == "huge_output":
            return QuerySpec(kind, "stress.selectors:HugeOutput",
                             dict(options, inputs={"mb": 2}, max_output_bytes=2**20),
                             {"error": r"OutputTooLarge: output 'huge' of worker-\d+ is 2\.0 MiB"})
        if kind == "deadlock":
            return QuerySpec(kind, "stress.selectors:MassCount",
                             dict(options, inputs={FAULT_INPUT: "deadlock:master-plane"}),
                             {"error": r"MasterStuck: the session's master data thread "
                                       r"master-plane stopped answering"})
        deadly = {"deadly": rng.randrange(self.zmumu[path]["n"])}
        if kind == "exit":
            return QuerySpec(kind, "stress.selectors:ExitsWorker", dict(options, inputs=deadly),
                             {"error": r"PoisonedPacket: .*exit status 1"})
        return QuerySpec(kind, "stress.selectors:Segfaults", dict(options, inputs=deadly),
                         {"error": r"PoisonedPacket: .*killed by signal SIGSEGV"})


def compare(outputs: dict[str, Any], entries: int, expected: dict[str, Any]) -> str | None:
    """None if the result is exact, else what differs."""
    diffs = []
    for key, want in expected.items():
        got = outputs.get(key)
        if hasattr(want, "values") and hasattr(want, "axes"):
            if got is None or not hasattr(got, "values") or not np.array_equal(
                    np.asarray(got.values(flow=True)), np.asarray(want.values(flow=True))):
                total = got.sum(flow=True) if hasattr(got, "sum") else got
                diffs.append(f"{key}: histogram differs (sum {total} != {want.sum(flow=True)})")
        elif got != want:
            diffs.append(f"{key}: {got!r} != {want!r}")
    if entries != expected["n"]:
        diffs.append(f"stats.entries: {entries} != {expected['n']}")
    return "; ".join(diffs) or None


# -- the run ------------------------------------------------------------------------------

@dataclass(slots=True)
class Outcome:
    client: int
    session: str
    query: str
    start: float
    end: float
    outcome: str   # exact | fault_ok | wrong | error | timeout | control_failed | unexpected
    detail: str = ""
    explained: bool = False
    lost: bool = False  # after it, the daemon no longer knew the session (checked)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.refs = References()
        self.plan = make_plan(args.seed, args.duration, args.clients, args.workers)
        self.stop = threading.Event()
        self.enough = threading.Event()  # a soak: as many faults injected as asked
        self.chaos_seconds = 0.0
        self.reached = -1  # the index of the last fault the injector got to
        self.watch_stop = threading.Event()
        self.daemon: SandboxDaemon | None = None
        self.tree_calls: list[tuple[float, bool]] = []  # (seconds, answered) of the injector
        self.lock = threading.Lock()
        self.current: dict[int, str | None] = dict.fromkeys(range(args.clients))
        self.outcomes: list[Outcome] = []
        self.connects: Counter[str] = Counter()
        self.connect_errors: list[str] = []
        self.injected: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []
        self.frozen: dict[int, dict[str, Any]] = {}
        self.restarts: list[dict[str, Any]] = []
        self.freezes_unhandled: list[dict[str, Any]] = []
        self.t0 = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- clients --
    def client(self, index: int, daemon: SandboxDaemon) -> None:
        rng = random.Random(f"{self.args.seed}-client-{index}")
        url = f"{daemon.url}?workers={self.args.workers}"
        while not self.stop.is_set():
            try:
                session = pyproof.connect(url)
            except QueryError as exc:
                self._connect("refused", exc)
                self.stop.wait(0.2)
                continue
            except ConnectError as exc:
                self._connect("failed", exc)
                self.stop.wait(0.2)
                continue
            except Exception as exc:  # anything else is a client bug: keep it visible
                self._connect("failed", exc)
                self.stop.wait(0.2)
                continue
            self._connect("ok", None)
            with self.lock:
                self.current[index] = session.id
            try:
                for _ in range(rng.randint(2, 5)):
                    if self.stop.is_set():
                        break
                    if not self._query(index, session, self.refs.pick(rng)):
                        break  # after an error, start over with a fresh session
            finally:
                with self.lock:
                    self.current[index] = None
                try:
                    session.close()
                except (QueryError, ConnectError) as exc:  # e.g. the daemon is restarting
                    self._connect("close_failed", exc)

    def _connect(self, kind: str, exc: BaseException | None) -> None:
        with self.lock:
            self.connects[kind] += 1
            if exc is not None:
                self.connect_errors.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])

    def _query(self, index: int, session: Any, spec: QuerySpec) -> bool:
        start = self.now()
        record = Outcome(client=index, session=session.id or "", query=spec.name, start=start,
                         end=start, outcome="exact")
        try:
            result = session.process(spec.selector, progress=False, timeout=QUERY_TIMEOUT,
                                     **spec.kwargs)
        except QueryError as exc:
            timed_out = "did not finish within" in str(exc)
            record.outcome, record.detail = ("timeout" if timed_out else "error"), str(exc)
            if "error" in spec.expected and re.search(spec.expected["error"], str(exc)):
                record.outcome = "fault_ok"  # the faulting selector failed its query only
        except ConnectError as exc:
            record.outcome, record.detail = "control_failed", str(exc)
        except Exception as exc:
            record.outcome, record.detail = "unexpected", f"{type(exc).__name__}: {exc}"
        else:
            diff = ("a faulting selector's query succeeded" if "error" in spec.expected
                    else compare(result.outputs, result.stats.entries, spec.expected))
            if diff is not None:
                record.outcome, record.detail = "wrong", diff
        record.end = self.now()
        record.detail = record.detail[:400]
        if record.outcome in ("error", "timeout", "control_failed", "unexpected"):
            record.lost = self._session_lost(session)
        if record.outcome in ("timeout", "unexpected", "wrong"):
            record.detail += f" [session then: {self._diagnose(record.session)}]"
        with self.lock:
            self.outcomes.append(record)
        return record.outcome in ("exact", "fault_ok")

    @staticmethod
    def _session_lost(session: Any) -> bool:
        """After a failed query: does the daemon still know the session? (Its error text
        alone cannot tell a lost session from a lost query.) A daemon that cannot be asked
        (restarting for longer than the check's deadline) proves nothing either way."""
        try:
            session._call("session_status", deadline=LOST_CHECK_DEADLINE)
        except QueryError as exc:
            return str(exc).startswith("no session '")
        except Exception:
            return False
        return False

    def _diagnose(self, session: str) -> str:
        """The session's actors in the live tree, with their process states (T: stopped)."""
        if self.daemon is None:
            return "?"
        try:
            pids = self.daemon.pids()
        except Exception as exc:
            return f"live tree unavailable: {exc}"[:200]
        mine = {k: v for k, v in pids.items() if k.startswith(session) or k.endswith(session)}
        return ", ".join(f"{k} {v} {process_state(v)}" for k, v in sorted(mine.items())) or \
            "not in the tree"

    # -- the injector --
    def injector(self, daemon: SandboxDaemon) -> None:
        for fault in self.plan:
            while not self.stop.is_set() and self.now() < fault.at:
                self.stop.wait(min(0.1, max(0.0, fault.at - self.now())))
            if self.stop.is_set():
                return
            self._inject(fault, daemon)
            self.reached = fault.index
            if self.args.faults and len(self.injected) >= self.args.faults:
                break
        self.enough.set()  # a soak: as many as asked (or the plan ran out)

    def watcher(self) -> None:
        while not self.watch_stop.wait(0.05):
            self._check_frozen()

    def _inject(self, fault: Fault, daemon: SandboxDaemon) -> None:
        if fault.role in CONTROL_ROLES:
            self._inject_control(fault, daemon)
            return
        t = time.monotonic()
        try:
            pids = daemon.pids()
        except Exception as exc:
            self.tree_calls.append((time.monotonic() - t, False))
            self._skip(fault, f"live tree unavailable: {exc}")
            return
        self.tree_calls.append((time.monotonic() - t, True))
        session = None
        if fault.role == "gateway":
            key = "gateway"
        else:
            with self.lock:
                session = self.current.get(fault.client)
            if session is None:
                self._skip(fault, f"client {fault.client} has no session now")
                return
            leaf = "master" if fault.role == "master" else f"worker-{fault.worker}"
            key = f"{session}/{leaf}"
        pid = pids.get(key)
        if pid is None:
            self._skip(fault, f"{key} is not in the live tree (restarting?)")
            return
        if not daemon.owns(pid):
            self._skip(fault, f"pid {pid} of {key} is gone or not the daemon's")
            return
        sig = signal.SIGKILL if fault.action == "kill" else signal.SIGSTOP
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            self._skip(fault, f"pid {pid} of {key} exited first")
            return
        event = {"index": fault.index, "planned": fault.at, "at": round(self.now(), 3),
                 "action": fault.action, "role": fault.role, "target": key, "pid": pid,
                 "session": session}
        with self.lock:
            self.injected.append(event)
            if fault.action == "freeze":
                self.frozen[pid] = event

    def _inject_control(self, fault: Fault, daemon: SandboxDaemon) -> None:
        """SIGKILL or freeze a control process; a killed daemon is started again."""
        event: dict[str, Any] = {"index": fault.index, "planned": fault.at, "action": fault.action,
                                 "role": fault.role, "target": fault.role, "session": None}
        if fault.role == "restart":
            main = daemon.info.pid
            info = read_control(os.path.join(daemon.info.home, "run"))
            killed = [p for sid in control_sessions(info or {"pid": main})
                      for p in kill_session(sid)]
            event.update(at=round(self.now(), 3), pid=main, killed=len(killed))
            self._restart(event, daemon, main)
            return
        try:  # the main process needs no look-up (the tree may be down: a restart)
            pids = {"main": daemon.info.pid} if fault.role == "main" else daemon.control_pids()
        except Exception as exc:
            self._skip(fault, f"live tree unavailable: {exc}")
            return
        pid = pids.get(fault.role)
        if pid is None or not daemon.owns(pid):
            self._skip(fault, f"no live {fault.role} process found")
            return
        main = daemon.info.pid
        event.update(at=round(self.now(), 3), pid=pid)
        if fault.action == "freeze":
            os.kill(pid, signal.SIGSTOP)
            with self.lock:
                self.injected.append(event)
                if fault.role == "sessions":  # watched: the root's watchdog must replace it
                    self.frozen[pid] = event
                    return
            self.stop.wait(PAUSE)  # the others are watched by nobody: a stall, then thawed
            sigcont(pid)
            event["thawed_after"] = PAUSE
            return
        os.kill(pid, signal.SIGKILL)
        if fault.role not in DAEMON_ROLES:
            with self.lock:
                self.injected.append(event)
            return
        self._restart(event, daemon, main)

    def _restart(self, event: dict[str, Any], daemon: SandboxDaemon, main: int) -> None:
        """The daemon's main process exits (its root is gone) or was killed: start it again
        on its port, as systemd would; it must re-adopt every session."""
        deadline = time.monotonic() + DAEMON_EXIT_TIMEOUT
        while is_alive(main) and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            event["restart_seconds"] = round(daemon.restart(), 2)
        except Exception as exc:
            event["restart_failed"] = f"{type(exc).__name__}: {exc}"[:300]
        with self.lock:
            self.injected.append(event)
            self.restarts.append(event)

    def _skip(self, fault: Fault, reason: str) -> None:
        with self.lock:
            self.skipped.append({"index": fault.index, "target": fault.target(),
                                 "reason": reason[:200]})

    def _check_frozen(self, final: bool = False) -> None:
        """A frozen actor must be killed and replaced by its supervisor's watchdog."""
        with self.lock:
            frozen = list(self.frozen.items())
        for pid, event in frozen:
            state = process_state(pid)
            if state is None or state in ("Z", "X"):
                event["replaced_after"] = round(self.now() - event["at"], 2)
                with self.lock:
                    self.frozen.pop(pid, None)
            elif final or self.now() - event["at"] > FREEZE_BOUND:
                # not handled: thaw it so the run (and the daemon) can go on, and report it
                sigcont(pid)
                with self.lock:
                    self.freezes_unhandled.append(dict(event, state=state))
                    self.frozen.pop(pid, None)

    # -- the whole thing --
    def execute(self) -> dict[str, Any]:
        become_subreaper()
        self.daemon = SandboxDaemon(session_idle_timeout=self.args.session_idle_timeout)
        return run_audited(self.daemon, self._drive, self._failures, cleanup=self._cleanup)

    def _cleanup(self) -> None:
        self.stop.set()
        self.watch_stop.set()
        for pid in list(self.frozen):
            sigcont(pid)

    def _drive(self, daemon: SandboxDaemon) -> dict[str, Any]:
        args = self.args
        with contextlib.suppress(Exception):
            daemon.pids()
        self.t0 = time.monotonic()
        threads = [threading.Thread(target=self.client, args=(i, daemon), daemon=True,
                                    name=f"client-{i}") for i in range(args.clients)]
        injector = threading.Thread(target=self.injector, args=(daemon,), daemon=True,
                                    name="injector")
        watcher = threading.Thread(target=self.watcher, daemon=True, name="watcher")
        for t in (*threads, injector, watcher):
            t.start()
        if args.faults:  # a soak ends by count, within a bound
            self.enough.wait(args.max_wall)
        else:
            self.stop.wait(args.duration)
        self.chaos_seconds = self.now()
        self.stop.set()
        injector.join(10.0)
        deadline = time.monotonic() + args.join_grace
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        # a freeze injected near the end still has to be handled by the watchdog
        end = time.monotonic() + FREEZE_BOUND + 1.0
        while self.frozen and time.monotonic() < end:
            time.sleep(0.05)
        self.watch_stop.set()
        watcher.join(5.0)
        self._check_frozen(final=True)
        final = self._final_check(daemon)
        left_open, stale = self._wait_sessions_gone(daemon)
        return self._report(stuck, final, stale, left_open)

    def _final_check(self, daemon: SandboxDaemon) -> dict[str, Any]:
        """After the storm of faults, a new client connects and gets an exact answer."""
        t = time.monotonic()
        result: dict[str, Any] = {"ok": False}
        holder: dict[str, Any] = {}

        def run() -> None:
            try:
                with pyproof.connect(f"{daemon.url}?workers=1") as session:
                    n = 50_000
                    r = session.process("stress.selectors:CycleSum", cycles=n, progress=False,
                                        timeout=FINAL_CHECK_TIMEOUT)
                    holder["diff"] = compare(r.outputs, r.stats.entries,
                                             {"n": n, "sum": n * (n - 1) // 2})
            except Exception as exc:
                holder["error"] = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(FINAL_CHECK_TIMEOUT + 30)
        if thread.is_alive():
            result["error"] = "the final client did not finish (hung)"
        elif "error" in holder:
            result["error"] = holder["error"][:300]
        elif holder.get("diff"):
            result["error"] = f"wrong result: {holder['diff']}"
        else:
            result["ok"] = True
        result["seconds"] = round(time.monotonic() - t, 2)
        return result

    def _wait_sessions_gone(self, daemon: SandboxDaemon) -> tuple[list[str] | None, list[str]]:
        """Every client closed its session: the tree empties. Which sessions are still open
        (a close that never reached the daemon; None if the tree could not be read), and
        what socket files stay?"""
        deadline = time.monotonic() + 10.0
        left_open: list[str] | None = None
        while time.monotonic() < deadline:
            try:
                left_open = sorted(k.removeprefix("session-") for k in daemon.pids()
                                   if k.startswith("session-"))
            except Exception:
                left_open = None
            if left_open == []:
                break
            time.sleep(0.1)
        return left_open, daemon.stale_socket_files()

    def _report(self, stuck: list[str], final: dict[str, Any], stale: list[str],
                left_open: list[str] | None = None) -> dict[str, Any]:
        outcomes = self.outcomes
        master_faults = [e for e in self.injected if e["role"] == "master"]
        for o in outcomes:
            if o.outcome == "error":
                o.explained = any(e["session"] == o.session and
                                  o.start - MASTER_BLAME_BEFORE <= e["at"] <= o.end
                                  for e in master_faults) or any(
                    o.start - BLAME_CONTROL_WITHIN <= e["at"] <= o.end + 1.0
                    for e in self.restarts)
        by = Counter(o.outcome for o in outcomes)
        lost = [o for o in outcomes if o.lost or any(mark in o.detail for mark in LOST)]
        errors = [o for o in outcomes if o.outcome == "error"]
        return {
            "seed": self.args.seed, "duration": self.args.duration,
            "faults_asked": self.args.faults or None,
            "chaos_seconds": round(self.chaos_seconds, 2),
            "seconds_per_fault": round(self.chaos_seconds / len(self.injected), 2)
            if self.injected else None,
            "sessions_lost_checked": sum(o.lost for o in outcomes),
            "clients": self.args.clients, "workers": self.args.workers,
            # a soak's plan is longer than the run: what came due is what it was given
            "plan": [f.describe() for f in self.plan if self._due(f)],
            "queries": len(outcomes), "exact": by["exact"], "wrong": by["wrong"],
            "selector_faults": {kind: {"clean": sum(o.outcome == "fault_ok" for o in outcomes
                                                    if o.query == kind),
                                       "runs": sum(o.query == kind for o in outcomes)}
                                for kind in SELECTOR_FAULT_KINDS},
            "sessions_lost": len(lost),
            "daemon_restarts": len(self.restarts),
            "daemon_restarts_failed": [e["restart_failed"] for e in self.restarts
                                       if "restart_failed" in e],
            "clean_errors": len(errors),
            "clean_errors_explained": sum(o.explained for o in errors),
            "clean_errors_unexplained": sum(not o.explained for o in errors),
            "timeouts": by["timeout"], "control_failed": by["control_failed"],
            "unexpected": by["unexpected"],
            "query_seconds": _quantiles([o.end - o.start for o in outcomes]),
            "queries_by_kind": dict(Counter(o.query for o in outcomes)),
            "exact_by_kind": dict(Counter(o.query for o in outcomes if o.outcome == "exact")),
            "faults_planned": sum(map(self._due, self.plan)),
            "faults_injected": len(self.injected),
            "faults_by_kind": dict(Counter(f"{e['action']} {e['role']}"
                                           for e in self.injected)),
            "faults": self.injected, "faults_skipped": self.skipped,
            "faults_not_reached": [f.index for f in self.plan if self._due(f)
                                   and f.index not in {e["index"] for e in self.injected}
                                   and f.index not in {e["index"] for e in self.skipped}],
            "freezes_unhandled": self.freezes_unhandled,
            "injector_tree_calls": {
                "count": len(self.tree_calls),
                "unanswered": sum(not ok for _, ok in self.tree_calls),
                "max_seconds": round(max((d for d, _ in self.tree_calls), default=0.0), 2)},
            "connects": {k: self.connects[k] for k in ("ok", "refused", "failed",
                                                       "close_failed")},
            "connect_errors": self.connect_errors[:20],
            "problems": [asdict(o) for o in outcomes if o.outcome != "exact"],
            "stuck_clients": stuck, "final_check": final,
            "stale_socket_files_before_stop": stale,
            "session_idle_timeout": self.args.session_idle_timeout,
            "sessions_left_open": None if left_open is None else len(left_open),
            "sessions_left_open_ids": (left_open or [])[:20],
        }

    def _due(self, fault: Fault) -> bool:
        """Part of this run's plan: a soak's, up to the fault that made the count; a timed
        run's, every fault due before the end (those the injector did not get to, late
        behind a daemon restart, are reported as not reached)."""
        if self.args.faults:
            return fault.index <= self.reached
        return fault.at <= self.args.duration

    def _failures(self, r: dict[str, Any]) -> list[str]:
        failures = []
        if r.get("wrong"):
            failures.append(f"{r['wrong']} wrong result(s)")
        if r.get("unexpected"):
            failures.append(f"{r['unexpected']} unexpected client exception(s)")
        if r.get("stuck_clients"):
            failures.append(f"stuck clients: {', '.join(r['stuck_clients'])}")
        if r.get("sessions_lost"):
            failures.append(f"{r['sessions_lost']} session(s) lost")
        if r.get("daemon_restarts_failed"):
            failures.append(f"daemon restart(s) failed: {r['daemon_restarts_failed']}")
        if r.get("faults_asked") and r.get("faults_injected", 0) < r["faults_asked"]:
            failures.append(f"only {r.get('faults_injected')} of {r['faults_asked']} faults "
                            f"injected within {self.args.max_wall:.0f} s")
        if not (r.get("final_check") or {}).get("ok"):
            failures.append(f"final check failed: {(r.get('final_check') or {}).get('error')}")
        if self.args.strict:
            if r.get("clean_errors_unexplained"):
                failures.append(f"{r['clean_errors_unexplained']} unexplained error(s)")
            if r.get("timeouts"):
                failures.append(f"{r['timeouts']} query timeout(s)")
            if r.get("freezes_unhandled"):
                failures.append(f"{len(r['freezes_unhandled'])} freeze(s) not handled")
            if r.get("stale_socket_files_before_stop"):
                failures.append("socket files of closed sessions left while the daemon ran")
        return failures


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": round(at(0.5), 2), "max": round(ordered[-1], 2)}


def render(r: dict[str, Any]) -> str:
    lines = [f"chaos: seed {r['seed']}, duration {r['duration']} s, {r['clients']} clients x "
             f"{r['workers']} workers, wall {r.get('wall_seconds')} s",
             f"plan ({len(r.get('plan', []))} faults):"]
    lines += [f"  {p}" for p in r.get("plan", [])]
    lines.append(f"faults injected: {r.get('faults_injected')} "
                 f"{json.dumps(r.get('faults_by_kind', {}), sort_keys=True)}")
    for e in r.get("faults", []):
        extra = f" (replaced after {e['replaced_after']} s)" if "replaced_after" in e else ""
        lines.append(f"  #{e['index']:<3} t={e['at']:6.2f}s  {e['action']:<6} {e['target']} "
                     f"pid {e['pid']}{extra}")
    for s in r.get("faults_skipped", []):
        lines.append(f"  #{s['index']:<3} skipped {s['target']}: {s['reason']}")
    if r.get("faults_not_reached"):
        lines.append(f"  not reached before the end (the injector ran late): "
                     f"{', '.join('#' + str(i) for i in r['faults_not_reached'])}")
    tc = r.get("injector_tree_calls", {})
    lines.append(f"live tree look-ups by the injector: {tc.get('count')}, unanswered "
                 f"{tc.get('unanswered')}, slowest {tc.get('max_seconds')} s")
    for e in r.get("freezes_unhandled", []):
        lines.append(f"  FREEZE NOT HANDLED: {e['target']} pid {e['pid']} (state {e['state']})")
    lines.append(f"sessions lost: {r.get('sessions_lost')}; daemon restarts: "
                 f"{r.get('daemon_restarts')} (failed: {len(r.get('daemon_restarts_failed', []))})"
                 f"; selector faults: {json.dumps(r.get('selector_faults', {}), sort_keys=True)}")
    lines.append(f"queries: {r.get('queries')}  exact: {r.get('exact')}  wrong: {r.get('wrong')}"
                 f"  clean errors: {r.get('clean_errors')} "
                 f"(explained by a master fault: {r.get('clean_errors_explained')}, "
                 f"unexplained: {r.get('clean_errors_unexplained')})  "
                 f"timeouts: {r.get('timeouts')}  control failed: {r.get('control_failed')}  "
                 f"unexpected: {r.get('unexpected')}")
    lines.append(f"  seconds per query: {json.dumps(r.get('query_seconds', {}))}; "
                 f"by kind: {json.dumps(r.get('queries_by_kind', {}), sort_keys=True)}; "
                 f"exact {json.dumps(r.get('exact_by_kind', {}), sort_keys=True)}")
    for o in r.get("problems", []):
        why = " [master fault: acceptable]" if o["explained"] else ""
        lines.append(f"  {o['outcome']}{why}: client {o['client']} {o['query']} "
                     f"t={o['start']:.2f}-{o['end']:.2f}s: {o['detail']}")
    c = r.get("connects", {})
    lines.append(f"connects: ok {c.get('ok')}, refused {c.get('refused')}, "
                 f"failed {c.get('failed')}")
    lines += [f"  {e}" for e in r.get("connect_errors", [])[:5]]
    fc = r.get("final_check", {})
    lines.append(f"final check (fresh client, exact query): "
                 f"{'ok' if fc.get('ok') else 'FAILED: ' + str(fc.get('error'))} "
                 f"in {fc.get('seconds')} s")
    lines.append(f"processes leaked: {r.get('processes_leaked')}")
    lines += [f"  {x}" for x in r.get("leaked", [])]
    lines.append(f"socket files left after stop: {len(r.get('socket_files_left', []))}")
    stale = r.get("stale_socket_files_before_stop", [])
    lines.append(f"socket files of closed sessions while the daemon ran: {len(stale)}"
                 + (" (pyproof leaks them; see the stress report)" if stale else ""))
    left = r.get("sessions_left_open")
    lines.append(f"sessions left open at the end: {'unknown' if left is None else left}"
                 + (f" (closes that never reached the daemon; its idle timeout, "
                    f"{r.get('session_idle_timeout')} s, reaps them)" if left else ""))
    if r.get("stuck_clients"):
        lines.append(f"stuck clients: {r['stuck_clients']}")
    lines += summary_lines(r)
    lines.append("RESULT: " + ("ok" if r.get("ok") else "FAILED: " + "; ".join(r["failures"])))
    return "\n".join(lines)


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The figures a soak is judged by, in one block (what goes in a note)."""
    asked = f" of {r['faults_asked']} asked" if r.get("faults_asked") else ""
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(r.get("faults_by_kind", {}).items()))
    faults = r.get("selector_faults", {})
    clean = sum(v["clean"] for v in faults.values())
    runs = sum(v["runs"] for v in faults.values())
    return [
        "SUMMARY",
        f"  faults injected: {r.get('faults_injected')}{asked} (skipped: no target at that "
        f"instant {len(r.get('faults_skipped', []))}; not reached "
        f"{len(r.get('faults_not_reached', []))}) in {r.get('chaos_seconds')} s of chaos "
        f"({r.get('seconds_per_fault')} s a fault), wall {r.get('wall_seconds')} s",
        f"  by kind: {kinds}",
        f"  daemon restarts: {r.get('daemon_restarts')} (failed "
        f"{len(r.get('daemon_restarts_failed', []))}); freezes not handled: "
        f"{len(r.get('freezes_unhandled', []))}",
        f"  queries: {r.get('queries')}; exact: {r.get('exact')}; wrong: {r.get('wrong')}; "
        f"clean errors: {r.get('clean_errors')} (explained {r.get('clean_errors_explained')}, "
        f"unexplained {r.get('clean_errors_unexplained')}); selector faults failed cleanly: "
        f"{clean}/{runs}; timeouts: {r.get('timeouts')}; control failed: "
        f"{r.get('control_failed')}; unexpected: {r.get('unexpected')}",
        f"  sessions lost: {r.get('sessions_lost')} (of them checked gone after an error: "
        f"{r.get('sessions_lost_checked')}); stuck clients: {len(r.get('stuck_clients', []))}"
        f"; final check: {'ok' if (r.get('final_check') or {}).get('ok') else 'FAILED'}",
        f"  leaks: processes {r.get('processes_leaked')}, socket files after stop "
        f"{len(r.get('socket_files_left', []))}, socket files of closed sessions while the "
        f"daemon ran {len(r.get('stale_socket_files_before_stop', []))}",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stress.chaos", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of chaos")
    parser.add_argument("--faults", type=int, default=0,
                        help="a soak: run as long as it takes to plan this many faults "
                             "(overrides --duration)")
    parser.add_argument("--max-wall", type=float, default=None,
                        help="a soak gives up after this many seconds of chaos (default: "
                             f"{SOAK_WALL_SECONDS:g} s a fault + 120 s); too few faults fail it")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="workers per session")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--join-grace", type=float, default=JOIN_GRACE,
                        help="seconds the clients get to finish after the end (then: stuck)")
    parser.add_argument("--session-idle-timeout", type=int, default=SESSION_IDLE_TIMEOUT,
                        help="the daemon closes a session idle this many seconds (reaps those "
                             "whose close never reached it)")
    parser.add_argument("--plan-only", action="store_true",
                        help="print the injection plan and exit")
    parser.add_argument("--strict", action="store_true",
                        help="also fail on unexplained errors, timeouts, unhandled freezes "
                             "and stale socket files of closed sessions")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.workers < 1 or args.duration <= 0 or args.faults < 0:
        parser.error("--clients and --workers must be >= 1, --duration > 0, --faults >= 0")
    if args.faults:  # the plan is long; the soak ends when that many were injected
        args.duration = soak_horizon(args.faults)
        if args.max_wall is None:
            args.max_wall = SOAK_WALL_SECONDS * args.faults + 120.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plan_only:
        for fault in make_plan(args.seed, args.duration, args.clients, args.workers):
            print(fault.describe())
        return 0
    # the daemon honours the data-thread deadlock hook ("deadlock" faults) and finds a
    # stuck thread within STUCK_AFTER s
    os.environ["PYPROOF_TEST_HOOKS"] = "1"
    os.environ.setdefault("PYPROOF_TEST_STUCK_AFTER", str(STUCK_AFTER))
    report = Run(args).execute()
    print(json.dumps(report, indent=1, default=str) if args.json else render(report),
          flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
