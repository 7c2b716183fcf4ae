"""Files that selectors write on workers (`ctx.output_file`), kept exactly once.

Where they go: `$PYPROOF_SANDBOX/outputs/<session>/<query>/` (default
`~/.pyproof/outputs/...`), in one directory per worker process and batch of
packets, `<worker>-<pid>-b<batch>/`; the sandbox, not the run directory,
because the files outlive the session (they become a dataset).

A worker lists the files of a batch in the OUTPUTS message that carries the
batch's packets. The master keeps them when the packetizer accepts those
packets' outputs, deletes them when it refuses them (a duplicate, a worker
declared lost), and at the end of the query sweeps away every other file
(written by a worker that died before delivering); a failed query's
directory is removed. So the kept files cover every processed entry exactly
once. With `output_dataset=NAME` they are registered (verified) as dataset
NAME in the catalog.

Workers on other hosts of a cluster (`worker-N@HOST`) write under their own
host's sandbox (the hosts actor there gives them its own output directory):
their files stay on that host and are listed with it (`kept_hosts`). The
master never deletes a path outside its own sandbox's outputs, so a refused
packet's file on another host stays there (and is not listed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any

from pyproof.actors import protocol as p
from pyproof.sandbox import default_catalog_path, outputs_dir


def query_output_dir(session_id: str, query_id: str) -> str:
    """Where the workers of a session's query write their files (private, as the sandbox)."""
    return os.path.join(outputs_dir(), session_id, query_id)


class OutputFiles:
    """The files one query's workers reported, and which of them are kept."""

    def __init__(self, directory: str) -> None:
        self.directory = os.path.realpath(directory)
        self._kept: list[tuple[tuple[int, int], str]] = []  # (first packet's place, path)
        self._hosts: dict[str, str] = {}  # a path on another host -> that host

    def _check_remote(self, worker: str, host: str, path: Any) -> str:
        """A file a worker on `host` wrote there: only its form can be checked here."""
        tail = os.path.join(*self.directory.split(os.sep)[-2:])  # <session>/<query>
        if not (isinstance(path, str) and os.path.isabs(path) and os.path.normpath(path) == path
                and f"{os.sep}{tail}{os.sep}" in path):
            raise p.ProtocolViolation(f"{worker} reported output file {path!r} outside the "
                                      f"query's output directory on host {host!r}")
        self._hosts[path] = host
        return path

    def check(self, worker: str, files: Any) -> list[str]:
        """The reported paths, each a file under this query's directory (or ProtocolViolation)."""
        if not isinstance(files, list):
            raise p.ProtocolViolation(f"field 'files' must be a list, got {type(files).__name__}")
        checked = []
        host = worker.split("#", 1)[0].partition("@")[2]
        for path in files:
            if host:
                checked.append(self._check_remote(worker, host, path))
                continue
            real = os.path.realpath(path) if isinstance(path, str) else None
            if real is None or os.path.commonpath([real, self.directory]) != self.directory:
                raise p.ProtocolViolation(
                    f"{worker} reported output file {path!r} outside the query's output "
                    f"directory {self.directory}")
            checked.append(real)
        return checked

    def exists(self) -> bool:
        return os.path.isdir(self.directory)

    def keep(self, files: list[str], place: tuple[int, int]) -> None:
        """Files of accepted packets; `place` (element, entry) orders them as the input."""
        self._kept.extend((place, path) for path in files)

    @property
    def kept(self) -> list[str]:
        return [path for _, path in sorted(self._kept)]

    @property
    def kept_hosts(self) -> list[str]:
        """The host of each `kept` file: "" for the master's, else the worker's host."""
        return [self._hosts.get(path, "") for path in self.kept]

    @staticmethod
    def refuse(files: list[str]) -> None:
        """Files of refused packets: another copy of their entries was kept (or will be).
        Only files under this host's outputs are deleted (not a path of another host)."""
        root = os.path.realpath(outputs_dir())
        for path in files:
            real = os.path.realpath(path) if isinstance(path, str) else ""
            if real and os.path.commonpath([real, root]) == root:
                with contextlib.suppress(OSError):
                    os.unlink(real)

    def sweep(self) -> list[str]:
        """Delete every file under the directory that is not kept; returns what went."""
        kept = set(self.kept)
        removed = []
        for root, _dirs, names in os.walk(self.directory, topdown=False):
            for name in names:
                path = os.path.join(root, name)
                if path not in kept:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                        removed.append(path)
            if root != self.directory:
                with contextlib.suppress(OSError):
                    os.rmdir(root)  # only if empty
        for directory in (self.directory, os.path.dirname(self.directory)):
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # nothing kept: leave no empty directories
        return removed

    def discard(self) -> None:
        """The query failed: remove its directory (and the session's, when it empties)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(self.directory))


def check_output_dataset(name: str, user: str, *, overwrite: bool) -> str:
    """The full path of dataset `name` the query will register; raises DatasetError if it
    may not (bad name, someone else's area, exists without overwrite)."""
    from pyproof.datasets import Catalog, DatasetExistsError, DatasetNameError
    from pyproof.datasets.names import parse_ref

    with Catalog(default_catalog_path(), user=user or None) as catalog:
        ref = parse_ref(name, group=catalog.group, user=catalog.user)
        if ref.entries is not None:
            raise DatasetNameError(name, f"?entries={ref.entries}",
                                   "an output dataset holds whole files")
        catalog.check_may_change(ref.name.path)
        if not overwrite and catalog.exists(ref.name.path):
            raise DatasetExistsError(ref.name.path)
        return ref.name.path


def register_output_dataset(name: str, user: str, files: list[str], *,
                            overwrite: bool) -> dict[str, Any]:
    """Register `files` (verified: entries counted) as dataset `name`; what was registered."""
    from pyproof.datasets import Catalog

    with Catalog(default_catalog_path(), user=user or None) as catalog:
        info = catalog.register(name, files, verify=True, overwrite=overwrite)
        bad = [(f.url, f.status(), f.problem or "") for f in catalog.show(info.path).files
               if not f.ok]
    return {"name": info.path, "files": list(files), "entries": info.total_entries,
            "bad": [list(b) for b in bad]}
