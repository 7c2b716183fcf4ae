"""The daemon's supervision trees as data: pure functions from start messages to specs.

OTP keeps a supervisor's child specs in one `init/1` that returns data; here
the same: each function takes the start message (plain fields), returns the
`SupervisorSpec` or `ChildSpec` the supervising actor hands to its core, and
touches no actor, socket, clock or file. So the shape of the tree (order,
strategy, restart intensity, who dials whom) is read and tested in one place,
without starting a process (tests/test_trees.py).

    root (rest_for_one)          root_tree(Boot)
      sessions (independent)     sessions_tree(); one child per session: session_child(...)
        session-<id>             session_tree(CreateSession): master, worker-0..n-1
      hosts (cluster only)
      gateway
"""

from __future__ import annotations

import os

from pyproof.actors import messages as m
from pyproof.supervision.spec import (
    ChildSpec,
    ChildType,
    Restart,
    Shutdown,
    Strategy,
    SupervisorSpec,
    SupFlags,
)

WATCHDOG = {"ping_interval": 0.5, "ping_timeout": 2.0}
"""Every supervisor pings its children this often and gives up on one this late."""

MASTER = "pyproof.actors.master:Master"
WORKER = "pyproof.actors.worker:Worker"
SESSION = "pyproof.actors.sessions:SessionSupervisor"
REMOTE_SESSION = "pyproof.actors.remote_session:RemoteSession"


def master_address(run_dir: str, session_id: str) -> str:
    """Deterministic, so restarted workers and masters find each other without asking."""
    return f"ipc://{os.path.join(run_dir, f'master-{session_id}.ipc')}"


def root_tree(boot: m.Boot) -> SupervisorSpec:
    """The daemon's root: sessions, hosts (in a cluster), then the gateway (rest_for_one).

    Order matters: a crash of the sessions supervisor restarts what comes after
    it (hosts and gateway hold its address); a crash of the gateway restarts only
    the gateway. The addresses themselves are filled in by `Root.child_init`.
    """
    hosts = () if boot.cluster is None else (ChildSpec(id="hosts", start=m.ActorStart(
        actor="pyproof.actors.hosts:Hosts",
        init=m.HostsStart(log_dir=boot.log_dir, config=dict(boot.cluster)))),)
    gateway_init = m.GatewayStart(
        corr=boot.corr, control_address=boot.control_address, sessions=None,
        run_dir=boot.run_dir, log_dir=boot.log_dir, auth=dict(boot.auth))
    return SupervisorSpec(
        name="root",
        flags=SupFlags(strategy=Strategy.REST_FOR_ONE, intensity=5, period=10.0, **WATCHDOG),
        children=(
            ChildSpec(id="sessions", type=ChildType.SUPERVISOR, start=m.ActorStart(
                actor="pyproof.actors.sessions:Sessions",
                init=m.SessionsStart(log_dir=boot.log_dir, run_dir=boot.run_dir,
                                     limits=dict(boot.limits), preopen=boot.preopen))),
            *hosts,
            ChildSpec(id="gateway", start=m.ActorStart(
                actor="pyproof.actors.gateway:Gateway", init=gateway_init)),
        ))


def sessions_tree() -> SupervisorSpec:
    """The sessions supervisor: no children at start; sessions come and go (one_for_one).

    Sessions are independent (each a user's own): every open and close is carried out
    at once, so a new session never waits for other sessions' closes (under OTP's order,
    one at a time, a connect after a storm of 60 closes waited 10 s: PROOF's "under load
    users could not connect").
    """
    return SupervisorSpec(name="sessions", flags=SupFlags(
        strategy=Strategy.ONE_FOR_ONE, intensity=100, period=1.0, independent=True,
        **WATCHDOG))


def session_child(init: m.CreateSession) -> ChildSpec:
    """One session under the sessions supervisor: never restarted (its client would not know).

    A session's part on another host (`remote_of`) runs only workers
    (actors/remote_session.py); a local one runs a master and workers.
    """
    return ChildSpec(id=init.session_id, type=ChildType.SUPERVISOR,
                     restart=Restart.TEMPORARY, shutdown=Shutdown.timeout(5.0),
                     start=m.ActorStart(actor=REMOTE_SESSION if init.remote_of else SESSION,
                                        init=init))


def worker_child(*, session_id: str, worker_id: str, packet_address: str,
                 log_dir: str) -> ChildSpec:
    """One worker: permanent (a crashed worker is restarted and dials the master again)."""
    return ChildSpec(id=worker_id, start=m.ActorStart(actor=WORKER, init=m.WorkerStart(
        session_id=session_id, worker_id=worker_id, packet_address=packet_address,
        log_dir=log_dir)))


def session_tree(init: m.CreateSession) -> SupervisorSpec:
    """A session: its master first, then `workers` workers (one_for_one).

    Restarts allowed scale with the session: poisoned packets alone kill three
    workers each before they are given up.
    """
    address = master_address(init.run_dir, init.session_id)
    master = ChildSpec(id="master", start=m.ActorStart(actor=MASTER, init=m.MasterStart(
        session_id=init.session_id, run_dir=init.run_dir, log_dir=init.log_dir,
        packet_address=address, data_key=init.data_key, user=init.user)))
    workers = tuple(worker_child(session_id=init.session_id, worker_id=f"worker-{index}",
                                 packet_address=address, log_dir=init.log_dir)
                    for index in range(init.workers))
    return SupervisorSpec(
        name=f"session-{init.session_id}", children=(master, *workers),
        flags=SupFlags(strategy=Strategy.ONE_FOR_ONE, intensity=10 + 5 * init.workers,
                       period=10.0, **WATCHDOG))
