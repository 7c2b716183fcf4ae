"""Where things live on a host, and keeping them private to their user.

The sandbox is `$PYPROOF_SANDBOX`, default `~/.pyproof`:

    secret                        the user's login secret (pyproof.transport.auth)
    datasets.sqlite (-wal, -shm)  the dataset catalog (unless $PYPROOF_CATALOG)
    lite/<session-dir>/logs/      a lite cluster's logs (the last 10 kept)
    proofd-<port>/run/            a proofd's sockets and ready.json
    proofd-<port>/logs/           a proofd's logs
    outputs/<session>/<query>/    files selectors write with ctx.output_file
    demo-data/                    the toy dataset of `proofctl demo`

Everything in it says who did what (session ids, paths, peers, datasets), so
it is private: directories 0700, files 0600. New things are made so by the
helpers here (whatever the caller's umask), pyproof's daemon and actor
processes run with umask 077 (so do the files selectors write), and
`make_private_tree` takes group and other bits off what an older version
left behind when a daemon or a lite cluster starts (an lstat per entry:
about 4 ms per 1,000 entries already private, 12 ms when each needs a
chmod); opening the catalog in the sandbox fixes the catalog's own files.
"""

from __future__ import annotations

import os
import stat
from typing import IO, Any

PRIVATE_UMASK = 0o077
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


# ---- where things live ---------------------------------------------------------------


def sandbox_dir() -> str:
    """`$PYPROOF_SANDBOX`, else `~/.pyproof`."""
    return os.environ.get("PYPROOF_SANDBOX") or os.path.join(os.path.expanduser("~"), ".pyproof")


def default_catalog_path() -> str:
    """`$PYPROOF_CATALOG`, else `datasets.sqlite` in the sandbox."""
    return os.environ.get("PYPROOF_CATALOG") or os.path.join(sandbox_dir(), "datasets.sqlite")


def default_secret_path() -> str:
    """The user's secret: `secret` in the sandbox."""
    return os.path.join(sandbox_dir(), "secret")


def lite_sessions_dir() -> str:
    """Where lite clusters keep their logs, one directory per cluster."""
    return os.path.join(sandbox_dir(), "lite")


def outputs_dir() -> str:
    """Where workers write the files of `ctx.output_file`."""
    return os.path.join(sandbox_dir(), "outputs")


def daemon_home(port: int) -> str:
    """A proofd's own directory (its run and log directories)."""
    return os.path.join(sandbox_dir(), f"proofd-{port}")


def is_inside(path: str | os.PathLike[str], directory: str | os.PathLike[str]) -> bool:
    """Whether `path` is `directory` or under it (both made absolute, links resolved)."""
    real, top = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([real, top]) == top


# ---- making things private -----------------------------------------------------------


def private_umask() -> int:
    """Make this process create files 0600 and directories 0700; returns the old umask.

    For pyproof's own daemon and actor processes (set before they create
    anything: actors and workers inherit it, so do the selectors they run).
    """
    return os.umask(PRIVATE_UMASK)


def make_private_dir(path: str | os.PathLike[str]) -> str:
    """Create directory `path` and its missing parents, each 0700; returns `path`.

    An existing `path` of ours that group or others may enter is made 0700;
    existing parents are left as they are (they may be /tmp or a home).
    """
    path = os.fspath(path)
    missing = []
    head = os.path.abspath(path)
    while not os.path.isdir(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR)
        except FileExistsError:
            if not os.path.isdir(directory):  # a file (or a dangling link) in the way
                raise
        _restrict(directory)  # another process may have made it meanwhile; or a umask
    if not missing:
        _restrict(path)
    return path


def open_private(path: str | os.PathLike[str], mode: str = "a", **kwargs: Any) -> IO[Any]:
    """`open(path, mode)` for writing, the file created 0600 (and made so if it exists and
    is ours); never follows a symlink at `path`."""
    def opener(name: str, flags: int) -> int:
        fd = os.open(name, flags | os.O_NOFOLLOW, PRIVATE_FILE)
        try:
            _restrict_fd(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    return open(path, mode, opener=opener, **kwargs)  # noqa: SIM115


def create_private_file(path: str | os.PathLike[str]) -> bool:
    """Create `path` empty and 0600 unless it exists; True if this call created it.

    For files another library then opens with its own mode (SQLite creates a
    new database 0644 less the umask, and its -wal, -shm and -journal files
    with the database file's mode).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE)  # whatever the umask
    finally:
        os.close(fd)
    return True


def make_private_tree(top: str | os.PathLike[str]) -> list[str]:
    """Take group and other bits off `top` and everything under it; returns what changed.

    Only our own entries are changed (not another user's), symlinks are
    neither changed nor followed (`top` itself may be one: the user chose
    it), and what vanishes meanwhile is skipped. The owner's bits stay.
    """
    top = os.fspath(top)
    changed: list[str] = []
    if not os.path.isdir(top):
        return changed
    if _restrict(top):
        changed.append(top)
    for root, dirs, files in os.walk(top, followlinks=False):
        for name in dirs + files:
            path = os.path.join(root, name)
            if _restrict(path, follow=False):
                changed.append(path)
    return changed


def make_private_paths(paths: list[str]) -> list[str]:
    """Take group and other bits off each of `paths` that exists and is ours (not
    following a symlink); returns what changed."""
    return [path for path in paths if _restrict(path, follow=False)]


def is_private_mode(mode: int) -> bool:
    """Whether neither group nor others have any bit of `mode`."""
    return not stat.S_IMODE(mode) & PRIVATE_UMASK


def _restrict(path: str, *, follow: bool = True) -> bool:
    """Clear group/other bits of `path` if it is ours; True if it changed."""
    try:
        info = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
        return False
    if is_private_mode(info.st_mode):
        return False
    mode = stat.S_IMODE(info.st_mode) & PRIVATE_DIR
    try:
        if follow:
            os.chmod(path, mode)
        else:
            _chmod_no_follow(path, mode)
    except FileNotFoundError:
        return False
    return True


def _chmod_no_follow(path: str, mode: int) -> None:
    """chmod that never follows a symlink at `path` (one swapped in since the lstat)."""
    try:
        # glibc does this for anything but a symlink, which it refuses
        os.chmod(path, mode, follow_symlinks=False)
    except NotImplementedError:
        if not os.path.islink(path):  # a platform without it at all
            os.chmod(path, mode)


def _restrict_fd(fd: int) -> None:
    info = os.fstat(fd)
    if info.st_uid == os.geteuid() and not is_private_mode(info.st_mode):
        os.fchmod(fd, stat.S_IMODE(info.st_mode) & PRIVATE_DIR)
