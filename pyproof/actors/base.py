"""What every pyproof actor shares: die with its parent, answer pings, keep a heartbeat,
crash cleanly.

The heartbeat (supervision/heartbeat.py) is a shared page where the actor
thread stamps when each message handler begins and clears it when it returns:
the supervisor reads it without a message, and pings only a child it cannot
vouch for (frozen, stuck in one handler, or now and then to check the path).

Thespian's own reaction to an exception in a handler is to retry the message
once and then return it as a PoisonMessage, leaving the actor running in
whatever state the exception left it. That is not "let it crash": here an
unexpected exception logs the error and ends the process, so the supervisor
restarts the actor from a clean state.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import time
import traceback

from thespian.actors import Actor, ThespianWatch

from pyproof.actors import messages as m
from pyproof.logs import configure_actor_log, get_logger
from pyproof.supervision import heartbeat
from pyproof.supervision.process_tree import set_parent_death_signal

CRASH_EXIT_CODE = 70  # pyproof's own fault ("let it crash"): counts against restart intensity
SELECTOR_EXIT_CODE = 71  # the selector's fault (e.g. stuck beyond packet_timeout): does not
TEST_HOOKS = os.environ.get("PYPROOF_TEST_HOOKS") == "1"


FATAL_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT")


def die_on_fatal_signals() -> None:
    """Let a segfault (in a selector's C code, say) kill the process, as it should.

    Thespian gives every actor a Python handler for every signal; for SIGSEGV that
    handler only sets a flag and returns, so the faulting instruction runs again, for
    ever: the process spins until a watchdog kills it, and its exit says SIGKILL.
    faulthandler dumps the Python stacks (to the actor's stderr, its log) first.
    """
    for name in FATAL_SIGNALS:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    with contextlib.suppress(Exception):
        faulthandler.enable(all_threads=True)


class ProofActor(Actor):
    """Base class: subclasses implement `receive(message, sender)`."""

    _armed = False
    dies_with_parent = True
    """False for a session supervisor: a session outlives the control process above it."""
    last_ping = 0.0
    """When our supervisor last pinged us (monotonic; 0.0: never)."""
    wants_pings = False
    """True: be pinged every ping interval even when the heartbeat vouches for us (an
    actor whose health is more than its actor thread: see `answer_ping`)."""
    _beat: heartbeat.Beat | None = None
    watch_fds: tuple[int, ...] = ()
    """File descriptors Thespian watches for us: one readable brings a `WatchMessage`
    (an event from one of our threads, instead of a timer that polls)."""

    def receiveMessage(self, message, sender):  # noqa: N802 (Thespian's API)
        """Run by Thespian on the actor's thread for every message, one at a time.

        Stamps the heartbeat, answers PingChild through `answer_ping`, hands the rest
        to `receive`. Raises nothing: whatever `receive` raises ends the process
        through `crash` (Thespian's retry-then-PoisonMessage would keep a broken actor).
        """
        if not self._armed:
            self._armed = True
            # Thespian leaves children of a SIGKILLed actor running as orphans;
            # the kernel's parent-death signal takes the whole subtree down
            if self.dies_with_parent:
                set_parent_death_signal()
            die_on_fatal_signals()
            self._beat = heartbeat.beat()
            self._beat.want_pings(self.wants_pings)
        beat = self._beat
        beat.enter(time.monotonic())
        try:
            if isinstance(message, m.PingChild):
                self.last_ping = time.monotonic()
                self.answer_ping(message, sender)
            else:
                try:
                    self.receive(message, sender)
                except Exception as exc:
                    self.crash(exc)
        finally:
            beat.leave()
        # Thespian keeps watching only what the latest handler returned
        return ThespianWatch(list(self.watch_fds)) if self.watch_fds else None

    def answer_ping(self, message: m.PingChild, sender) -> None:
        """Run by `receiveMessage` (actor thread) for each ping of our supervisor.

        Answers at once if `healthy()`. An actor whose health is more than its
        actor thread overrides `healthy` (not answering means hung: the supervisor
        kills and restarts it) and asks to be pinged every interval while that
        matters (`want_pings`).
        """
        if self.healthy():
            self.send(sender, m.PongChild(seq=message.seq))

    def want_pings(self, wanted: bool) -> None:
        """Be pinged every interval (True) or only when the heartbeat cannot vouch for us
        (False: what costs nothing when idle). Any thread; a flag in the heartbeat page."""
        self.wants_pings = wanted
        if self._beat is not None:
            self._beat.want_pings(wanted)

    def supervisor_seen(self) -> float:
        """When our supervisor last pinged us or read our heartbeat (monotonic; 0.0: never):
        a session supervisor nobody has looked at for long is an orphan."""
        watched = self._beat.watched() if self._beat is not None else 0.0
        return max(self.last_ping, watched)

    def healthy(self) -> bool:
        """Run on the actor thread as it answers its supervisor's liveness check.

        True: answer it. An actor with threads of its own (the master's data
        plane) checks them here and, finding one stuck, ends its process
        (`CRASH_EXIT_CODE`, restarted as a crash) or returns False (no answer:
        the watchdog declares it hung). Must not block: take no lock a stuck
        thread could hold.
        """
        return True

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
