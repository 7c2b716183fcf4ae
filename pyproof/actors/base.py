"""What every pyproof actor shares: die with its parent, answer pings, crash cleanly.

Thespian's own reaction to an exception in a handler is to retry the message
once and then return it as a PoisonMessage, leaving the actor running in
whatever state the exception left it. That is not "let it crash": here an
unexpected exception logs the error and ends the process, so the supervisor
restarts the actor from a clean state.
"""

from __future__ import annotations

import os
import traceback

from thespian.actors import Actor

from pyproof.actors import messages as m
from pyproof.logs import configure_actor_log, get_logger
from pyproof.supervision.process_tree import set_parent_death_signal

CRASH_EXIT_CODE = 70
TEST_HOOKS = os.environ.get("PYPROOF_TEST_HOOKS") == "1"


class ProofActor(Actor):
    """Base class: subclasses implement `receive(message, sender)`."""

    _armed = False

    def receiveMessage(self, message, sender):  # noqa: N802 (Thespian's API)
        """Run by Thespian on the actor's thread for every message, one at a time.

        Answers PingChild itself (the supervisor's liveness check), hands the rest
        to `receive`. Raises nothing: whatever `receive` raises ends the process
        through `crash` (Thespian's retry-then-PoisonMessage would keep a broken actor).
        """
        if not self._armed:
            self._armed = True
            # Thespian leaves children of a SIGKILLed actor running as orphans;
            # the kernel's parent-death signal takes the whole subtree down
            set_parent_death_signal()
        if isinstance(message, m.PingChild):
            self.send(sender, m.PongChild(seq=message.seq))
            return
        try:
            self.receive(message, sender)
        except Exception as exc:
            self.crash(exc)

    def crash(self, exc: BaseException) -> None:
        """Run by `receiveMessage` (actor thread) when `receive` raised; never returns.

        Logs the error and ends the process with CRASH_EXIT_CODE, even if logging
        itself raises; the supervisor sees the exit and restarts the actor.
        """
        try:
            get_logger().error("actor_crashed", actor_class=type(self).__name__,
                               error=repr(exc), traceback=traceback.format_exc())
        finally:
            os._exit(CRASH_EXIT_CODE)

    def receive(self, message, sender) -> None:
        """Run by `receiveMessage` on the actor thread for every message but pings.

        Subclasses implement it. If it raises, `ProofActor.receiveMessage` logs the error
        and ends the process (exit 70); the supervisor restarts the actor from a clean
        state.
        """
        raise NotImplementedError

    def start_log(self, log_dir: str, *, actor: str, session: str | None = None) -> None:
        """Run by a subclass's start handler (actor thread): this process logs to `log_dir`.

        If it raises (the directory cannot be written), the start handler raises:
        the actor crashes as from `receive` and its supervisor counts a start failure.
        """
        configure_actor_log(log_dir, actor=actor, session=session)
