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
from pyproof.actors.supervisor import SupervisorActor
from pyproof.actors.trees import root_tree
from pyproof.logs import get_logger
from pyproof.supervision import events as ev


class Root(SupervisorActor):
    # sessions and gateway are created side by side; the gateway is given the sessions
    # supervisor's address at once (created early, or started by the core on a restart)
    parallel_start = True
    spare_sessions = True  # a killed (hung) sessions supervisor takes no session with it

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.boot: m.Boot | None = None
        self.booter = None
        self.preopened = False  # the boot's session is opened once, not by a restarted child

    def receive_other(self, message, sender) -> None:
        if isinstance(message, m.Boot):
            self.boot, self.booter = message, sender
            self.start_log(message.log_dir, actor="root")
            self.supervise(root_tree(message))  # trees.py: the shape as data

    def child_init(self, child_id: str, init: Any) -> Any:
        if child_id == "gateway":
            return dataclasses.replace(init, sessions=self._ref("sessions"),
                                       root=self.myAddress, hosts=self._ref("hosts"))
        if child_id == "hosts":
            return dataclasses.replace(init, sessions=self._ref("sessions"))
        if child_id == "sessions" and init.preopen is not None:
            if self.preopened:  # a restarted sessions supervisor re-adopts that session
                return dataclasses.replace(init, preopen=None)
            self.preopened = True
        return init

    def _ref(self, child_id: str) -> Any:
        """A sibling's address, also while children start side by side (parallel_start)."""
        return self.refs.get(child_id) or self.early.get(child_id, {}).get("ref")

    def on_running(self) -> None:
        assert self.boot is not None
        get_logger().info("daemon_booted", control=self.boot.control_address, pid=os.getpid())
        self.send(self.booter, m.Booted(corr=self.boot.corr, root_pid=os.getpid(),
                                        control_address=self.boot.control_address))

    def on_gone(self, final: ev.Escalate | ev.Exit) -> None:
        if self.booter is not None:
            self.send(self.booter, m.BootFailed(corr=self.boot.corr if self.boot else "",
                                                error=boot_failure(final)))


def boot_failure(final: ev.Escalate | ev.Exit) -> str:
    """What proofd's start says when its tree gave up: which child, and its own error
    (a port in use is the common case: say what to do about it)."""
    if not isinstance(final, ev.Escalate) or final.child_id is None:
        return f"root supervisor gave up: {final.reason}"
    what = {"failed_to_start_child": "could not start",
            "reached_max_restart_intensity": "kept crashing"}.get(final.reason, final.reason)
    text = f"root supervisor gave up: its {final.child_id} {what}"
    if final.detail:
        text += f": {final.detail}"
    if final.child_id == "gateway" and "in use" in final.detail.lower():
        text += (" (another process listens on that port: stop it, or start proofd "
                 "with another --port)")
    return text

