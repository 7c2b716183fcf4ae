"""Write one of a session's files in the run directory: whole, or not at all.

A session's files that carry state across a process's death (a master's last words,
actors/last_words.py; the hosts actor's record of a spread session, hosts/spans.py)
are read by the next process, which must never see half of one. Each is written to
`NAME.PID.tmp` and renamed over NAME; a writer killed in between leaves the temporary
file, which `adoption.leftovers` finds and the session's clean-up removes.
"""

from __future__ import annotations

import contextlib
import os


def write_whole(path: str, data: bytes) -> None:
    """Replace the file at `path` by `data` atomically (owner-only); raises OSError on a
    failure (a full disk, a removed directory, a short write), leaving no temporary file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)  # small files: one write (a short one is caught below)
            if os.fstat(fd).st_size != len(data):
                raise OSError(f"short write to {tmp}")
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
