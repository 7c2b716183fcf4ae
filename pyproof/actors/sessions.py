"""Supervisors of sessions: one `Sessions` holding one `SessionSupervisor` per session.

Supervisors only supervise: they create children and pass control messages,
and never open an nng socket (nng is not fork-safe, and children are forked
from here).
"""

from __future__ import annotations

from thespian.actors import ActorExitRequest, ChildActorExited

from pyproof.actors import messages as m
from pyproof.actors.base import ProofActor
from pyproof.actors.master import Master
from pyproof.actors.worker import Worker
from pyproof.logs import get_logger


class Sessions(ProofActor):
    """Creates, finds and closes session supervisors."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: dict[str, object] = {}

    def receive(self, message, sender) -> None:
        if isinstance(message, m.CreateSession):
            child = self.createActor(SessionSupervisor)
            self.sessions[message.session_id] = child
            reply_to = message.reply_to or sender
            self.send(child, m.CreateSession(
                corr=message.corr, session_id=message.session_id, workers=message.workers,
                run_dir=message.run_dir, log_dir=message.log_dir, reply_to=reply_to))
        elif isinstance(message, m.CloseSession):
            child = self.sessions.pop(message.session_id, None)
            reply_to = message.reply_to or sender
            if child is not None:
                self.send(child, ActorExitRequest())
            self.send(reply_to, m.SessionClosed(corr=message.corr,
                                                session_id=message.session_id))
        elif isinstance(message, ChildActorExited):
            for sid, addr in list(self.sessions.items()):
                if addr == message.childAddress:
                    del self.sessions[sid]


class SessionSupervisor(ProofActor):
    """One session: a master and its workers, started master first."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.request: m.CreateSession | None = None
        self.master = None
        self.workers: dict[str, object] = {}
        self.ready: set[str] = set()

    def receive(self, message, sender) -> None:
        if isinstance(message, m.CreateSession):
            self.request = message
            self.start_log(message.log_dir, actor="session-supervisor",
                           session=message.session_id)
            self.master = self.createActor(Master)
            self.send(self.master, m.MasterStart(session_id=message.session_id,
                                                 run_dir=message.run_dir,
                                                 log_dir=message.log_dir))
        elif isinstance(message, m.MasterReady):
            assert self.request is not None
            get_logger().info("child_started", supervisor="session", child_id="master",
                              pid=message.pid)
            for index in range(self.request.workers):
                worker_id = f"worker-{index}"
                address = self.createActor(Worker)
                self.workers[worker_id] = address
                self.send(address, m.WorkerStart(
                    session_id=self.request.session_id, worker_id=worker_id,
                    packet_address=message.packet_address, log_dir=self.request.log_dir))
        elif isinstance(message, m.WorkerReady):
            assert self.request is not None
            get_logger().info("child_started", supervisor="session",
                              child_id=message.worker_id, pid=message.pid)
            self.ready.add(message.worker_id)
            if len(self.ready) == len(self.workers):
                self.send(self.master, m.SetWorkers(workers=dict(self.workers)))
                self.send(self.request.reply_to, m.SessionReady(
                    corr=self.request.corr, session_id=self.request.session_id,
                    master=self.master, workers=tuple(sorted(self.workers))))
        elif isinstance(message, ChildActorExited):
            get_logger().warning("child_terminated", supervisor="session",
                                 child_id=str(message.childAddress), reason="exited")
        elif isinstance(message, ActorExitRequest):
            get_logger().info("session_closing")
