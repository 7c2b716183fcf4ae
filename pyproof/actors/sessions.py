"""Supervisors of sessions: `Sessions` holds one `SessionSupervisor` per session.

Sessions are temporary children of `Sessions`: a session that dies beyond
its own restart intensity is gone (its client gets an error), it is never
restarted blindly, and it never takes its siblings or the daemon down.
Control messages for a session are routed through here, so the gateway keeps
no state and can be restarted at any time.

Sessions outlive the control tree: a session supervisor leads a process
session of its own (setsid) and has no parent-death signal, so killing or
freezing any control process (this supervisor, the root, the Thespian admin
and logger, the daemon's main process) leaves it running. It records itself
in the durable registry (actors/registry.py); a new `Sessions` re-adopts
every live entry and cleans up stale ones (supervision/adoption.py). A
session that no supervisor pings or looks at (its heartbeat page) for
`orphan_grace` seconds (its daemon is gone for good) stops itself cleanly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from collections import deque
from typing import Any

from pyproof.actors import messages as m
from pyproof.actors.base import CRASH_EXIT_CODE
from pyproof.actors.registry import (
    Registry,
    address_from_wire,
    address_to_wire,
    running_processes,
)
from pyproof.actors.supervisor import SupervisorActor, describe_exit
from pyproof.actors.trees import (  # noqa: F401 (master_address, WATCHDOG: re-exported)
    WATCHDOG,
    master_address,
    session_child,
    session_tree,
    sessions_tree,
    worker_child,
)
from pyproof.hosts.once import Once
from pyproof.logs import get_logger
from pyproof.supervision import events as ev
from pyproof.supervision.adoption import Entry, Proc, leftovers, reconcile, session_files
from pyproof.supervision.process_tree import (
    become_subreaper,
    detach_session,
    kill_group,
    kill_tree,
    reap_orphans,
    start_time,
)
from pyproof.supervision.restart import Decision, RestartWindow
from pyproof.supervision.spec import (
    ChildSpec,
    ChildType,
    Restart,
    Shutdown,
)

ORPHAN_GRACE = 600.0  # seconds a session runs on with no supervisor (its daemon gone)
SELECTOR_DEATHS, SELECTOR_DEATHS_PERIOD = 100, 10.0  # uncharged worker deaths, then charged
ADOPT_TIMEOUT, ADOPT_TRIES = 10.0, 3  # a live session that never answers then is stopped
IDLE_TIMEOUT = 86400.0  # a session no client used for this long (no query running) is closed
RESULT_TTL = 86400.0  # the same, when its client went silent after starting its last query
IDLE_ASK = "idle/"  # correlation ids of the status requests of the idle check
ROUTED = (m.StartQuery, m.StopQuery, m.StatusRequest, m.FetchResult, m.OpenOutbox,
          m.SessionWorkers)
MAX_ADD = 256  # workers one request may add to a session on its host
# a request the master got this recently (a client asks again itself after 5 s) is answered
# "retry" when the master dies; at most FORWARDED_KEPT of them are remembered
FORWARDED_FOR, FORWARDED_KEPT = 6.0, 256



def last_use(used: tuple[float, str], status: dict[str, Any], now: float) -> tuple[float, str]:
    """When a session was last used, from what we saw (`used`: when, and by what request) and
    its master's status: queries its client sent straight to the master (master_direct.py)
    never pass here, so the master says how long ago the last came. Pure."""
    direct = (status.get("master") or {}).get("direct") or {}
    idle_for = direct.get("idle_for")
    if isinstance(idle_for, int | float) and not isinstance(idle_for, bool) and \
            idle_for >= 0 and now - idle_for > used[0]:
        return now - idle_for, "StartQuery"
    return used

class Sessions(SupervisorActor):
    """Creates, routes to and closes session supervisors."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.info: dict[str, dict[str, Any]] = {}
        self.opened: dict[str, str] = {}  # client request id -> session id (idempotent open)
        self.resends: dict[str, list[m.Resend]] = {}  # retries for sessions still starting
        self.registry: Registry | None = None
        self.used: dict[str, tuple[float, str]] = {}  # session -> (last client request, kind)
        self.adopting: dict[str, Any] = {}  # session -> its address, until adopted
        self.adoption_tries: dict[str, int] = {}
        self.idle_asked: dict[str, float] = {}  # session -> when its state was asked
        # the pre-opened session (SessionsStart.preopen), until it answered us: the client's
        # requests for it wait here, so that a failed start answers them too
        self.preopen_waiting: dict[str, list[m.Resend]] = {}
        self.config: m.SessionsStart | None = None

    def receive_other(self, message, sender) -> None:
        if isinstance(message, (m.CloseSession, *ROUTED)) and message.session_id in self.used:
            self.used[message.session_id] = (time.monotonic(), type(message).__name__)
        if isinstance(message, m.SessionTouched):  # a query went straight to its master
            if message.session_id in self.used:
                self.used[message.session_id] = (time.monotonic(), message.kind)
            return
        if isinstance(message, m.Started):
            return
        if self.config is None and isinstance(message, (m.CreateSession, m.CloseSession,
                                                        m.ListSessions, *ROUTED)):
            # a request before our start message (it comes from the root, requests from the
            # gateway: no order between them): the registry is not read yet, so "no such
            # session" would be a lie; the client asks again in a moment
            retry_later(self, message, sender, "the daemon is starting (re-adopting its "
                                               "sessions); try again")
            return
        if isinstance(message, m.StatusReply) and message.corr.startswith(IDLE_ASK):
            self._idle_answer(message)
            return
        if isinstance(message, m.SessionsStart):
            self.start_log(message.log_dir, actor="sessions")
            self.config = message
            self.supervise(sessions_tree())  # independent: no session waits for another
            if message.run_dir:
                self.registry = Registry(message.run_dir)
                self._adopt_registered()
            self.send(sender, m.Started(pid=os.getpid()))
            if message.preopen is not None:
                # the lite client's session, opened while the gateway starts and the client
                # logs in; its open_session (same request_id) then finds it (`_create`)
                get_logger().info("session_preopened", session=message.preopen.session_id,
                                  workers=message.preopen.workers)
                self.preopen_waiting[message.preopen.session_id] = []
                self._create(dataclasses.replace(message.preopen, reply_to=self.myAddress),
                             self.myAddress)
        elif isinstance(message, m.SessionReady | m.SessionFailed):
            self._preopen_answered(message)  # our pre-opened session runs, or failed
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
            # a session being re-adopted is alive and answers at its registered address
            ref = self.refs.get(message.session_id) or self.adopting.get(message.session_id)
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
        if message.request_id and message.request_id in self.opened and self._same_request(
                message, self.opened[message.request_id]):
            # a client's retry: answer it from the session its first attempt opened
            sid = self.opened[message.request_id]
            resend = m.Resend(corr=message.corr, reply_to=reply_to)
            if sid in self.preopen_waiting:
                self.preopen_waiting[sid].append(resend)  # answered once it runs (or failed)
            elif sid in self.refs:
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
                               packet_address=message.packet_address, hosts=message.hosts,
                               orphan_grace=float(self.config.limits.get("orphan_grace")
                                                  or ORPHAN_GRACE))
        # (remote_of: a session's workers on this host for a master on another, hosts.py)
        self.requests[message.corr] = (reply_to, message)
        self.run(ev.AddChild(spec=session_child(init), now=time.monotonic(),
                             cause=message.corr))

    def _preopen_answered(self, answer: m.SessionReady | m.SessionFailed) -> None:
        """The pre-opened session announced itself (or failed to start): answer the
        client's requests for it with the same news."""
        sid = answer.session_id
        if sid not in self.preopen_waiting:  # answered already (or not ours)
            return
        waiting = self.preopen_waiting.pop(sid)
        ref = self.refs.get(sid)
        if isinstance(answer, m.SessionFailed):
            get_logger().warning("preopen_failed", session=sid, error=answer.error)
            if sid in self.info:
                self.info[sid].setdefault("ended", answer.error)
        for resend in waiting:
            if ref is not None and isinstance(answer, m.SessionReady):
                self.send(resend.reply_to, dataclasses.replace(answer, corr=resend.corr))
            else:
                error = answer.error if isinstance(answer, m.SessionFailed) else "it ended"
                self.send(resend.reply_to, m.SessionFailed(
                    corr=resend.corr, session_id=sid,
                    error=f"session {sid} failed to start: {error}"))

    def _same_request(self, message: m.CreateSession, sid: str) -> bool:
        """Whether `message` asks again for session `sid`: same user, same workers (a request
        id names a request; another user's or another size is a new one)."""
        info = self.info.get(sid)
        return info is None or (info["user"] == message.user
                                and info["workers"] == message.workers)

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

    def _limits(self) -> tuple[float, float]:
        limits = self.config.limits
        idle = limits.get("idle_timeout")
        ttl = limits.get("result_ttl")
        return (IDLE_TIMEOUT if idle is None else float(idle),
                RESULT_TTL if ttl is None else float(ttl))

    def _idle_limit(self, kind: str) -> float:
        """Seconds of client silence after which a session is closed (0: never)."""
        idle, ttl = self._limits()
        if kind == "StartQuery" and ttl:  # silent since it started a query: TTL of its result
            return min(ttl, idle) if idle else ttl
        return idle

    def on_tick(self, now: float) -> None:
        """Ask each session silent beyond its limit whether a query runs (then it is used)."""
        for sid, (last, kind) in list(self.used.items()):
            limit = self._idle_limit(kind)
            ref = self.refs.get(sid)
            if not limit or ref is None or now - last <= limit:
                continue
            if now - self.idle_asked.get(sid, -1e18) < 5.0:
                continue  # asked already: wait for its answer (a frozen session: ask again)
            self.idle_asked[sid] = now
            self.send(ref, m.StatusRequest(corr=f"{IDLE_ASK}{sid}", session_id=sid,
                                           reply_to=self.myAddress, admin=True))

    def _idle_answer(self, message: m.StatusReply) -> None:
        sid = message.corr[len(IDLE_ASK):]
        self.idle_asked.pop(sid, None)
        if sid not in self.used or sid not in self.refs:
            return
        query = (message.status.get("master") or {}).get("query") or {}
        now = time.monotonic()
        last, kind = self.used[sid] = last_use(self.used[sid], message.status, now)
        if query.get("state") in ("preparing", "running", "finishing"):
            self.used[sid] = (now, "running")  # a query runs: the session is in use
            return
        limit = self._idle_limit(kind)
        if limit and now - last > limit:
            get_logger().warning("session_idle_closed", session=sid, idle=round(now - last),
                                 limit=limit, user=self.info.get(sid, {}).get("user"))
            self.used.pop(sid, None)
            self.info.pop(sid, None)
            self.run(ev.RemoveChild(child_id=sid, now=now, cause=f"idle-{sid}"))

    def _adopt_registered(self) -> None:
        """Adopt every session the registry knows that still runs; clean up the others."""
        assert self.registry is not None
        log = get_logger()
        entries = self.registry.entries()
        plan = reconcile(entries, running_processes(entries))
        for proc in plan.kill:
            if start_time(proc.pid) == proc.start:
                kill_tree(proc.pid, reap=False)
        remove_session_files(self.config.run_dir, [e.session_id for e in plan.stale])
        for entry in plan.stale:
            self.registry.remove(entry.session_id)
            log.warning("stale_session_removed", session=entry.session_id,
                        pid=entry.supervisor.pid, killed=[p.pid for p in plan.kill])
        for entry in plan.adopt:
            self.info[entry.session_id] = {"user": entry.user, "workers": entry.workers,
                                           "created": entry.created, "adopted": True}
            self.adopting[entry.session_id] = address_from_wire(entry.address or ())
        for entry in plan.adopt:
            log.info("session_adopting", session=entry.session_id, pid=entry.supervisor.pid)
            self._adopt(entry)

    def _adopt(self, entry: Entry) -> None:
        sid = entry.session_id
        self.adoption_tries[sid] = self.adoption_tries.get(sid, 0) + 1
        spec = ChildSpec(id=sid, type=ChildType.SUPERVISOR, restart=Restart.TEMPORARY,
                         shutdown=Shutdown.timeout(5.0),
                         start=m.AdoptStart(address=tuple(entry.address or ()),
                                            pid=entry.supervisor.pid,
                                            start_timeout=ADOPT_TIMEOUT))
        cause = f"adopt-{sid}-{self.adoption_tries[sid]}"
        self.requests[cause] = ("adopt", entry)
        self.run(ev.AddChild(spec=spec, now=time.monotonic(), cause=cause))

    def _adoption_failed(self, entry: Entry, reason: str | None) -> None:
        """A registered session that runs but does not answer: unreachable, so stopped."""
        get_logger().error("session_adoption_failed", session=entry.session_id,
                           pid=entry.supervisor.pid, reason=reason)
        self.info.pop(entry.session_id, None)
        for proc in (entry.supervisor, *entry.children.values()):
            if start_time(proc.pid) == proc.start:
                kill_tree(proc.pid, reap=False)
        remove_session_files(self.config.run_dir, [entry.session_id])
        if self.registry is not None:
            self.registry.remove(entry.session_id)

    def reply_added(self, requester: Any, reply: ev.Reply) -> None:
        if requester[0] == "adopt":
            entry = requester[1]
            if reply.ok:
                self.adopting.pop(entry.session_id, None)
                self.adoption_tries.pop(entry.session_id, None)
                get_logger().info("session_adopted", session=entry.session_id)
            elif (start_time(entry.supervisor.pid) == entry.supervisor.start
                  and self.adoption_tries.get(entry.session_id, 0) < ADOPT_TRIES):
                # alive but slow to answer (a loaded host): never kill it for that at once
                get_logger().warning("session_adoption_retry", session=entry.session_id,
                                     reason=reply.reason)
                self._adopt(entry)
            else:
                self.adopting.pop(entry.session_id, None)
                self.adoption_tries.pop(entry.session_id, None)
                self._adoption_failed(entry, reply.reason)
            return
        reply_to, message = requester
        if not reply.ok:
            self.send(reply_to, m.SessionFailed(corr=message.corr, session_id=message.session_id,
                                                error=reply.reason or "session failed to start"))

    def _close(self, message: m.CloseSession, sender) -> None:
        reply_to = message.reply_to or sender
        if message.session_id in self.refs:
            self.run(ev.RemoveChild(child_id=message.session_id, now=time.monotonic()))
        self.info.pop(message.session_id, None)
        self.used.pop(message.session_id, None)
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
        # the idle clock starts once the session runs (a start can take seconds under load)
        self.used[child_id] = (time.monotonic(), "Started")
        for resend in self.resends.pop(child_id, []):
            self.send(ref, resend)

    def on_child_exited(self, child_id: str, pid: int | None, reason: str) -> None:
        if child_id in self.preopen_waiting:  # the pre-opened session ended before it ran
            self._preopen_answered(m.SessionFailed(corr="", session_id=child_id, error=reason))
        self.used.pop(child_id, None)
        if self.registry is not None:
            self.registry.remove(child_id)
        if child_id in self.info and child_id not in self.refs:
            self.info[child_id]["ended"] = reason
        for resend in self.resends.pop(child_id, []):
            self.send(resend.reply_to, m.SessionFailed(corr=resend.corr, session_id=child_id,
                                                       error=f"session {child_id} ended"))


class SessionSupervisor(SupervisorActor):
    """One session: a master and its workers (one_for_one).

    It leads a process session of its own and outlives its parent (see the
    module docstring); its master and workers die with it.
    """

    dies_with_parent = False

    parallel_start = True  # master and workers need nothing from each other to start

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.request: m.CreateSession | None = None
        self.pending_resends: list[m.Resend] = []
        self.registry: Registry | None = None
        self.orphaned = False
        self.selector_deaths = RestartWindow(SELECTOR_DEATHS, SELECTOR_DEATHS_PERIOD)
        self.next_worker = 0  # the index of the next worker added on the fly
        self.master_seen = False  # a master started: the next start is a restart
        self.adding: dict[str, dict[str, Any]] = {}  # add request corr -> its progress
        self.once = Once()  # adds by the client's request id (a retry adds nothing)
        # requests passed to the master lately: (when, (message, sender)); if it dies (a
        # hang the watchdog ended), they are answered "retry" at once, not after the
        # client's attempt timeout (an answered one is ignored by the gateway)
        self.forwarded: deque[tuple[float, tuple[Any, Any]]] = deque(maxlen=FORWARDED_KEPT)

    def receive_other(self, message, sender) -> None:
        if isinstance(message, m.CreateSession):
            self.request = message
            self.next_worker = message.workers
            # out of the control tree's process session: killing the daemon's tree
            # (or the sessions supervisor's, with spare_sessions) leaves this one running
            detach_session()
            # orphans of our subtree (a selector's double-forked daemons) come to us, not to
            # init: our process tree then holds them, and closing the session kills them
            become_subreaper()
            self.last_ping = time.monotonic()
            self.start_log(message.log_dir, actor="session", session=message.session_id)
            # master and workers first: their processes start while we write the registry
            # (they die with us; their rows come with their Started, after this handler)
            self.supervise(session_tree(message))  # master, then workers (trees.py)
            self.registry = Registry(message.run_dir)
            me = os.getpid()
            self.registry.put(Entry(
                session_id=message.session_id, user=message.user, workers=message.workers,
                created=time.time(), supervisor=Proc(pid=me, start=start_time(me) or 0),
                address=address_to_wire(self.myAddress)))
            self.send(sender, m.Started(pid=os.getpid()))
        elif isinstance(message, m.Adopt):
            # a new sessions supervisor (the old one died): answer it as if just started
            self.last_ping = time.monotonic()
            get_logger().info("session_adopted", supervisor=str(sender))
            self.send(sender, m.Started(pid=os.getpid()))
        elif isinstance(message, m.HostsReadopt) and self.request is not None and (
                message.session_id == self.request.session_id):
            # the hosts actor that spread us over hosts was restarted: tell the new one of
            # our master (from now on: of its restarts too)
            self.request = dataclasses.replace(self.request, hosts=sender)
            master = self.refs.get("master")
            get_logger().info("session_hosts_readopted", hosts=str(sender),
                              master=master is not None)
            if master is not None:
                self.send(sender, m.MasterRestarted(session_id=message.session_id,
                                                    master=master))
        elif isinstance(message, m.Resend):
            if self._announced:
                self._announce(message.corr, message.reply_to)
            else:  # still starting: answer every attempt once running
                self.pending_resends.append(message)
        elif isinstance(message, m.SessionWorkers):
            self._change_workers(message, message.reply_to or sender)
        elif isinstance(message, ROUTED):
            master = self.refs.get("master")
            if master is not None:
                self.send(master, message)
            else:  # answered at once, to be asked again: not after the gateway's timeout
                retry_later(self, message, sender, f"session {message.session_id}'s master "
                                                   "is restarting; try again")
            if master is not None and not message.corr.startswith(IDLE_ASK):
                now = time.monotonic()
                while self.forwarded and now - self.forwarded[0][0] >= FORWARDED_FOR:
                    self.forwarded.popleft()
                self.forwarded.append((now, (message, sender)))

    # -- workers on the fly (this host's: session.add_workers / remove_workers) -------
    def _workers(self) -> list[str]:
        """This session's workers here, running or starting, in index order."""
        return sorted({c for c in (*self.refs, *self.starting) if c.startswith("worker-")},
                      key=lambda w: int(w.split("-", 1)[1]))

    def _change_workers(self, message: m.SessionWorkers, reply_to: Any) -> None:
        """List, add (answered once they run: a query running gets them at once, through
        the master's WorkerJoined) or remove (answered at once: what a removed worker had
        not delivered goes back to the queue when it exits, the master's WorkerLost) this
        host's workers. `host` empty: the whole session is here (a lite cluster, a daemon
        without hosts), so its last worker is never removed; set: a cluster's hosts actor
        asks for its part on the master's host, and checks the session's total itself."""
        def answer(status: dict[str, Any]) -> None:
            self.send(reply_to, m.StatusReply(corr=message.corr, status=status))

        assert self.request is not None
        workers = self._workers()
        if self.core is None or self.core.phase != "running":
            answer({"error": f"session {self.request.session_id} is starting or stopping: "
                             f"try again"})
        elif message.op == "ls":
            answer({"workers": self._rows(message.host)})
        elif message.op == "add":
            rid, reply = message.request_id, answer
            if not self.once.begin(rid, reply):  # a retry: answered with the first's outcome
                return

            def answer(status: dict[str, Any]) -> None:  # noqa: F811 (the first's, kept)
                reply(status)
                self.once.end(rid, status)

            if not 1 <= message.count <= MAX_ADD:
                answer({"error": f"add from 1 to {MAX_ADD} workers at a time, not "
                                 f"{message.count}"})
                return
            names = [f"worker-{i}" for i in range(self.next_worker,
                                                  self.next_worker + message.count)]
            self.next_worker += message.count
            self.adding[message.corr] = {"answer": answer, "left": set(names), "added": [],
                                         "errors": [], "host": message.host}
            get_logger().info("workers_adding", workers=names)
            now = time.monotonic()
            for name in names:
                self.requests[f"add/{message.corr}/{name}"] = ("add", message.corr)
                self.run(ev.AddChild(spec=worker_child(
                    session_id=self.request.session_id, worker_id=name,
                    packet_address=master_address(self.request.run_dir,
                                                  self.request.session_id),
                    log_dir=self.request.log_dir), now=now, cause=f"add/{message.corr}/{name}"))
        else:
            if message.names:
                unknown = [n for n in message.names if n not in workers]
                if unknown:
                    answer({"error": f"cannot remove {', '.join(unknown)}: no such worker "
                                     f"(workers: {', '.join(workers) or 'none'})"})
                    return
                names = list(dict.fromkeys(message.names))
            else:
                names = workers[::-1][:message.count]  # the most recently added first
                if len(names) < max(message.count, 1):
                    answer({"error": f"only {len(workers)} workers can be removed, not "
                                     f"{message.count}"})
                    return
            if not message.host and len(names) >= len(workers):
                answer({"error": f"cannot remove every worker of session "
                                 f"{self.request.session_id}: a session keeps at least one "
                                 f"(close the session to stop them all)"})
                return
            get_logger().info("workers_removing", workers=names)
            now = time.monotonic()
            master = self.refs.get("master")
            for name in names:
                if master is not None:  # no next query for it (it may take a while to exit)
                    self.send(master, m.WorkerLeaving(worker_id=name))
                self.run(ev.RemoveChild(child_id=name, now=now))
                if self.registry is not None:
                    self.registry.set_child(self.request.session_id, name, None)
            if self.registry is not None:
                self.registry.set_workers(self.request.session_id, len(workers) - len(names))
            answer({"removed": sorted(names), "workers": self._rows(message.host)})

    def _rows(self, host: str = "") -> list[dict[str, Any]]:
        return [{"name": w, "host": host, **({"pid": self.pids[w]} if w in self.pids else {})}
                for w in self._workers()]

    def reply_added(self, requester: Any, reply: ev.Reply) -> None:
        """A worker added on the fly runs (or failed to start): answer once all did."""
        if requester[0] != "add" or requester[1] not in self.adding:
            return
        adding = self.adding[requester[1]]
        adding["left"].discard(reply.child_id)
        if reply.ok:
            adding["added"].append(reply.child_id)
        else:
            adding["errors"].append(f"{reply.child_id}: {reply.reason or 'did not start'}")
        if adding["left"]:
            return
        del self.adding[requester[1]]
        if self.registry is not None and self.request is not None:
            self.registry.set_workers(self.request.session_id, len(self._workers()))
        if adding["added"]:
            adding["answer"]({"added": sorted(adding["added"]), "errors": adding["errors"],
                              "workers": self._rows(adding["host"])})
        else:
            adding["answer"]({"error": "no worker could be added: " + "; ".join(
                adding["errors"])})

    def on_running(self) -> None:
        assert self.request is not None
        self._announce(self.request.corr, self.request.reply_to)
        for resend in self.pending_resends:
            self._announce(resend.corr, resend.reply_to)
        self.pending_resends = []

    def charged(self, child_id: str, exit_code: int | None, reason: str, now: float) -> bool:
        """A worker that its selector killed (any exit but pyproof's own crash code, or a
        signal: segfault, out of memory, os._exit) is the user's fault, not the session's:
        it is replaced without counting against the session's restart intensity, up to a
        generous bound of its own (a worker that dies at once every time still escalates)."""
        if not child_id.startswith("worker-") or reason != "crashed" or exit_code is None:
            return True
        if exit_code in (0, CRASH_EXIT_CODE, -signal.SIGTERM):
            return True  # pyproof's own crash, or an exit we did not ask for but Thespian ran
        return self.selector_deaths.add(now) is Decision.ESCALATE

    def on_tick(self, now: float) -> None:
        request = self.request
        if request is None or self.core is None or self.core.phase != "running":
            return
        reap_orphans(set(self.pids.values()) | {
            getattr(p, "pid", None) for p in self.processes.values()})
        if now - self.supervisor_seen() > request.orphan_grace:
            # no supervisor for that long: the daemon is gone for good; stop cleanly
            get_logger().warning("session_orphaned", session=request.session_id,
                                 grace=request.orphan_grace)
            self.orphaned = True
            self.run(ev.ShutdownRequested(now=now, reason="orphaned"))

    def on_exit(self) -> None:
        """The master was killed, not closed: remove the socket files it listened on.
        Whatever else runs under us (orphans of the selectors, re-parented to us) dies."""
        if self.request is None:
            return
        # our children's exit statuses are Thespian's: reaping them here would make it wait
        # for exits it never sees (multiprocessing's is_alive() stays True once another
        # waitpid took the status), and the session would sit out its shutdown timeout
        thespians = set(self.pids.values()) | {
            getattr(p, "pid", None) for p in self.processes.values()}
        kill_tree(os.getpid(), include_root=False, reap=False)
        reap_orphans(thespians)
        if self.registry is not None and self.orphaned:
            # nobody supervises us to remove our row once we are gone (a supervisor does:
            # until this process has exited, `daemon stop` must still find it)
            with contextlib.suppress(Exception):  # a full disk must not stop the exit
                self.registry.remove(self.request.session_id)
        remove_session_files(self.request.run_dir, [self.request.session_id])

    def _announce(self, corr: str, reply_to: Any) -> None:
        assert self.request is not None
        workers = tuple(sorted(c for c in self.refs if c.startswith("worker-")))
        self.send(reply_to, m.SessionReady(corr=corr, session_id=self.request.session_id,
                                           master=self.refs.get("master"), workers=workers))

    def on_child_started(self, child_id: str, ref: Any, pid: int, info: dict) -> None:
        if self.registry is not None and self.request is not None:
            # at once, not batched until every child started: if this supervisor dies
            # before then, the daemon's clean-up finds the children it had only here
            self.registry.set_child(self.request.session_id, child_id,
                                    Proc(pid=pid, start=start_time(pid) or 0))
        self.send(ref, m.WarmUp())  # its Started came: see m.WarmUp
        master = self.refs.get("master")
        if child_id.startswith("worker-") and master is not None:
            self.send(master, m.WorkerJoined(worker_id=child_id, ref=ref, pid=pid))
        elif child_id == "master":
            for wid, wref in self.refs.items():
                if wid.startswith("worker-") and wid in self.pids:
                    self.send(ref, m.WorkerJoined(worker_id=wid, ref=wref, pid=self.pids[wid]))
            restarted, self.master_seen = self.master_seen, True
            if restarted and self.request is not None and self.request.hosts is not None:
                # the session's workers on other hosts join the new master through the
                # hosts actor, which takes its queries for them from now on (the first
                # master it knows from the session's announce: SessionReady)
                self.send(self.request.hosts, m.MasterRestarted(
                    session_id=self.request.session_id, master=ref))

    def on_child_exited(self, child_id: str, pid: int | None, reason: str) -> None:
        if child_id == "master" and self.request is not None:
            now = time.monotonic()
            forwarded, self.forwarded = self.forwarded, deque(maxlen=FORWARDED_KEPT)
            for at, (message, sender) in forwarded:
                if now - at >= FORWARDED_FOR:
                    continue
                retry_later(self, message, sender, f"session {self.request.session_id}'s "
                                                   "master was restarted; try again")
        if pid is not None and child_id.startswith("worker-"):
            kill_group(pid)  # what its selector started and left behind dies with it
        master = self.refs.get("master")
        if child_id.startswith("worker-") and master is not None and pid is not None:
            code = self.exit_codes.get(child_id)
            how = reason if code is None else describe_exit(code)
            self.send(master, m.WorkerLost(worker_id=child_id, pid=pid, reason=how))
        # the session stopping (closed, or the daemon shutting down) is no news
        level = "info" if self.exiting or reason == "shutdown" else "warning"
        getattr(get_logger(), level)("child_exit_seen", child_id=child_id, pid=pid,
                                     reason=reason)


def remove_session_files(run_dir: str, session_ids: list[str]) -> None:
    """Remove the files of these sessions (ended) from `run_dir` (adoption.session_files),
    and the temporary files a writer killed mid-write left of them (adoption.leftovers)."""
    if not session_ids:
        return
    try:
        names = os.listdir(run_dir)
    except OSError:  # no run directory: nothing to remove
        return
    for sid in session_ids:
        for name in (*session_files(sid), *leftovers(sid, names)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(run_dir, name))


def retry_later(actor: Any, message: Any, sender: Any, error: str) -> None:
    """Answer a request that cannot be served this instant (the daemon starting, a master
    restarting) with an error the gateway turns into "retry": the client asks again under
    the same request id (every request is idempotent by id), with a short back-off."""
    to = getattr(message, "reply_to", None) or sender
    if isinstance(message, m.CreateSession):
        actor.send(to, m.SessionFailed(corr=message.corr, session_id=message.session_id,
                                       error=error, retry=True))
    elif isinstance(message, m.StartQuery):
        actor.send(to, m.QueryRejected(corr=message.corr, query_id=message.query_id,
                                       error=error, retry=True))
    else:
        actor.send(to, m.StatusReply(corr=message.corr, status={"error": error, "retry": True}))
