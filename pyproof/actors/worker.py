"""The worker actor: a thin shell; the query runs in worker_loop.py off the actor thread.

Keeping the actor thread free means a worker busy with a long packet still
answers pings and stop requests.
"""

from __future__ import annotations

import os

import pynng
from thespian.actors import ActorExitRequest

from pyproof.actors import messages as m
from pyproof.actors.base import ProofActor
from pyproof.actors.worker_loop import REQUEST_TIMEOUT_MS, WorkerLoop
from pyproof.logs import get_logger

JOIN_TIMEOUT = 5.0


class Worker(ProofActor):
    socket: pynng.Req0 | None = None
    loop: WorkerLoop | None = None
    worker_id = ""
    session_id = ""

    def receive(self, message, sender) -> None:
        if isinstance(message, m.WorkerStart):
            self.worker_id, self.session_id = message.worker_id, message.session_id
            self.start_log(message.log_dir, actor=message.worker_id, session=message.session_id)
            # resend disabled: a resent request would be processed twice by the master
            self.socket = pynng.Req0(recv_timeout=REQUEST_TIMEOUT_MS, send_timeout=10_000,
                                     resend_time=-1)
            self.socket.dial(message.packet_address, block=False)
            get_logger().info("worker_started", master=message.packet_address)
            self.send(sender, m.Started(pid=os.getpid()))
        elif isinstance(message, m.RunQuery):
            self._run(message)
        elif isinstance(message, m.StopQuery):
            if self.loop is not None:
                self.loop.stop()
        elif isinstance(message, ActorExitRequest):
            if self.loop is not None:
                self.loop.stop()
                self.loop.join(JOIN_TIMEOUT)
            if self.socket is not None:
                self.socket.close()

    def _run(self, message: m.RunQuery) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
            if not self.loop.join(JOIN_TIMEOUT):
                get_logger().error("previous_query_still_running", query=self.loop.query_id)
        assert self.socket is not None
        self.loop = WorkerLoop(worker_id=self.worker_id, session_id=self.session_id,
                               query_id=message.query_id, spec=message.spec, socket=self.socket)
        self.loop.start()
