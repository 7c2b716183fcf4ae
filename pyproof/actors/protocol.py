"""The data-plane protocol between workers, master and client (CBOR frames on nng).

Worker -> master (req/rep, one socket, so the master serves it from one thread):
  NEXT     {worker, query, processed: [report...]}  -> PACKET | WAIT | DONE | ABORT
           (with no packet to give yet, the master holds a NEXT until there is one, or
           answers WAIT {held: seconds} at its bound: ask again at once)
  OUTPUTS  {worker, query, packets: [id...], processed: [report...], outputs: {...},
            files: [path...]}                       -> ACK {accepted: bool}
  FAILED   {worker, query, error: RemoteError}      -> ABORT
  WATCH    {worker, pid, fresh: bool}               -> RUN | WAIT {held} | ABORT
           (a worker's standing request to hear of new queries: the master holds it
           and answers RUN {queries: [{query, spec, output_dir, packages}...]}, every
           query running or queued in order, as soon as one it was not told of
           starts, or WAIT at WATCH_HOLD_SECONDS: ask again. `fresh`: the worker
           may have missed answers (a new socket): it is told every such query)
A PACKET is {packet: {packet_id, element, entry_start, entry_stop}, path, tree, ...},
with `batch: [PACKET body...]` (the packets after the first) when the master grants
several short packets at once: the worker queues them, processes them in order, and
sends its next NEXT (with the reports) as it starts the last one. A packet of the same
element as the one before it carries only `packet` (the file fields are that one's).
A PACKET with `last: true` leaves nothing else to hand out now: the worker asks for no
packet ahead, it sends OUTPUTS with `next: true` once it has processed its packets.
A packet with `confirm: true` (always a grant's last, never with `last`) is one a
worker died holding before: the worker sends its NEXT and waits for the answer
before it starts it, so the master knows for sure it was running if it dies.
An ABORT with `unreachable: true` comes from a worker's host's tunnel (hosts.py), not
from the master: the master's host did not answer, so whether it got the request is
unknown; the worker exits, as when the master does not answer (its packets go back).
A report is {packet, seconds, entries, bytes}. `files` lists the files the
selector wrote (ctx.output_file) for those packets: kept if accepted, else
deleted (output_files.py).

Master -> client (push, the master dials the client's listening socket):
  PROGRESS {query, entries, total, bytes, elapsed, workers: {id: entries}}
  HEARTBEAT {query, state}  (queued, preparing or finishing: no progress to send)
  RESULT   {query, outputs, stats, lineage}
  ERROR    {query, error: RemoteError, lineage}
"""

from __future__ import annotations

from typing import Any

NEXT = "next"
OUTPUTS = "outputs"
FAILED = "failed"
WATCH = "watch"

PACKET = "packet"
WAIT = "wait"
DONE = "done"
ABORT = "abort"
ACK = "ack"
RUN = "run"

WATCH_HOLD_SECONDS = 5.0  # a held WATCH is answered WAIT by then (the worker asks again)

PROGRESS = "progress"
HEARTBEAT = "heartbeat"
RESULT = "result"
ERROR = "error"


class ProtocolViolation(ValueError):
    """A peer sent a well-formed frame with the wrong fields."""


def require(payload: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    """payload[name], checked to be of `kind`; ProtocolViolation names the field otherwise."""
    if not isinstance(payload, dict):
        raise ProtocolViolation(f"payload must be a map, got {type(payload).__name__}")
    if name not in payload:
        raise ProtocolViolation(f"missing field {name!r}")
    value = payload[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolViolation(
            f"field {name!r} must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}"
        )
    return value
