"""The daemon's root supervisor: starts the gateway and the sessions supervisor."""

from __future__ import annotations

from pyproof.actors import messages as m
from pyproof.actors.base import ProofActor
from pyproof.actors.gateway import Gateway
from pyproof.actors.sessions import Sessions
from pyproof.logs import get_logger


class Root(ProofActor):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.boot: m.Boot | None = None
        self.booter = None

    def receive(self, message, sender) -> None:
        if isinstance(message, m.Boot):
            self.boot, self.booter = message, sender
            self.start_log(message.log_dir, actor="root")
            sessions = self.createActor(Sessions)
            gateway = self.createActor(Gateway)
            self.send(gateway, m.GatewayStart(
                corr=message.corr, control_address=message.control_address,
                sessions=sessions, run_dir=message.run_dir, log_dir=message.log_dir))
        elif isinstance(message, m.GatewayReady):
            assert self.boot is not None
            if message.error:
                self.send(self.booter, m.BootFailed(corr=message.corr, error=message.error))
            else:
                get_logger().info("daemon_booted", control=self.boot.control_address)
                self.send(self.booter, m.Booted(corr=message.corr,
                                                control_address=self.boot.control_address))
