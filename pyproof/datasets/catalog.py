"""The dataset catalog: named datasets and their files, in one SQLite file.

One catalog file per daemon (or lite sandbox), shared by every process on
the host: WAL mode, a bounded busy timeout, and every change in one
`BEGIN IMMEDIATE` transaction, so concurrent writers serialize and a process
killed mid-write leaves the last committed state (SQLite's journal, not a
rewritten file). The schema is versioned with `PRAGMA user_version`.

A `Catalog` acts for one identity (`user`, `group`): bare names resolve in
`/group/user/`, and a name there that does not exist is looked up in
`/COMMON/COMMON/`. Anyone may read any dataset; changes are allowed in one's
own area only, and in COMMON and to quotas with `admin=True`.

One `Catalog` object per thread (it holds one SQLite connection); close it,
or use it as a context manager.
"""

from __future__ import annotations

import builtins
import contextlib
import difflib
import getpass
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from pyproof import sandbox
from pyproof.datasets.errors import (
    BadFilesError,
    CatalogError,
    CatalogFullError,
    DatasetExistsError,
    DatasetNameError,
    DatasetNotFoundError,
    DatasetPermissionError,
    FriendMismatchError,
    QuotaExceededError,
    SourceError,
)
from pyproof.datasets.names import (
    COMMON,
    DatasetName,
    DatasetRef,
    DatasetSpec,
    EntrySelection,
    parse_name,
    parse_pattern,
    parse_ref,
    parse_spec,
)
from pyproof.datasets.records import (
    Dataset,
    DatasetInfo,
    Element,
    FileRecord,
    QuotaInfo,
    Resolution,
    SkippedFile,
)
from pyproof.datasets.resolve import BadFiles, Selection, elements_for
from pyproof.datasets.sources import expand, host_of, local_path, read_list_file

SCHEMA_VERSION = 2
AVERAGE_FILE_SIZE = 50_000_000
"""Bytes counted toward a quota for a file of unknown size (PROOF's default, 50 MB)."""

_SCHEMA = (
    """CREATE TABLE datasets (
        id INTEGER PRIMARY KEY,
        grp TEXT NOT NULL,
        usr TEXT NOT NULL,
        name TEXT NOT NULL,
        default_tree TEXT,
        owner TEXT NOT NULL,
        created REAL NOT NULL,
        modified REAL NOT NULL,
        UNIQUE (grp, usr, name)
    )""",
    """CREATE TABLE files (
        dataset_id INTEGER NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        url TEXT NOT NULL,
        tree TEXT,
        entries INTEGER,
        size INTEGER,
        checksum TEXT,
        uuid TEXT,
        host TEXT,
        staged INTEGER NOT NULL DEFAULT 0,
        missing INTEGER NOT NULL DEFAULT 0,
        corrupt INTEGER NOT NULL DEFAULT 0,
        wrong_tree INTEGER NOT NULL DEFAULT 0,
        friend_mismatch INTEGER NOT NULL DEFAULT 0,
        problem TEXT,
        verified_at REAL,
        trees TEXT NOT NULL DEFAULT '[]',
        friend_url TEXT,
        friend_tree TEXT,
        friend_entries INTEGER,
        PRIMARY KEY (dataset_id, idx),
        UNIQUE (dataset_id, url)
    ) WITHOUT ROWID""",
    "CREATE TABLE quotas (grp TEXT PRIMARY KEY, bytes INTEGER NOT NULL)",
    *(_V2 := (
        # a dataset registered from a coffea fileset: the name the user gave it (what
        # `ctx.dataset` says) and the fileset's metadata (`ctx.metadata`), as JSON
        """CREATE TABLE IF NOT EXISTS fileset_metadata (
            dataset_id INTEGER PRIMARY KEY REFERENCES datasets (id) ON DELETE CASCADE,
            label TEXT NOT NULL,
            metadata TEXT NOT NULL
        )""",
    )),
)

_FILE_COLUMNS = (
    "url", "tree", "entries", "size", "checksum", "uuid", "host", "staged", "missing",
    "corrupt", "wrong_tree", "friend_mismatch", "problem", "verified_at", "trees",
    "friend_url", "friend_tree", "friend_entries",
)
_BOOL_COLUMNS = frozenset({"staged", "missing", "corrupt", "wrong_tree", "friend_mismatch"})

_INFO_SELECT = """
    SELECT d.id, d.grp, d.usr, d.name, d.default_tree, d.owner, d.created, d.modified,
        COUNT(f.idx),
        COALESCE(SUM(f.staged), 0),
        COALESCE(SUM(f.missing OR f.corrupt OR f.wrong_tree OR f.friend_mismatch), 0),
        COALESCE(SUM(f.idx IS NOT NULL AND f.verified_at IS NULL), 0),
        COALESCE(SUM(f.size), 0),
        COALESCE(SUM(f.entries), 0)
    FROM datasets d LEFT JOIN files f ON f.dataset_id = d.id
"""


def _to_row(record: FileRecord) -> tuple[Any, ...]:
    values = []
    for column in _FILE_COLUMNS:
        value = getattr(record, column)
        if column in _BOOL_COLUMNS:
            value = int(value)
        elif column == "trees":
            value = json.dumps([list(t) for t in value])
        values.append(value)
    return tuple(values)


def _from_row(row: Sequence[Any]) -> FileRecord:
    fields = dict(zip(_FILE_COLUMNS, row, strict=True))
    for column in _BOOL_COLUMNS:
        fields[column] = bool(fields[column])
    fields["trees"] = tuple((str(t), int(n)) for t, n in json.loads(fields["trees"]))
    return FileRecord(**fields)


def _info(row: Sequence[Any]) -> DatasetInfo:
    return DatasetInfo(
        name=DatasetName(group=row[1], user=row[2], name=row[3]),
        default_tree=row[4],
        owner=row[5],
        created=row[6],
        modified=row[7],
        n_files=row[8],
        n_staged=row[9],
        n_bad=row[10],
        n_unverified=row[11],
        total_size=row[12],
        total_entries=row[13],
    )


def _disk_full(err: sqlite3.Error) -> bool:
    """SQLITE_FULL: "database or disk is full" (the filesystem, or a size limit)."""
    return getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "nobody"


def _make_private(path: str) -> None:
    """A new catalog file is created 0600 (SQLite then gives its -wal, -shm and
    -journal files the same mode); one in the sandbox that an older version left
    readable by others is made private, with the sandbox itself. A catalog placed
    elsewhere keeps the mode its owner gave it."""
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    with contextlib.suppress(OSError):  # no such directory: SQLite says so, naming it
        sandbox.create_private_file(path)
    home = sandbox.sandbox_dir()
    if sandbox.is_inside(path, home):
        sandbox.make_private_dir(home)
        sandbox.make_private_paths([path + suffix for suffix in ("", "-wal", "-shm", "-journal")])


class Catalog:
    """The dataset catalog in the SQLite file `path` (created 0600 if absent).

    `user` and `group` are the caller's identity (defaults: the login name
    and 'default'); `admin` allows changing COMMON and quotas. `host` is the
    storage node recorded for local files (default: this host's name).
    `timeout` bounds every wait for another process's write (seconds).
    `clock` gives the time stamps (Unix seconds).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        user: str | None = None,
        group: str = "default",
        admin: bool = False,
        host: str | None = None,
        average_file_size: int = AVERAGE_FILE_SIZE,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = os.fspath(path)
        self.user = user or _default_user()
        self.group = group
        parse_name(f"/{self.group}/{self.user}/x", group=group, user=self.user)
        self.admin = admin
        self.host = host or socket.gethostname()
        self.average_file_size = average_file_size
        self.timeout = timeout
        self._clock = clock
        _make_private(self.path)
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as err:
            raise CatalogError(f"cannot open catalog {self.path!r}: {err}") from None
        try:
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._init_schema()
        except sqlite3.OperationalError as err:
            self._conn.close()
            if _disk_full(err):
                raise CatalogFullError(self.path, str(err)) from None
            raise
        except BaseException:
            self._conn.close()
            raise

    # ---- plumbing ------------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> float:
        return self._clock()

    @contextmanager
    def _transaction(self, mode: str) -> Iterator[sqlite3.Connection]:
        try:
            self._conn.execute(f"BEGIN {mode}")
        except sqlite3.OperationalError as err:
            raise self._busy(err) from None
        try:
            yield self._conn
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, sqlite3.OperationalError) and _disk_full(exc):
                raise CatalogFullError(self.path, str(exc)) from None
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.OperationalError as err:
            self._rollback()
            if _disk_full(err):
                raise CatalogFullError(self.path, str(err)) from None
            raise self._busy(err) from None

    def _rollback(self) -> None:
        # SQLite may have rolled back already (it does after some I/O errors)
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _write(self) -> Any:
        return self._transaction("IMMEDIATE")

    def _read(self) -> Any:
        return self._transaction("DEFERRED")

    def _busy(self, err: sqlite3.OperationalError) -> CatalogError:
        return CatalogError(
            f"catalog {self.path!r} is busy: {err} (waited up to {self.timeout:g} s)"
        )

    def _init_schema(self) -> None:
        if self._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {self.path!r} has schema version {version}, newer than this "
                    f"pyproof's ({SCHEMA_VERSION}); upgrade pyproof"
                )
            # version 1 catalogs lack only the fileset metadata table
            for statement in _SCHEMA if version == 0 else _V2:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # ---- names and permissions ---------------------------------------------------------

    def name(self, text: str) -> DatasetName:
        """The full name of `text` for this catalog's user (no lookup)."""
        return parse_name(text, group=self.group, user=self.user)

    def check_may_change(self, name: str) -> None:
        """Raise DatasetPermissionError unless this identity may change dataset `name`."""
        self._check_may_change(self.name(name))

    def _check_may_change(self, name: DatasetName) -> None:
        if self.admin or (name.group, name.user) == (self.group, self.user):
            return
        raise DatasetPermissionError(
            f"user {self.user!r} of group {self.group!r} may not change {name.path!r}: only "
            f"datasets under /{self.group}/{self.user}/ can be changed (and "
            f"/{COMMON}/{COMMON}/ by an admin)"
        )

    def _find(self, conn: sqlite3.Connection, name: DatasetName) -> tuple[Any, ...] | None:
        row = conn.execute(
            "SELECT id, grp, usr, name, default_tree FROM datasets "
            "WHERE grp = ? AND usr = ? AND name = ?",
            (name.group, name.user, name.name),
        ).fetchone()
        if row is None and (name.group, name.user) == (self.group, self.user):
            row = conn.execute(
                "SELECT id, grp, usr, name, default_tree FROM datasets "
                "WHERE grp = ? AND usr = ? AND name = ?",
                (COMMON, COMMON, name.name),
            ).fetchone()
        return row

    def _get(self, conn: sqlite3.Connection, name: DatasetName) -> tuple[Any, ...]:
        row = self._find(conn, name)
        if row is None:
            raise self._not_found(conn, name)
        return row

    def _not_found(self, conn: sqlite3.Connection, name: DatasetName) -> DatasetNotFoundError:
        # rank by the last component (paths share long prefixes), own area first on ties
        scored = []
        for group, user, last in conn.execute("SELECT grp, usr, name FROM datasets"):
            ratio = difflib.SequenceMatcher(None, name.name, last).ratio()
            if ratio >= 0.6:
                other_area = (group, user) != (name.group, name.user)
                scored.append((-ratio, other_area, f"/{group}/{user}/{last}"))
        close = [path for _, _, path in sorted(scored)]
        return DatasetNotFoundError(name.path, tuple(close[:3]))

    def _info_of(self, conn: sqlite3.Connection, dataset_id: int) -> DatasetInfo:
        row = conn.execute(_INFO_SELECT + " WHERE d.id = ? GROUP BY d.id", (dataset_id,))
        return _info(row.fetchone())

    def _files_of(self, conn: sqlite3.Connection, dataset_id: int) -> tuple[FileRecord, ...]:
        rows = conn.execute(
            f"SELECT {', '.join(_FILE_COLUMNS)} FROM files WHERE dataset_id = ? ORDER BY idx",
            (dataset_id,),
        )
        return tuple(_from_row(r) for r in rows)

    # ---- reading -----------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        with self._read() as conn:
            return self._find(conn, self.name(name)) is not None

    def info(self, name: str) -> DatasetInfo:
        """A dataset's summary. Raises DatasetNotFoundError."""
        with self._read() as conn:
            return self._info_of(conn, self._get(conn, self.name(name))[0])

    def show(self, name: str) -> Dataset:
        """A dataset's summary and its files in order. Raises DatasetNotFoundError."""
        with self._read() as conn:
            dataset_id = self._get(conn, self.name(name))[0]
            return Dataset(
                info=self._info_of(conn, dataset_id), files=self._files_of(conn, dataset_id)
            )

    def list(self, pattern: str = "") -> list[DatasetInfo]:
        """Datasets matching a pattern with `*` wildcards (see `names.parse_pattern`).

        The empty pattern lists the caller's own area; '/' lists everything.
        """
        parsed = parse_pattern(pattern, group=self.group, user=self.user)
        with self._read() as conn:
            rows = conn.execute(
                _INFO_SELECT
                + " WHERE d.grp GLOB ? AND d.usr GLOB ? AND d.name GLOB ?"
                " GROUP BY d.id ORDER BY d.grp, d.usr, d.name",
                (parsed.group, parsed.user, parsed.name),
            ).fetchall()
        return [_info(r) for r in rows]

    # ---- registering -------------------------------------------------------------------

    def register(
        self,
        name: str,
        files: Iterable[str | FileRecord] = (),
        *,
        tree: str | None = None,
        list_file: str | os.PathLike[str] | None = None,
        from_dataset: str | None = None,
        overwrite: bool = False,
        update: bool = False,
        trust: bool = False,
        verify: bool = False,
        map: Callable[..., Iterator[FileRecord]] = builtins.map,
        metadata: dict[str, Any] | None = None,
    ) -> DatasetInfo:
        """Register dataset `name` (`name#tree` sets its default tree, as `tree=` does).

        Files come from `files` (paths, URLs, local globs, FileRecords), a
        text file list (`list_file`, see `sources`) and another dataset
        (`from_dataset`, copied with its metadata), in that order; duplicate
        URLs are dropped (the first kept). Without `trust`, given metadata is
        reset to the URL, tree, host and friend, and local files get their
        size (a local file that does not exist is marked missing).
        `overwrite` replaces an existing dataset; `update` adds the files it
        does not hold yet (creating the dataset if absent); neither, and the
        name exists: DatasetExistsError.
        `verify` verifies the new files first (with the map-like `map`).
        `metadata` (a coffea fileset's, JSON-able) is kept with the dataset: a
        query over it then sees `ctx.dataset` = the short name, `ctx.metadata` it.
        Raises FriendMismatchError (known entry counts of a file and its
        associated file differ), QuotaExceededError, DatasetPermissionError,
        SourceError; on any error nothing is changed.
        """
        if overwrite and update:
            raise ValueError("register with overwrite=True or update=True, not both")
        ref = parse_ref(name, group=self.group, user=self.user)
        if ref.entries is not None:
            raise DatasetNameError(
                name, f"?entries={ref.entries}",
                "a registered dataset holds whole files; select entries when processing",
            )
        target = ref.name
        tree = tree or ref.tree
        self._check_may_change(target)

        records = [self._prepare(r, trust) for r in expand(files)]
        if list_file is not None:
            records += [self._prepare(r, trust) for r in read_list_file(list_file)]
        if from_dataset is not None:
            source = self.show(from_dataset)
            tree = tree or source.info.default_tree
            records += [
                replace(r, tree=r.tree or source.info.default_tree) for r in source.files
            ]
        unique: dict[str, FileRecord] = {}
        for record in records:
            unique.setdefault(record.url, record)
        records = list(unique.values())
        if not records and not update:
            raise SourceError(
                f"nothing to register as {target.path!r}: give paths, globs, a file list or "
                "a dataset to copy"
            )
        if verify:
            from pyproof.datasets.verify import verify_records

            held = self._urls(target) if update else set()
            fresh = [r for r in records if r.url not in held]
            checked = dict(
                zip(
                    [r.url for r in fresh],
                    verify_records(fresh, tree, map=map, now=self.now()),
                    strict=True,
                )
            )
            records = [checked.get(r.url, r) for r in records]
        for record in records:
            self._check_friend(record, tree)

        try:
            meta_text = None if metadata is None else json.dumps(metadata, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise SourceError(f"metadata of dataset {target.path!r} is not JSON: {exc}") from None
        now = self.now()
        with self._write() as conn:
            row = conn.execute(
                "SELECT id FROM datasets WHERE grp = ? AND usr = ? AND name = ?",
                (target.group, target.user, target.name),
            ).fetchone()
            if row is not None and not (overwrite or update):
                raise DatasetExistsError(target.path)
            old_files: tuple[FileRecord, ...] = ()
            if row is None:
                dataset_id = conn.execute(
                    "INSERT INTO datasets (grp, usr, name, default_tree, owner, created, "
                    "modified) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (target.group, target.user, target.name, tree, self.user, now, now),
                ).lastrowid
                assert dataset_id is not None
            else:
                dataset_id = row[0]
                old_files = self._files_of(conn, dataset_id)
                conn.execute(
                    "UPDATE datasets SET modified = ?, default_tree = COALESCE(?, default_tree)"
                    " WHERE id = ?",
                    (now, tree, dataset_id),
                )
            if overwrite:
                removed = old_files
                conn.execute("DELETE FROM files WHERE dataset_id = ?", (dataset_id,))
                start = 0
            else:
                removed = ()
                held = {f.url for f in old_files}
                records = [r for r in records if r.url not in held]
                start = len(old_files)
            self._check_quota(conn, target, added=records, removed=removed)
            self._insert_files(conn, dataset_id, start, records)
            if metadata is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO fileset_metadata (dataset_id, label, metadata) "
                    "VALUES (?, ?, ?)", (dataset_id, target.name, meta_text))
            return self._info_of(conn, dataset_id)

    def register_fileset(
        self,
        fileset: dict[str, Any],
        *,
        overwrite: bool = False,
        update: bool = False,
        trust: bool = False,
        verify: bool = False,
        map: Callable[..., Iterator[FileRecord]] = builtins.map,
    ) -> list[DatasetInfo]:
        """Register each dataset of a coffea fileset under its name, metadata kept.

        `{"ttbar": {"files": {"a.root": "Events"}, "metadata": {...}}}` (or
        `{"ttbar": ["a.root:Events"]}`) registers dataset `ttbar` in this
        user's area; processing it by name gives `ctx.dataset == "ttbar"` and
        `ctx.metadata` the fileset's metadata. Every name is checked before any
        is registered (a DatasetExistsError leaves the catalog unchanged).
        """
        from pyproof.filesets import parse_fileset

        parsed = parse_fileset(fileset)
        by_name: dict[str, list[FileRecord]] = {name: [] for name in fileset}
        for path, tree, name in parsed.names:
            assert isinstance(path, str) and isinstance(name, str)
            by_name[name].append(FileRecord(url=path, tree=tree))
        if not (overwrite or update):
            for name in by_name:
                if self.exists(name):
                    raise DatasetExistsError(self.name(name).path)
        return [self.register(name, records, overwrite=overwrite, update=update, trust=trust,
                              verify=verify, map=map, metadata=parsed.metadata.get(name, {}))
                for name, records in by_name.items()]

    def fileset_metadata(self, name: str) -> dict[str, Any] | None:
        """The fileset metadata a dataset was registered with (None: not from a fileset)."""
        with self._read() as conn:
            dataset_id = self._get(conn, self.name(name))[0]
            row = conn.execute("SELECT metadata FROM fileset_metadata WHERE dataset_id = ?",
                               (dataset_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def _prepare(self, record: FileRecord, trust: bool) -> FileRecord:
        if not trust:
            record = FileRecord(
                url=record.url, tree=record.tree, host=record.host,
                friend_url=record.friend_url, friend_tree=record.friend_tree,
            )
        if record.host is None:
            record = replace(record, host=host_of(record.url, self.host))
        path = local_path(record.url)
        if path is not None and record.size is None:
            try:
                record = replace(record, size=os.stat(path).st_size)
            except FileNotFoundError:
                if not trust:
                    record = replace(record, missing=True, problem="no such file")
            except OSError:
                pass
        return record

    def _check_friend(self, record: FileRecord, default_tree: str | None) -> None:
        if not record.has_friend:
            return
        tree = record.tree or default_tree or "?"
        friend_url = record.friend_url or record.url
        friend_tree = record.friend_tree or tree
        if (
            record.entries is not None
            and record.friend_entries is not None
            and record.entries != record.friend_entries
        ):
            raise FriendMismatchError(
                record.url, tree, record.entries, friend_url, friend_tree, record.friend_entries
            )

    def _urls(self, name: DatasetName) -> set[str]:
        with self._read() as conn:
            row = self._find(conn, name)
            if row is None:
                return set()
            return {r[0] for r in conn.execute(
                "SELECT url FROM files WHERE dataset_id = ?", (row[0],)
            )}

    def _insert_files(
        self, conn: sqlite3.Connection, dataset_id: int, start: int,
        records: Sequence[FileRecord],
    ) -> None:
        conn.executemany(
            f"INSERT INTO files (dataset_id, idx, {', '.join(_FILE_COLUMNS)}) "
            f"VALUES (?, ?, {', '.join('?' * len(_FILE_COLUMNS))})",
            ((dataset_id, start + i, *_to_row(r)) for i, r in enumerate(records)),
        )

    def _bytes(self, records: Iterable[FileRecord]) -> int:
        return sum(self.average_file_size if r.size is None else r.size for r in records)

    def _group_usage(self, conn: sqlite3.Connection, group: str) -> int:
        row = conn.execute(
            "SELECT COALESCE(SUM(COALESCE(f.size, ?)), 0) FROM files f "
            "JOIN datasets d ON d.id = f.dataset_id WHERE d.grp = ?",
            (self.average_file_size, group),
        ).fetchone()
        return int(row[0])

    def _check_quota(
        self, conn: sqlite3.Connection, target: DatasetName,
        added: Sequence[FileRecord], removed: Sequence[FileRecord],
    ) -> None:
        row = conn.execute("SELECT bytes FROM quotas WHERE grp = ?", (target.group,)).fetchone()
        if row is None:
            return
        needed = self._bytes(added) - self._bytes(removed)
        used = self._group_usage(conn, target.group)
        if needed > 0 and used + needed > row[0]:
            raise QuotaExceededError(target.path, target.group, needed, used, row[0])

    # ---- changing ----------------------------------------------------------------------

    def remove(self, name: str) -> DatasetInfo:
        """Remove a dataset (the catalog entry only; files are not touched)."""
        target = self.name(name)
        with self._write() as conn:
            row = self._get(conn, target)
            found = DatasetName(group=row[1], user=row[2], name=row[3])
            self._check_may_change(found)
            info = self._info_of(conn, row[0])
            conn.execute("DELETE FROM files WHERE dataset_id = ?", (row[0],))
            conn.execute("DELETE FROM datasets WHERE id = ?", (row[0],))
            return info

    def set_default_tree(self, name: str, tree: str | None) -> DatasetInfo:
        target = self.name(name)
        with self._write() as conn:
            row = self._get(conn, target)
            self._check_may_change(DatasetName(group=row[1], user=row[2], name=row[3]))
            conn.execute(
                "UPDATE datasets SET default_tree = ?, modified = ? WHERE id = ?",
                (tree, self.now(), row[0]),
            )
            return self._info_of(conn, row[0])

    def record_verification(self, name: str, results: Iterable[FileRecord]) -> DatasetInfo:
        """Store verification results: each replaces the metadata of the file with its URL.

        Results for URLs the dataset no longer holds are ignored.
        """
        target = self.name(name)
        columns = [c for c in _FILE_COLUMNS if c != "url"]
        assignments = ", ".join(f"{c} = ?" for c in columns)
        with self._write() as conn:
            row = self._get(conn, target)
            self._check_may_change(DatasetName(group=row[1], user=row[2], name=row[3]))
            conn.executemany(
                f"UPDATE files SET {assignments} WHERE dataset_id = ? AND url = ?",
                ((*_to_row(r)[1:], row[0], r.url) for r in results),
            )
            conn.execute("UPDATE datasets SET modified = ? WHERE id = ?", (self.now(), row[0]))
            return self._info_of(conn, row[0])

    # ---- quotas ------------------------------------------------------------------------

    def set_quota(self, group: str, limit: int | None) -> QuotaInfo:
        """Set (bytes) or clear (None) a group's quota. Needs admin."""
        parse_name(f"/{group}/{COMMON if group == COMMON else 'x'}/x", group=group, user="x")
        if not self.admin:
            raise DatasetPermissionError(
                f"user {self.user!r} may not set quotas: an admin catalog is needed"
            )
        if limit is not None and limit < 0:
            raise ValueError(f"a quota is a number of bytes >= 0, not {limit}")
        with self._write() as conn:
            if limit is None:
                conn.execute("DELETE FROM quotas WHERE grp = ?", (group,))
            else:
                conn.execute(
                    "INSERT INTO quotas (grp, bytes) VALUES (?, ?) "
                    "ON CONFLICT (grp) DO UPDATE SET bytes = excluded.bytes",
                    (group, limit),
                )
            return QuotaInfo(group=group, limit=limit, used=self._group_usage(conn, group))

    def quota(self, group: str | None = None) -> QuotaInfo:
        """A group's quota and usage (default: the caller's group)."""
        group = group or self.group
        with self._read() as conn:
            row = conn.execute("SELECT bytes FROM quotas WHERE grp = ?", (group,)).fetchone()
            return QuotaInfo(
                group=group, limit=None if row is None else row[0],
                used=self._group_usage(conn, group),
            )

    def quotas(self) -> list[QuotaInfo]:
        """Every group with a quota or a dataset, sorted by name."""
        with self._read() as conn:
            groups = {r[0] for r in conn.execute("SELECT grp FROM quotas")}
            groups |= {r[0] for r in conn.execute("SELECT DISTINCT grp FROM datasets")}
        return [self.quota(g) for g in sorted(groups)]

    # ---- resolving ---------------------------------------------------------------------

    def resolve(
        self,
        spec: str | DatasetSpec | Sequence[str | DatasetRef],
        *,
        sequential: bool = False,
        entries: object = None,
        bad_files: BadFiles = "fail",
    ) -> Resolution:
        """The elements the master processes for a dataset spec, in order.

        `spec` is text (`a`, `a|b` union, `a,b` sequential, with `#tree` and
        `?entries=`), a parsed DatasetSpec, or a list of names/refs joined as
        a union (or in sequence with `sequential=True`). `entries` (text,
        range, (start, stop), list of entry numbers or EntrySelection)
        selects entries of a spec naming one dataset. Bad files (marked
        missing, corrupt, wrong tree or mismatched friend by verification)
        fail the call with BadFilesError naming them all, or with
        `bad_files="skip"` are left out and listed in `Resolution.skipped`.
        All datasets are read in one consistent snapshot.
        """
        parsed = self._spec(spec, sequential)
        if entries is not None:
            if len(parsed.refs) != 1:
                raise ValueError("entries= selects entries of one dataset; use name?entries=")
            ref = parsed.refs[0]
            if ref.entries is not None:
                raise ValueError(f"{str(ref)!r} selects entries already; drop entries=")
            parsed = DatasetSpec(
                parts=((replace(ref, entries=EntrySelection.coerce(entries)),),)
            )
        elements: list[Element] = []
        skipped: list[SkippedFile] = []
        parts: list[tuple[str, ...]] = []
        with self._read() as conn:
            for number, part in enumerate(parsed.parts):
                names = []
                for ref in part:
                    row = self._get(conn, ref.name)
                    path = f"/{row[1]}/{row[2]}/{row[3]}"
                    names.append(path)
                    labelled = conn.execute(
                        "SELECT label, metadata FROM fileset_metadata WHERE dataset_id = ?",
                        (row[0],)).fetchone()
                    selection = Selection(
                        dataset=path, default_tree=row[4], files=self._files_of(conn, row[0]),
                        tree=ref.tree, entries=ref.entries, part=number,
                        label=None if labelled is None else labelled[0],
                        metadata=None if labelled is None else json.loads(labelled[1]),
                    )
                    found, bad = elements_for(selection)
                    elements += found
                    skipped += bad
                parts.append(tuple(names))
        if skipped and bad_files == "fail":
            raise BadFilesError(tuple((s.url, s.reason) for s in skipped))
        return Resolution(
            spec=str(parsed), parts=tuple(parts), elements=tuple(elements),
            skipped=tuple(skipped),
        )

    def _spec(
        self, spec: str | DatasetSpec | Sequence[str | DatasetRef], sequential: bool
    ) -> DatasetSpec:
        if isinstance(spec, DatasetSpec):
            return spec
        if isinstance(spec, str):
            return parse_spec(spec, group=self.group, user=self.user)
        parts: list[tuple[DatasetRef, ...]] = []
        for item in spec:
            if isinstance(item, DatasetRef):
                parts.append((item,))
            else:
                parts.extend(parse_spec(item, group=self.group, user=self.user).parts)
        if not parts:
            raise ValueError("no dataset given")
        if sequential:
            return DatasetSpec(parts=tuple(parts))
        for item in spec:
            if isinstance(item, str) and "," in item:
                raise ValueError(
                    f"{item!r} is sequential (','); in a union list pass sequential=True "
                    "or give one spec string"
                )
        return DatasetSpec(parts=(tuple(ref for p in parts for ref in p),))
