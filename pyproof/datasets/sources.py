"""Where the files of a registration come from: paths, globs, text file lists.

Every path or URL given as text may name its tree as `file.root:tree`; the
one parser of that syntax is `split_file_tree` (used by `Catalog.register`,
`proofctl ds register`, `session.process(dataset=...)` and `proofctl run
--dataset`), and `names_catalog` decides whether a dataset string names
files or catalog datasets.

Local paths become absolute (workers may run elsewhere in the tree);
`file://` URLs become local paths; `root://`, `http://` and `https://` URLs
are kept as written, for uproot. A local path with `*`, `?` or `[` is a glob,
expanded in sorted order; a glob that matches nothing is an error.

A file list has one file per line; blank lines and lines starting with `#`
are ignored. After the URL, `key=value` words may give metadata (kept only
when registering with trust): `tree`, `entries`, `size`, `checksum`, `uuid`,
`host`, `friend` (the associated file's URL), `friend_tree`, `friend_entries`.
The URL may be written `file.root:tree` instead of giving `tree=`.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from pyproof.datasets.errors import DatasetNameError, SourceError
from pyproof.datasets.names import parse_spec
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


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+://")
"""A URL's `scheme://`; two letters at least, so a drive `C:` is never a scheme."""
_OBJECT_PATH = re.compile(r"[^/\\:?#*\s]+(?:/[^/\\:?#*\s]+)*")
"""`tree` or `dir/tree` (a `;cycle` suffix allowed): no ':', '\\', '?', '#', '*' or spaces."""
_ENDS_LIKE_A_FILE = re.compile(r"[^/\\]\.[A-Za-z0-9_]+\Z")
"""The last component of a path has a suffix: `a.root`, `b.ROOT`, `c.root.1`."""


def split_file_tree(text: str) -> tuple[str, str | None]:
    """`"file.root:tree"` as `("file.root", "tree")`; text naming no tree as `(text, None)`.

    The rule (uproot's, made stricter so that no path is cut wrongly): split
    at the last ':' only when what follows is an object path (`tree` or
    `dir/tree`, optionally `;cycle`: no ':', '\\', '?', '#', '*' or space)
    and what precedes ends like a file (its last component has a suffix,
    such as `.root`). In a URL only the part after `scheme://host[:port]` is
    considered, so `root://host:1094//a.root:events` gives
    `("root://host:1094//a.root", "events")` and `root://host:1094` is not
    split. A Windows drive is never split off (`C:\\a.root`, `C:a.root`:
    no tree), and a directory with a colon (`/d/x:y/a.root`) is not either.
    A file with no suffix cannot name its tree this way: give `{path: tree}`
    or `tree=` instead. Nothing is lost: `join_file_tree(*split_file_tree(t))
    == t` for every text `t`. Pure: no file is looked at.
    """
    head_length = 0
    scheme = _SCHEME.match(text)
    if scheme is not None:
        slash = text.find("/", scheme.end())
        if slash < 0:
            return text, None  # no path after the host: nothing to split
        head_length = slash
    colon = text.rfind(":", head_length)
    if colon < 0:
        return text, None
    path, tree = text[:colon], text[colon + 1:]
    if not _OBJECT_PATH.fullmatch(tree) or not _ENDS_LIKE_A_FILE.search(path[head_length:]):
        return text, None
    return path, tree


def join_file_tree(path: str, tree: str | None) -> str:
    """The text `split_file_tree` reads back as `(path, tree)`: `path:tree`, or `path`."""
    return path if tree is None else f"{path}:{tree}"


def names_catalog(text: str, *, exists: Callable[[str], bool] = os.path.exists) -> bool:
    """Whether a dataset string names catalog datasets (True) or files (False).

    Files win: a URL, a `file.root:tree` (see `split_file_tree`) and a path
    that `exists` are files. Otherwise a string that is a valid dataset spec
    (`name`, `user/name`, `a|b`, `a,b`, `#tree`, `?entries=`) names catalog
    datasets, and anything else is files (which then fail as missing). So a
    name such as `zmumu.root` is read from the catalog unless a file of that
    name exists; the catalog's "no dataset" error then says the file was
    tried too.
    """
    if _SCHEME.match(text):
        return False
    path, tree = split_file_tree(text)
    if tree is not None or exists(os.path.expanduser(path)):
        return False
    try:
        parse_spec(text, group="default", user="nobody")
    except DatasetNameError:
        return False
    return True


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
    """FileRecords from paths, URLs, local globs or records (records pass through).

    A text source may name its tree, `a.root:events` or `data/*.root:events`
    (see `split_file_tree`): the record gets the tree, its URL the file.
    """
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
        url, tree = split_file_tree(source)
        path = local_path(url)
        if path is not None and glob.has_magic(path):
            matches = sorted(glob.glob(os.path.expanduser(path)))
            if not matches:
                raise SourceError(f"glob {url!r} matched no file")
            out.extend(FileRecord(url=normalize_url(m), tree=tree) for m in matches)
        else:
            out.append(FileRecord(url=normalize_url(url), tree=tree))
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
        url, tree = split_file_tree(url)
        if tree is not None and fields.setdefault("tree", tree) != tree:
            raise SourceError(
                f"{os.fspath(path)}:{number}: {words[0]!r} names tree {tree!r} but "
                f"tree={fields['tree']}; give the tree once"
            )
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
