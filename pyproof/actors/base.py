"""What every pyproof actor shares: die with its parent, log to its own file."""

from __future__ import annotations

from thespian.actors import Actor

from pyproof.logs import configure_actor_log
from pyproof.supervision.process_tree import set_parent_death_signal


class ProofActor(Actor):
    """Base class: on its first message the actor arranges to die with its parent.

    Thespian leaves children of a SIGKILLed actor running as orphans; the
    kernel's parent-death signal makes the whole subtree go down with it.
    """

    _armed = False

    def receiveMessage(self, message, sender):  # noqa: N802 (Thespian's API)
        if not self._armed:
            self._armed = True
            set_parent_death_signal()
        self.receive(message, sender)

    def receive(self, message, sender) -> None:
        raise NotImplementedError

    def start_log(self, log_dir: str, *, actor: str, session: str | None = None) -> None:
        configure_actor_log(log_dir, actor=actor, session=session)
