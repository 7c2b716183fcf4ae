"""What a query returns: merged outputs, statistics and lineage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    lookups_catalog: files whose entries the catalog gave (none opened)."""

    entries: int
    bytes_read: int
    wall_time: float
    packets: int
    workers: dict[str, WorkerStats] = field(default_factory=dict)
    lookups_opened: int = 0
    lookups_cached: int = 0
    lookups_catalog: int = 0

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
                   lookups_catalog=int(data.get("lookups_catalog", 0)))


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
