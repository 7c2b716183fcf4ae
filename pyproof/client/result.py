"""What a query returns: merged outputs, statistics and lineage; `save` and `load` keep one.

A saved result is a file users can keep (and read without a cluster): the
codec's own CBOR, so whatever a query can return round-trips (hist.Hist,
numpy arrays, ak.Array, sets, Counters):

    MAGIC (16 bytes) | header length (4 bytes, big-endian) | header | body

`header` is a CBOR map `{"format": FORMAT, "pyproof": version, "saved": unix
time}`; `body` one CBOR item `{"query", "outputs", "stats", "lineage"}`. A
reader refuses a format newer than its own (the header says which pyproof
wrote it).
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pyproof.errors import InputError

MAGIC = b"\x89pyproof-result\n"  # 16 bytes: not text, not CBOR, names itself
FORMAT = 1
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStats:
    entries: int
    packets: int
    bytes: int
    busy_seconds: float
    host: str = ""  # the host the worker ran on (its name in the cluster); "" without one


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """entries: entries merged exactly once; bytes_read: bytes uproot requested on the
    workers (opening files and reading tree metadata included, so a tree whose baskets
    live in its metadata does not read as 0);
    wall_time: seconds from query start on the master to the merged result;
    lookups_opened: files the master opened to count entries or check branches;
    lookups_cached: files it knew unchanged from an earlier query of the session;
    lookups_catalog: files whose entries the catalog gave (none opened);
    packet_batches: answers that granted a worker several short packets at once."""

    entries: int
    bytes_read: int
    wall_time: float
    packets: int
    workers: dict[str, WorkerStats] = field(default_factory=dict)
    lookups_opened: int = 0
    lookups_cached: int = 0
    lookups_catalog: int = 0
    packet_batches: int = 0

    @property
    def events_per_second(self) -> float:
        return self.entries / self.wall_time if self.wall_time > 0 else 0.0

    @classmethod
    def from_wire(cls, data: dict[str, Any], host: str = "") -> Stats:
        """`host`: the master's host (in a cluster), where workers not named worker-N@HOST
        run."""
        return cls(entries=int(data["entries"]), bytes_read=int(data["bytes_read"]),
                   wall_time=float(data["wall_time"]), packets=int(data["packets"]),
                   workers={w: WorkerStats(**s, host=w.partition("@")[2] or host)
                            for w, s in data.get("workers", {}).items()},
                   lookups_opened=int(data.get("lookups_opened", 0)),
                   lookups_cached=int(data.get("lookups_cached", 0)),
                   lookups_catalog=int(data.get("lookups_catalog", 0)),
                   packet_batches=int(data.get("packet_batches", 0)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    query: str
    outputs: dict[str, Any]
    stats: Stats
    lineage: dict[str, Any]

    @property
    def missing(self) -> list[dict[str, Any]]:
        """Files left out because they could not be read (on_missing='skip'), and why."""
        return list(self.lineage.get("missing", []))

    @property
    def output_files(self) -> list[str]:
        """Files the selector wrote on the workers (ctx.output_file), each entry once."""
        return list(self.lineage.get("output_files") or [])

    @property
    def output_file_hosts(self) -> list[tuple[str, str]]:
        """(host, path) of each output file: files written on a cluster's other hosts stay
        there; the host is "" without a cluster."""
        hosts = list(self.lineage.get("output_file_hosts") or [])
        files = self.output_files
        return list(zip(hosts + [""] * (len(files) - len(hosts)), files, strict=True))

    @property
    def output_dataset(self) -> str | None:
        """The dataset the output files were registered as (process(output_dataset=...))."""
        registered = self.lineage.get("output_dataset")
        return registered["name"] if registered else None

    @property
    def stopped(self) -> bool:
        """The query was stopped (`handle.stop()`, Ctrl-C): the outputs cover `covered` only."""
        return bool(self.lineage.get("stopped"))

    @property
    def covered(self) -> list[dict[str, Any]]:
        """A stopped query's merged entry ranges ({file, tree, entry_start, entry_stop}), each
        entry once: its outputs equal a sequential loop over exactly these ranges."""
        return list(self.lineage.get("covered") or [])

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write this result to `path` (replaced atomically); `pyproof.load(path)` reads it.

        Raises InputError if an output cannot be saved (the codec names which) or
        the file cannot be written.
        """
        from pyproof.transport import codec

        path = os.fspath(path)
        stats = asdict(self.stats)
        try:
            body = codec.encode({"query": self.query, "outputs": self.outputs,
                                 "stats": stats, "lineage": self.lineage})
        except codec.EncodeError as exc:
            raise InputError(f"cannot save the result of query {self.query} to {path}: "
                             f"{exc}") from None
        header = codec.encode({"format": FORMAT, "pyproof": _version(), "saved": time.time()})
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(MAGIC + _LENGTH.pack(len(header)) + header + body)
            os.replace(tmp, path)
        except OSError as exc:
            with _quiet():
                os.remove(tmp)
            raise InputError(f"cannot save the result of query {self.query} to {path}: "
                             f"{exc.strerror}") from None
        return path


def load(path: str | os.PathLike[str]) -> Result:
    """A result saved by `Result.save`, with its outputs, stats and lineage.

    Raises InputError naming the file if it is not a saved result, is cut
    short, or was written in a newer format than this pyproof reads.
    """
    from pyproof.transport import codec

    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InputError(f"cannot load a result from {path}: {exc.strerror}") from None
    if not data.startswith(MAGIC):
        raise InputError(f"{path} is not a saved pyproof result (no pyproof header); "
                         "write one with result.save(path)")
    start = len(MAGIC) + _LENGTH.size
    try:
        (length,) = _LENGTH.unpack_from(data, len(MAGIC))
        header = codec.decode(data[start:start + length], max_size=len(data))
        if not isinstance(header, dict) or not isinstance(header.get("format"), int):
            raise codec.ProtocolError("header without a format")
        if header["format"] > FORMAT:
            raise InputError(
                f"{path} was saved in result format {header['format']} by pyproof "
                f"{header.get('pyproof')}; this pyproof ({_version()}) reads format "
                f"{FORMAT} and older: upgrade pyproof")
        body = codec.decode(data[start + length:], max_size=len(data))
        stats = dict(body["stats"])
        workers = {w: WorkerStats(**s) for w, s in stats.pop("workers").items()}
        return Result(query=body["query"], outputs=body["outputs"],
                      stats=Stats(**stats, workers=workers), lineage=body["lineage"])
    except (struct.error, codec.ProtocolError, KeyError, TypeError) as exc:
        raise InputError(f"{path} is a damaged pyproof result (cut short or altered: "
                         f"{exc})") from None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyproof")
    except PackageNotFoundError:
        return "unknown"


def _quiet() -> Any:
    import contextlib

    return contextlib.suppress(OSError)
