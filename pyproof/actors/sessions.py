"""Supervisors of sessions: `Sessions` holds one `SessionSupervisor` per session.

Sessions are temporary children of `Sessions`: a session that dies beyond
its own restart intensity is gone (its client gets an error), it is never
restarted blindly, and it never takes its siblings or the daemon down.
Control messages for a session are routed through here, so the gateway keeps
no state and can be restarted at any time.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from pyproof.actors import messages as m
from pyproof.actors.supervisor import SupervisorActor
from pyproof.actors.trees import session_tree
from pyproof.actors.warmup import preload_session_modules
from pyproof.logs import get_logger
from pyproof.supervision import events as ev
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
ROUTED = (m.StartQuery, m.StopQuery, m.StatusRequest, m.FetchResult, m.OpenOutbox)


def master_address(run_dir: str, session_id: str) -> str:
    """Deterministic, so restarted workers and masters find each other without asking."""
    return f"ipc://{os.path.join(run_dir, f'master-{session_id}.ipc')}"


class Sessions(SupervisorActor):
    """Creates, routes to and closes session supervisors."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.info: dict[str, dict[str, Any]] = {}
        self.opened: dict[str, str] = {}  # client request id -> session id (idempotent open)
        self.resends: dict[str, list[m.Resend]] = {}  # retries for sessions still starting

    def receive_other(self, message, sender) -> None:
        if isinstance(message, m.Started):
            return
        if isinstance(message, m.SessionsStart):
            self.start_log(message.log_dir, actor="sessions")
            self.config = message
            self.supervise(SupervisorSpec(
                name="sessions", flags=SupFlags(strategy=Strategy.ONE_FOR_ONE, intensity=100,
                                                period=1.0, **WATCHDOG)))
            self.send(sender, m.Started(pid=os.getpid()))
            preload_session_modules()  # while the gateway starts (see actors/warmup.py)
        elif isinstance(message, m.CreateSession):
            self._create(message, sender)
        elif isinstance(message, (m.CloseSession, *ROUTED)) and not self._may(message):
            owner = self.info[message.session_id]["user"]
            get_logger().warning("access_refused", user=message.user, session=message.session_id,
                                 owner=owner)
            self._no_session(message, sender, f"session {message.session_id!r} belongs to "
                                              f"another user; only its owner or an admin "
                                              f"may use it")
        elif isinstance(message, m.CloseSession):
            self._close(message, sender)
        elif isinstance(message, ROUTED):
            ref = self.refs.get(message.session_id)
            if ref is None:
                self._no_session(message, sender)
            else:
                self.send(ref, message)
        elif isinstance(message, m.ListSessions):
            self.send(message.reply_to or sender, m.StatusReply(corr=message.corr, status={
                "sessions": {sid: dict(info, alive=sid in self.refs)
                             for sid, info in self.info.items()
                             if message.user is None or info["user"] == message.user}}))

    def _create(self, message: m.CreateSession, sender) -> None:
        reply_to = message.reply_to or sender
        if message.request_id and message.request_id in self.opened:
            # a client's retry: answer it from the session its first attempt opened
            sid = self.opened[message.request_id]
            resend = m.Resend(corr=message.corr, reply_to=reply_to)
            if sid in self.refs:
                self.send(self.refs[sid], resend)
            elif sid in self.info and "ended" not in self.info[sid]:
                self.resends.setdefault(sid, []).append(resend)  # not started yet
            else:
                self.send(reply_to, m.SessionFailed(corr=message.corr, session_id=sid,
                                                    error=f"session {sid} ended"))
            return
        refusal = self._admission(message)
        if refusal:
            get_logger().warning("session_refused", user=message.user, reason=refusal)
            self.send(reply_to, m.SessionFailed(corr=message.corr,
                                                session_id=message.session_id, error=refusal))
            return
        self.opened[message.request_id or message.session_id] = message.session_id
        self.info[message.session_id] = {"user": message.user, "workers": message.workers,
                                         "created": time.time()}
        init = m.CreateSession(corr=message.corr, session_id=message.session_id,
                               workers=message.workers, run_dir=message.run_dir,
                               log_dir=message.log_dir, reply_to=reply_to, user=message.user,
                               data_key=message.data_key, remote_of=message.remote_of,
                               worker_ids=message.worker_ids,
                               packet_address=message.packet_address)
        # a session's workers on this host for a master on another (actors/hosts.py)
        actor = ("pyproof.actors.remote_session:RemoteSession" if message.remote_of
                 else "pyproof.actors.sessions:SessionSupervisor")
        spec = ChildSpec(id=message.session_id, type=ChildType.SUPERVISOR,
                         restart=Restart.TEMPORARY, shutdown=Shutdown.timeout(5.0),
                         start=m.ActorStart(actor=actor, init=init))
        self.requests[message.corr] = (reply_to, message)
        self.run(ev.AddChild(spec=spec, now=time.monotonic(), cause=message.corr))

    def _admission(self, message: m.CreateSession) -> str | None:
        """A clear refusal when the user is over a limit, else None."""
        limits = self.config.limits
        mine = [i for sid, i in self.info.items()
                if i["user"] == message.user and sid in self.refs]
        max_sessions = limits.get("sessions_per_user", 0)
        if max_sessions and len(mine) >= max_sessions:
            return (f"refused: user {message.user!r} already has {len(mine)} sessions "
                    f"(limit {max_sessions}); close one first")
        max_workers = limits.get("workers_per_user", 0)
        used = sum(i["workers"] for i in mine)
        if max_workers and used + message.workers > max_workers:
            return (f"refused: user {message.user!r} would use {used + message.workers} workers "
                    f"(limit {max_workers}, {used} in use)")
        return None

    def reply_added(self, requester: Any, reply: ev.Reply) -> None:
        reply_to, message = requester
        if not reply.ok:
            self.send(reply_to, m.SessionFailed(corr=message.corr, session_id=message.session_id,
                                                error=reply.reason or "session failed to start"))

    def _close(self, message: m.CloseSession, sender) -> None:
        reply_to = message.reply_to or sender
        if message.session_id in self.refs:
            self.run(ev.RemoveChild(child_id=message.session_id, now=time.monotonic()))
        self.info.pop(message.session_id, None)
        self.send(reply_to, m.SessionClosed(corr=message.corr, session_id=message.session_id))

    def _may(self, message: Any) -> bool:
        info = self.info.get(message.session_id)
        return info is None or message.admin or info["user"] == message.user

    def _no_session(self, message: Any, sender, error: str | None = None) -> None:
        error = error or f"no session {message.session_id!r} (closed, or it failed)"
        to = message.reply_to or sender
        if isinstance(message, m.CloseSession):
            self.send(to, m.StatusReply(corr=message.corr, status={"error": error}))
        elif isinstance(message, m.StartQuery):
            self.send(to, m.QueryRejected(corr=message.corr, query_id=message.query_id,
                                          error=error))
        else:
            self.send(to, m.StatusReply(corr=message.corr, status={"error": error}))

    def snapshot(self) -> dict[str, Any]:
        """The tree node, each session marked with its owner (the gateway filters by it)."""
        tree = super().snapshot()
        for child in tree["children"]:
            child["user"] = (self.info.get(child["id"]) or {}).get("user")
        return tree

    def on_child_started(self, child_id: str, ref: Any, pid: int, info: dict) -> None:
        for resend in self.resends.pop(child_id, []):
            self.send(ref, resend)

    def on_child_exited(self, child_id: str, pid: int | None, reason: str) -> None:
        if child_id in self.info and child_id not in self.refs:
            self.info[child_id]["ended"] = reason
        for resend in self.resends.pop(child_id, []):
            self.send(resend.reply_to, m.SessionFailed(corr=resend.corr, session_id=child_id,
                                                       error=f"session {child_id} ended"))


class SessionSupervisor(SupervisorActor):
    """One session: a master and its workers (one_for_one)."""

    parallel_start = True  # master and workers need nothing from each other to start

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.request: m.CreateSession | None = None
        self.pending_resends: list[m.Resend] = []

    def receive_other(self, message, sender) -> None:
        if isinstance(message, m.CreateSession):
            self.request = message
            self.start_log(message.log_dir, actor="session", session=message.session_id)
            self.supervise(session_tree(message))  # master, then workers (trees.py)
            self.send(sender, m.Started(pid=os.getpid()))
        elif isinstance(message, m.Resend):
            if self._announced:
                self._announce(message.corr, message.reply_to)
            else:  # still starting: answer every attempt once running
                self.pending_resends.append(message)
        elif isinstance(message, ROUTED):
            master = self.refs.get("master")
            if master is not None:
                self.send(master, message)
            elif isinstance(message, m.StartQuery):
                self.send(message.reply_to or sender, m.QueryRejected(
                    corr=message.corr, query_id=message.query_id,
                    error="the session's master is restarting; try again"))

    def on_running(self) -> None:
        assert self.request is not None
        self._announce(self.request.corr, self.request.reply_to)
        for resend in self.pending_resends:
            self._announce(resend.corr, resend.reply_to)
        self.pending_resends = []

    def on_exit(self) -> None:
        """The master was killed, not closed: remove the socket files it listened on."""
        if self.request is None:
            return
        for name in (f"master-{self.request.session_id}.ipc",
                     f"outbox-{self.request.session_id}.ipc"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.request.run_dir, name))

    def _announce(self, corr: str, reply_to: Any) -> None:
        assert self.request is not None
        workers = tuple(sorted(c for c in self.refs if c.startswith("worker-")))
        self.send(reply_to, m.SessionReady(corr=corr, session_id=self.request.session_id,
                                           master=self.refs.get("master"), workers=workers))

    def on_child_started(self, child_id: str, ref: Any, pid: int, info: dict) -> None:
        master = self.refs.get("master")
        if child_id.startswith("worker-") and master is not None:
            self.send(master, m.WorkerJoined(worker_id=child_id, ref=ref, pid=pid))
        elif child_id == "master":
            for wid, wref in self.refs.items():
                if wid.startswith("worker-") and wid in self.pids:
                    self.send(ref, m.WorkerJoined(worker_id=wid, ref=wref, pid=self.pids[wid]))

    def on_child_exited(self, child_id: str, pid: int | None, reason: str) -> None:
        master = self.refs.get("master")
        if child_id.startswith("worker-") and master is not None and pid is not None:
            self.send(master, m.WorkerLost(worker_id=child_id, pid=pid))
        # the session stopping (closed, or the daemon shutting down) is no news
        level = "info" if self.exiting or reason == "shutdown" else "warning"
        getattr(get_logger(), level)("child_exit_seen", child_id=child_id, pid=pid,
                                     reason=reason)
