"""The master actor: a thin shell around its data plane (master_plane.py).

Control messages (start/stop query, status, worker list) arrive here; packet
traffic never does.
"""

from __future__ import annotations

import os

from thespian.actors import ActorExitRequest

from pyproof.actors import messages as m
from pyproof.actors.base import ProofActor
from pyproof.actors.master_plane import MasterPlane
from pyproof.actors.output_files import query_output_dir
from pyproof.logs import get_logger
from pyproof.transport.tls import TLSError, TLSSettings


class Master(ProofActor):
    plane: MasterPlane | None = None
    current: tuple[str, dict] | None = None  # the accepted query, for workers that join

    def receive(self, message, sender) -> None:
        if isinstance(message, m.MasterStart):
            self.workers: dict[str, tuple] = {}  # worker id -> (actor address, pid)
            self.start_log(message.log_dir, actor="master", session=message.session_id)
            self.plane = MasterPlane(session_id=message.session_id,
                                     address=message.packet_address, data_key=message.data_key)
            get_logger().info("master_started", address=message.packet_address)
            self.send(sender, m.Started(pid=os.getpid(),
                                        info={"packet_address": message.packet_address}))
        elif isinstance(message, m.WorkerJoined):
            assert self.plane is not None
            self.workers[message.worker_id] = (message.ref, message.pid)
            self.plane.worker_joined(incarnation(message.worker_id, message.pid))
            if self.plane.busy() and self.current is not None:
                # a worker joining mid-query gets work at once
                self.send(message.ref, m.RunQuery(query_id=self.current[0], spec=self.current[1]))
        elif isinstance(message, m.WorkerLost):
            assert self.plane is not None
            current = self.workers.get(message.worker_id)
            if current is not None and current[1] == message.pid:
                del self.workers[message.worker_id]
            self.plane.worker_lost(incarnation(message.worker_id, message.pid), message.reason)
        elif isinstance(message, m.StartQuery):
            self._start_query(message, sender)
        elif isinstance(message, m.StopQuery):
            if self.plane is not None:
                self.plane.stop_query(message.query_id, "stopped by the user")
            self.send(message.reply_to or sender,
                      m.QueryAccepted(corr=message.corr, query_id=message.query_id))
        elif isinstance(message, m.StatusRequest):
            status = self.plane.statistics() if self.plane else {}
            self.send(message.reply_to or sender, m.StatusReply(corr=message.corr, status={
                "master": status, "workers": sorted(self.workers), "pid": os.getpid()}))
        elif isinstance(message, m.OpenOutbox):
            assert self.plane is not None
            try:
                status = {"address": self.plane.open_outbox(message.address, message.tls)}
            except Exception as exc:  # e.g. the port asked for is taken: say so
                status = {"error": f"cannot listen on {message.address}: {exc}"}
            self.send(message.reply_to or sender, m.StatusReply(corr=message.corr, status=status))
        elif isinstance(message, m.FetchResult):
            frame = self.plane.results.get(message.query_id) if self.plane else None
            status = {"frame": frame} if frame is not None else {
                "error": f"no kept result for query {message.query_id!r}"}
            self.send(message.reply_to or sender, m.StatusReply(corr=message.corr, status=status))
        elif isinstance(message, ActorExitRequest) and self.plane is not None:
            self.plane.close()

    def _start_query(self, message: m.StartQuery, sender) -> None:
        reply_to = message.reply_to or sender
        assert self.plane is not None
        if self.plane.knows_query(message.query_id):  # a client retry: already accepted
            self.send(reply_to, m.QueryAccepted(corr=message.corr, query_id=message.query_id))
            return
        if self.plane.busy():
            self.send(reply_to, m.QueryRejected(
                corr=message.corr, query_id=message.query_id,
                error="the session is already running a query; wait for it or stop it"))
            return
        try:  # a client that listens with TLS is checked against this host's CA
            TLSSettings.from_env().callback_config(message.spec.get("client_address") or "")
        except TLSError as exc:
            self.send(reply_to, m.QueryRejected(corr=message.corr, query_id=message.query_id,
                                                error=f"cannot dial the client back: {exc}"))
            return
        # where its selectors' ctx.output_file(...) paths go (see output_files.py)
        spec = {**message.spec,
                "output_dir": query_output_dir(self.plane.session_id, message.query_id)}
        self.plane.start_query(message.query_id, spec, message.user)
        self.current = (message.query_id, spec)
        for ref, _pid in self.workers.values():
            self.send(ref, m.RunQuery(query_id=message.query_id, spec=spec))
        get_logger().info("query_accepted", query=message.query_id)
        self.send(reply_to, m.QueryAccepted(corr=message.corr, query_id=message.query_id))


def incarnation(worker_id: str, pid: int) -> str:
    """A worker's name on the data plane: a restarted worker is a new participant."""
    return f"{worker_id}#{pid}"
