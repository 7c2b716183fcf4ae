"""The daemon's root supervisor: the sessions supervisor, then the gateway (rest_for_one).

Order matters: the gateway is started after the sessions supervisor and
given its address, so a crash of the gateway restarts only the gateway
(sessions run on), while a crash of the sessions supervisor restarts the
gateway too (it would hold a stale address).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from pyproof.actors import messages as m
from pyproof.actors.sessions import WATCHDOG
from pyproof.actors.supervisor import SupervisorActor
from pyproof.logs import get_logger
from pyproof.supervision.spec import ChildSpec, ChildType, Strategy, SupervisorSpec, SupFlags


class Root(SupervisorActor):
    # sessions and gateway are created side by side; the gateway is given the sessions
    # supervisor's address at once (created early, or started by the core on a restart)
    parallel_start = True
    spare_sessions = True  # a killed (hung) sessions supervisor takes no session with it

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.boot: m.Boot | None = None
        self.booter = None

    def receive_other(self, message, sender) -> None:
        if isinstance(message, m.Boot):
            self.boot, self.booter = message, sender
            self.start_log(message.log_dir, actor="root")
            gateway_init = m.GatewayStart(
                corr=message.corr, control_address=message.control_address, sessions=None,
                run_dir=message.run_dir, log_dir=message.log_dir, auth=dict(message.auth))
            # a daemon in a cluster runs its hosts actor (actors/hosts.py) before the
            # gateway, which is given its address
            hosts = () if message.cluster is None else (ChildSpec(id="hosts", start=m.ActorStart(
                actor="pyproof.actors.hosts:Hosts",
                init=m.HostsStart(log_dir=message.log_dir, config=dict(message.cluster)))),)
            self.supervise(SupervisorSpec(
                name="root",
                flags=SupFlags(strategy=Strategy.REST_FOR_ONE, intensity=5, period=10.0,
                               **WATCHDOG),
                children=(
                    ChildSpec(id="sessions", type=ChildType.SUPERVISOR, start=m.ActorStart(
                        actor="pyproof.actors.sessions:Sessions",
                        init=m.SessionsStart(log_dir=message.log_dir, run_dir=message.run_dir,
                                             limits=dict(message.limits)))),
                    *hosts,
                    ChildSpec(id="gateway", start=m.ActorStart(
                        actor="pyproof.actors.gateway:Gateway", init=gateway_init)),
                )))

    def child_init(self, child_id: str, init: Any) -> Any:
        if child_id == "gateway":
            return dataclasses.replace(init, sessions=self._ref("sessions"),
                                       root=self.myAddress, hosts=self._ref("hosts"))
        if child_id == "hosts":
            return dataclasses.replace(init, sessions=self._ref("sessions"))
        return init

    def _ref(self, child_id: str) -> Any:
        """A sibling's address, also while children start side by side (parallel_start)."""
        return self.refs.get(child_id) or self.early.get(child_id, {}).get("ref")

    def on_running(self) -> None:
        assert self.boot is not None
        get_logger().info("daemon_booted", control=self.boot.control_address, pid=os.getpid())
        self.send(self.booter, m.Booted(corr=self.boot.corr, root_pid=os.getpid(),
                                        control_address=self.boot.control_address))

    def on_gone(self, reason: str, escalated: bool) -> None:
        if self.booter is not None:
            self.send(self.booter, m.BootFailed(corr=self.boot.corr if self.boot else "",
                                                error=f"root supervisor gave up: {reason}"))
