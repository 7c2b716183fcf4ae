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
from pyproof.logs import get_logger


class Master(ProofActor):
    plane: MasterPlane | None = None
    worker_addresses: dict = {}

    def receive(self, message, sender) -> None:
        if isinstance(message, m.MasterStart):
            self.start_log(message.log_dir, actor="master", session=message.session_id)
            address = f"ipc://{os.path.join(message.run_dir, f'master-{message.session_id}.ipc')}"
            self.plane = MasterPlane(session_id=message.session_id, address=address)
            get_logger().info("master_started", address=address)
            self.send(sender, m.MasterReady(session_id=message.session_id,
                                            packet_address=address, pid=os.getpid()))
        elif isinstance(message, m.SetWorkers):
            self.worker_addresses = dict(message.workers)
            assert self.plane is not None
            self.plane.set_workers(sorted(self.worker_addresses))
        elif isinstance(message, m.StartQuery):
            self._start_query(message, sender)
        elif isinstance(message, m.StopQuery):
            if self.plane is not None:
                self.plane.stop_query(message.query_id, "stopped by the user")
            self.send(message.reply_to or sender,
                      m.QueryAccepted(corr=message.corr, query_id=message.query_id))
        elif isinstance(message, m.StatusRequest):
            status = self.plane.statistics() if self.plane else {}
            self.send(message.reply_to or sender,
                      m.StatusReply(corr=message.corr, status={"master": status}))
        elif isinstance(message, ActorExitRequest) and self.plane is not None:
            self.plane.close()

    def _start_query(self, message: m.StartQuery, sender) -> None:
        reply_to = message.reply_to or sender
        if self.plane is None:
            self.send(reply_to, m.QueryRejected(corr=message.corr, query_id=message.query_id,
                                                error="master not started"))
            return
        if self.plane.busy():
            self.send(reply_to, m.QueryRejected(
                corr=message.corr, query_id=message.query_id,
                error="the session is already running a query; wait for it or stop it"))
            return
        self.plane.start_query(message.query_id, message.spec)
        for address in self.worker_addresses.values():
            self.send(address, m.RunQuery(query_id=message.query_id, spec=message.spec))
        get_logger().info("query_accepted", query=message.query_id)
        self.send(reply_to, m.QueryAccepted(corr=message.corr, query_id=message.query_id))
