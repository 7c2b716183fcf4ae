"""Where the files of a registration come from: paths, globs, text file lists.

Local paths become absolute (workers may run elsewhere in the tree);
`file://` URLs become local paths; `root://`, `http://` and `https://` URLs
are kept as written, for uproot. A local path with `*`, `?` or `[` is a glob,
expanded in sorted order; a glob that matches nothing is an error.

A file list has one file per line; blank lines and lines starting with `#`
are ignored. After the URL, `key=value` words may give metadata (kept only
when registering with trust): `tree`, `entries`, `size`, `checksum`, `uuid`,
`host`, `friend` (the associated file's URL), `friend_tree`, `friend_entries`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from pyproof.datasets.errors import SourceError
from pyproof.datasets.records import FileRecord

REMOTE_SCHEMES = ("root", "roots", "http", "https")
LIST_KEYS = {
    "tree": str,
    "entries": int,
    "size": int,
    "checksum": str,
    "uuid": str,
    "host": str,
    "friend": str,
    "friend_tree": str,
    "friend_entries": int,
}


def is_remote(url: str) -> bool:
    return urlsplit(url).scheme in REMOTE_SCHEMES


def local_path(url: str) -> str | None:
    """The local path a URL names (plain path or `file://`), or None if it is remote."""
    if is_remote(url):
        return None
    if url.startswith("file://"):
        return urlsplit(url).path
    return url


def normalize_url(url: str) -> str:
    """A local path made absolute and normalised; a remote URL unchanged."""
    path = local_path(url)
    if path is None:
        return url
    return os.path.abspath(os.path.expanduser(path))


def host_of(url: str, local_host: str) -> str:
    """The storage node of a file: the URL's host, or `local_host` for a local path."""
    if is_remote(url):
        return urlsplit(url).hostname or local_host
    return local_host


def expand(sources: Iterable[str | FileRecord]) -> list[FileRecord]:
    """FileRecords from paths, URLs, local globs or records (records pass through)."""
    out: list[FileRecord] = []
    for source in sources:
        if isinstance(source, FileRecord):
            friend = source.friend_url
            out.append(
                replace(
                    source,
                    url=normalize_url(source.url),
                    friend_url=None if friend is None else normalize_url(friend),
                )
            )
            continue
        if not isinstance(source, str) or not source:
            raise SourceError(f"a file to register must be a path, URL or FileRecord: {source!r}")
        path = local_path(source)
        if path is not None and glob.has_magic(path):
            matches = sorted(glob.glob(os.path.expanduser(path)))
            if not matches:
                raise SourceError(f"glob {source!r} matched no file")
            out.extend(FileRecord(url=normalize_url(m)) for m in matches)
        else:
            out.append(FileRecord(url=normalize_url(source)))
    return out


def read_list_file(path: str | os.PathLike[str]) -> list[FileRecord]:
    """The files named in a text file list (see the module docstring)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise SourceError(f"cannot read file list {os.fspath(path)!r}: {err.strerror}") from None
    records = []
    base = os.path.dirname(os.path.abspath(path))
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        url, fields = words[0], {}
        for word in words[1:]:
            key, eq, value = word.partition("=")
            if not eq or key not in LIST_KEYS:
                raise SourceError(
                    f"{os.fspath(path)}:{number}: {word!r} is not key=value with a key among "
                    f"{', '.join(LIST_KEYS)}"
                )
            try:
                fields[key] = LIST_KEYS[key](value)
            except ValueError:
                raise SourceError(
                    f"{os.fspath(path)}:{number}: {key} must be a whole number, not {value!r}"
                ) from None
        if "friend" in fields:
            fields["friend_url"] = _relative_to(base, fields.pop("friend"))
        for record in expand([_relative_to(base, url)]):
            records.extend(expand([replace(record, **fields)]))
    return records


def _relative_to(base: str, url: str) -> str:
    """Relative local paths in a list file are relative to the list file's directory."""
    path = local_path(url)
    if path is None or os.path.isabs(os.path.expanduser(path)) or url.startswith("file://"):
        return url
    return os.path.join(base, path)
