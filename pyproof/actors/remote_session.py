"""A session's part on another host: a supervisor of the workers placed here.

The master runs on the master's host; here run only workers, supervised
(one_for_one) like a session's own, under this daemon's sessions supervisor.
They dial `packet_address`, this host's tunnel to the master (actors/hosts.py:
sealed with the session's worker key over the cluster channel). The hosts
actor hears of every worker that starts or exits (`RemoteWorker`) and tells
the master's host; queries (`RunQuery`) come the other way, and a worker that
starts later (restarted, or added mid-query) is given at once every query the master
runs or has queued, in its order (`pending_queries`), as the master itself gives a
local worker that joins (master.py): it works on the running one, then the next. A query
leaves that list once a worker here is answered that it is over (`QueryEnded`, sent by
the worker: `forget_query`), not only at the master's next query: a worker restarted
in between neither loads its selector nor asks for its packets for nothing. When
the master is restarted, its queries are forgotten (`MasterRestarted`, via the hosts
actors): a worker starting before the new master's first query loads no selector.

It is as durable as a session of the master's host (it is a `SessionSupervisor`
for that): it leads a process session of its own, records itself and its
workers in the durable registry (actors/registry.py, with its master in
`remote_parts`), so a restarted daemon re-adopts it (its hosts actor re-opens
the tunnel and asks the master whether the session still runs, else closes
it) and `proofctl daemon stop` finds it; it stops itself when no supervisor
pings it for `orphan_grace` seconds.
"""

from __future__ import annotations

import os
import time

from pyproof.actors import messages as m
from pyproof.actors.registry import Registry, address_to_wire
from pyproof.actors.sessions import WATCHDOG, SessionSupervisor
from pyproof.actors.trees import worker_child
from pyproof.logs import get_logger
from pyproof.supervision import events as ev
from pyproof.supervision.adoption import Entry, Proc
from pyproof.supervision.process_tree import (
    become_subreaper,
    detach_session,
    kill_group,
    start_time,
)
from pyproof.supervision.spec import ChildSpec, Strategy, SupervisorSpec, SupFlags

KEEP_QUERIES = 64  # queries kept at most (all, when the master does not say which still run)


class RemoteSession(SessionSupervisor):
    def __init__(self, *args, **kwargs) -> None:
        """Run by Thespian in the new actor process (plain assignments).

        If it raised, the process would end before its start message and the hosts
        actor would see the session part fail to start.
        """
        super().__init__(*args, **kwargs)
        # the master's running and queued queries, in its order (`pending_queries`)
        self.queries: dict[str, m.RunQuery] = {}
        self.hosts_ref = None  # the hosts actor that last spoke to us (a restarted one too)

    def receive_other(self, message, sender) -> None:
        """Run by `SupervisorActor.receive` (actor thread) for messages it does not handle.

        If it raises, `ProofActor.receiveMessage` logs the error and ends the process (exit
        70); the supervisor restarts this supervisor from a clean state.
        """
        if isinstance(message, m.CreateSession):
            self.request, self.hosts_ref = message, message.reply_to
            detach_session()  # outlives the daemon's control tree (sessions.py)
            become_subreaper()
            self.last_ping = time.monotonic()
            self.start_log(message.log_dir, actor="remote-session", session=message.session_id)
            self.registry = Registry(message.run_dir)
            me = os.getpid()
            self.registry.put(Entry(
                session_id=message.session_id, user=message.user,
                workers=len(message.worker_ids), created=time.time(),
                supervisor=Proc(pid=me, start=start_time(me) or 0),
                address=address_to_wire(self.myAddress)))
            children = tuple(self._worker(worker_id) for worker_id in message.worker_ids)
            self.supervise(SupervisorSpec(
                name=f"remote-session-{message.session_id}", children=children,
                flags=SupFlags(strategy=Strategy.ONE_FOR_ONE,
                               intensity=10 + 5 * len(children), period=10.0, **WATCHDOG)))
            get_logger().info("remote_session_started", master_host=message.remote_of,
                              workers=list(message.worker_ids))
            self.send(sender, m.Started(pid=os.getpid()))
        elif isinstance(message, m.ChangeRemoteWorkers):  # workers added or removed on the fly
            assert self.request is not None and self.registry is not None
            self.hosts_ref = sender
            now = time.monotonic()
            count = len((set(self._workers()) | set(message.add)) - set(message.remove))
            for worker_id in message.add:
                if worker_id not in self.refs and worker_id not in self.starting:
                    self.run(ev.AddChild(spec=self._worker(worker_id), now=now))
            for worker_id in message.remove:
                self.run(ev.RemoveChild(child_id=worker_id, now=now))
                self.registry.set_child(self.request.session_id, worker_id, None)
            self.registry.set_workers(self.request.session_id, count)
            if not message.add and not message.remove:  # a restarted hosts actor: who runs
                for child_id, pid in self.pids.items():
                    self.send(sender, m.RemoteWorker(session_id=self.request.session_id,
                                                     worker_id=child_id, pid=pid, alive=True))
        elif isinstance(message, m.RunQuery):
            self.hosts_ref = sender
            self.queries = pending_queries(self.queries, message)
            for child_id, ref in self.refs.items():
                if child_id in self.pids:
                    self.send(ref, message)
        elif isinstance(message, m.QueryEnded):  # a worker here heard the master say so
            if message.query_id in self.queries:
                self.queries = forget_query(self.queries, message.query_id)
                get_logger().info("query_over", query=message.query_id)
        elif isinstance(message, m.MasterRestarted):
            # (from the hosts actor: the master's host says so) its queries are over: a
            # worker that starts from now on gets none of them, only the new master's
            self.queries = {}
        elif not isinstance(message, m.SessionWorkers):  # Adopt, ... (sessions.py)
            super().receive_other(message, sender)

    def _workers(self) -> list[str]:
        """Its workers, running or starting ('worker-N@HOST': sorted by name)."""
        return sorted(c for c in (*self.refs, *self.starting) if c.startswith("worker-"))

    def _worker(self, worker_id: str) -> ChildSpec:
        """Run by `receive_other` (actor thread): the spec of one hosted worker (pure)."""
        assert self.request is not None
        return worker_child(session_id=self.request.session_id, worker_id=worker_id,
                            packet_address=self.request.packet_address,
                            log_dir=self.request.log_dir)

    def on_running(self) -> None:
        """Nothing to announce: the hosts actor hears of each worker (`on_child_started`)."""

    def on_child_started(self, child_id: str, ref, pid: int, info: dict) -> None:
        """Run by `SupervisorActor` (actor thread) when a child answered its start message.

        If it raises, `ProofActor.receiveMessage` logs the error and ends the process (exit
        70); the supervisor restarts this supervisor (its children die with it) from a clean
        state.
        """
        assert self.request is not None and self.registry is not None
        self.registry.set_child(self.request.session_id, child_id,
                                Proc(pid=pid, start=start_time(pid) or 0))
        self.send(ref, m.WarmUp())  # its Started came: see m.WarmUp
        self.send(self.hosts_ref, m.RemoteWorker(
            session_id=self.request.session_id, worker_id=child_id, pid=pid, alive=True))
        for run in self.queries.values():  # (re)started mid-query: to work at once, in order
            self.send(ref, run)

    def on_child_exited(self, child_id: str, pid: int | None, reason: str) -> None:
        """Run by `SupervisorActor` (actor thread) after a child exited or failed to start.

        If it raises, `ProofActor.receiveMessage` logs the error and ends the process (exit
        70); the supervisor restarts this supervisor (its children die with it) from a clean
        state.
        """
        assert self.request is not None
        if pid is not None:
            kill_group(pid)  # what its selector started and left behind dies with it
            self.send(self.hosts_ref, m.RemoteWorker(
                session_id=self.request.session_id, worker_id=child_id, pid=pid, alive=False))
        level = "info" if self.exiting or reason == "shutdown" else "warning"
        getattr(get_logger(), level)("child_exit_seen", child_id=child_id, pid=pid,
                                     reason=reason)


def forget_query(queries: dict[str, m.RunQuery], query_id: str) -> dict[str, m.RunQuery]:
    """The queries a worker starting here is given, once the master said `query_id` is over
    (it answered DONE to a worker here): a worker restarting later neither loads its
    selector nor asks for its packets for nothing. Pure: returns a new dict."""
    return {q: r for q, r in queries.items() if q != query_id}


def pending_queries(queries: dict[str, m.RunQuery], run: m.RunQuery) -> dict[str, m.RunQuery]:
    """The queries a worker starting here is given, in the master's order, once `run` came:
    those the master named running or queued with it (`RunQuery.active`; the others ended,
    or ran on a master since restarted: a worker given one would only hear it is unknown),
    then `run` (in its place if told again). Without that list (not known), the last ones
    heard of; KEEP_QUERIES at most. Pure: returns a new dict."""
    kept = {q: r for q, r in queries.items() if not run.active or q in run.active}
    kept[run.query_id] = run  # told again: it keeps its place
    return dict(list(kept.items())[-KEEP_QUERIES:])
