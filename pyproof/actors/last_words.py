"""A stuck master's last words: its queries' ERROR frames, kept for the master after it.

A master whose data thread is stuck (`Master.healthy`) tells each running or queued
query's client at once (an ERROR frame on the data plane) and ends. That frame leaves
on nng's own I/O threads: on a starved host the process could end before it left, and
the restarted master knew nothing of the query, so the client (asking the control plane
why the data plane went quiet, `Session._check_alive`) heard "lost: run it again" instead
of the reason. So before it ends, the master also writes those frames to a small file in
the run directory, named by session (`adoption.last_words_file`); the next master of the
session loads it into its kept results (`MasterPlane.results`), where the client fetches
the frame it missed. The file is one of the session's files (`adoption.session_files`):
removed when the session ends, as its sockets are.

The format is CBOR: a list of [query id, frame bytes] pairs, oldest first, at most
`KEEP` of them (older ones are dropped as new ones come: a session whose master is stuck
again and again keeps only the latest), `MAX_BYTES` in all. The frames are the plain
(unsealed) encoded frames the plane keeps for `fetch_result`. Pure `merge`/`encode`/
`decode` under two thin shells (`write`, `read`); neither ever raises: a write that fails
is logged and the master ends anyway (the direct frame usually arrived), a file that
cannot be read or is damaged is logged and ignored. Not fsynced: its reader is the next
process on the same host (the page cache outlives the writer); a host that crashes ends
the session anyway, and a sync could hold the exit on a loaded disk.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

import cbor2

from pyproof.logs import get_logger
from pyproof.supervision.adoption import last_words_file
from pyproof.supervision.session_file import write_whole

KEEP = 10  # as many as a plane keeps results (master_plane.KEEP_RESULTS)
MAX_BYTES = 1 << 20  # an ERROR frame is small; a file this large is not ours


def merge(before: Mapping[str, bytes], new: Mapping[str, bytes],
          keep: int = KEEP) -> dict[str, bytes]:
    """`before` then `new` (a query in both: the new frame, moved last), the last `keep`."""
    merged = {q: f for q, f in before.items() if q not in new}
    merged.update(new)
    return dict(list(merged.items())[-keep:]) if keep > 0 else {}


def encode(frames: Mapping[str, bytes]) -> bytes:
    return cbor2.dumps([[q, bytes(f)] for q, f in frames.items()])


def decode(data: bytes, keep: int = KEEP) -> dict[str, bytes]:
    """The frames in `data`, the last `keep`; ValueError if it is not such a list."""
    try:
        pairs = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several kinds for damaged input
        raise ValueError(f"not CBOR: {exc}") from None
    if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
            and isinstance(p[1], bytes) for p in pairs):
        raise ValueError("not a list of [query id, frame] pairs")
    return merge({}, dict(pairs), keep)


def _read_bytes(path: str) -> bytes | None:
    """The file's bytes; None if there is none; ValueError if it is too large."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES} bytes")
    return data


def read(run_dir: str, session_id: str) -> dict[str, bytes]:
    """The frames the session's earlier masters left (oldest first); {} if none or unusable."""
    if not run_dir or not session_id:
        return {}
    path = os.path.join(run_dir, last_words_file(session_id))
    try:
        data = _read_bytes(path)
        return {} if data is None else decode(data)
    except (OSError, ValueError) as exc:
        get_logger().error("last_words_unreadable", path=path, error=str(exc))
        return {}


def write(run_dir: str, session_id: str, frames: Mapping[str, bytes]) -> bool:
    """Add `frames` to the session's file (atomically: a new file renamed over the old one);
    False if there is nowhere to write or it failed (logged). Called by a master about to
    end: bounded (one small local file), never raises."""
    if not frames or not run_dir or not session_id:
        return False
    path = os.path.join(run_dir, last_words_file(session_id))
    try:
        try:
            before = decode(_read_bytes(path) or encode({}))
        except ValueError:  # damaged: replaced by ours
            before = {}
        write_whole(path, encode(merge(before, frames)))
        return True
    except Exception as exc:  # a full disk, a removed run directory: the exit goes on
        with contextlib.suppress(Exception):
            get_logger().error("last_words_not_written", path=path, error=repr(exc))
        return False
