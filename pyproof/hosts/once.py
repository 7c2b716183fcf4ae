"""Requests with side effects, done once per request id (pure; no clock, no sockets).

A client retries a request whose answer it did not get (its attempt timed
out, the gateway answered "retry", a req socket resent it): the same request
id comes again. Adding workers must not add them twice, so the actor that
adds them asks `Once.begin(request_id, answer)` first: a new id runs; a
repeat while the first still runs is answered with the first's outcome when
it ends; a repeat afterwards is answered at once with the same outcome. The
last `keep` outcomes are remembered (a retry comes within a minute, not
after hundreds of other requests).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

Answer = Callable[[Any], None]


class Once:
    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self._running: dict[str, list[Answer]] = {}
        self._done: OrderedDict[str, Any] = OrderedDict()

    def begin(self, request_id: str, answer: Answer) -> bool:
        """True: run the request (a new id, or none). False: a repeat; `answer` gets the
        first's outcome, now if it is known, else when it ends."""
        if not request_id:
            return True
        if request_id in self._done:
            answer(self._done[request_id])
            return False
        if request_id in self._running:
            self._running[request_id].append(answer)
            return False
        self._running[request_id] = []
        return True

    def end(self, request_id: str, outcome: Any) -> None:
        """The request ended with `outcome`: the repeats waiting for it get it too."""
        if not request_id:
            return
        for answer in self._running.pop(request_id, []):
            answer(outcome)
        self._done[request_id] = outcome
        while len(self._done) > self.keep:
            self._done.popitem(last=False)

    def validate(self) -> None:
        assert not set(self._running) & set(self._done), "a request both running and done"
        assert len(self._done) <= self.keep
