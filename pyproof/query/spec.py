"""`QuerySpec`: what one query asks for, as one frozen dataclass (the one schema).

The client builds it, `to_wire()` encodes it once (plain CBOR-able lists and
maps), the gateway calls `QuerySpec.from_wire` (the only validation: types,
exactly one input, ranges, shapes), and the master, worker loop and worker
read it as attributes. The master adds `output_dir` itself with
`dataclasses.replace`; a client may not set it (it chooses where workers write).
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.errors import InputError

ON_MISSING = ("fail", "skip")
DEFAULT_FEEDBACK_INTERVAL = 1.0
MIN_FEEDBACK_INTERVAL = 0.05
DEFAULT_MAX_OUTPUT_BYTES = 1 << 30
"""1 GiB per output object, unless the query says otherwise (see pyproof.merging.sizes)."""


class SpecError(InputError):
    """A query spec is malformed; the message names the field and what it must be.

    Raised by `QuerySpec.from_wire` (the gateway answers it as an error frame)
    and by `QuerySpec.validate` in the client before anything is sent.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class QuerySpec:
    """One query: selector (by reference, with its code and hash), input, range, options.

    Exactly one input: `dataset` (files as `(path, tree)` pairs), `dataset_spec`
    (a catalog spec string), `cycles` (CPU work) or `files` (a per-file task).
    `feedback` names outputs sent to the client merged every `feedback_interval`
    seconds while the query runs.
    """

    selector: str
    client_address: str = ""
    dataset: tuple[tuple[str, str | None], ...] | None = None
    dataset_spec: str | None = None
    cycles: int | None = None
    files: tuple[tuple[str, str | None], ...] | None = None
    entries: int | None = None
    first: int = 0
    inputs: dict[str, Any] = field(default_factory=dict)
    branches: tuple[str, ...] | None = None
    concatenate: tuple[str, ...] = ()
    packetizer: str | None = None
    packetizer_params: dict[str, Any] | None = None
    sys_path: tuple[str, ...] = ()
    selector_hash: str | None = None
    selector_sources: tuple[tuple[str | None, str, str], ...] | None = None
    on_missing: str = "fail"
    packet_timeout: float | None = None
    max_output_bytes: int | None = DEFAULT_MAX_OUTPUT_BYTES
    """The cap on each output object's size (merging/sizes.py); None: no cap."""
    output_dataset: str | None = None
    output_overwrite: bool = False
    feedback: tuple[str, ...] = ()
    feedback_interval: float = DEFAULT_FEEDBACK_INTERVAL
    schema: str | None = None
    """Events as NanoEvents records ("nanoaod", or "module:Class" of a coffea schema)."""
    fileset: dict[str, Any] | None = None
    """A coffea fileset's dataset names and metadata (see pyproof.filesets)."""
    output_dir: str = ""
    """Set by the master (never by a client): where selectors' ctx.output_file paths go."""
    packages: tuple[dict[str, Any], ...] = ()
    """Set by the gateway (never by a client): the session's enabled packages, fixed for
    this query's lifetime (see pyproof.packages)."""

    def __post_init__(self) -> None:
        self.validate()

    # -- the one validation ---------------------------------------------------------------
    def validate(self) -> None:
        """Raise SpecError naming the first bad field; called on every construction."""
        for name, kinds in _KINDS.items():
            value = getattr(self, name)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise SpecError(f"query field {name!r} has the wrong type "
                                f"({type(value).__name__})")
        given = [k for k in ("dataset", "dataset_spec", "cycles", "files")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise SpecError("a query needs exactly one of 'dataset', 'dataset_spec', 'cycles' "
                            "and 'files'")
        if self.on_missing not in ON_MISSING:
            raise SpecError("'on_missing' must be 'fail' or 'skip'")
        for item in (self.dataset or ()) + (self.files or ()):
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                    and isinstance(item[1], str | None)):
                raise SpecError(f"dataset element {_shown(item)!r} must be [path, tree]")
        for item in self.selector_sources or ():
            if not (isinstance(item, tuple) and len(item) == 3
                    and isinstance(item[0], str | None) and isinstance(item[1], str)
                    and isinstance(item[2], str)):
                raise SpecError("selector_sources element must be [module, path, source]")
        for name in ("branches", "concatenate", "sys_path", "feedback"):
            if not all(isinstance(x, str) for x in getattr(self, name) or ()):
                raise SpecError(f"query field {name!r} must be a list of strings")
        if self.cycles is not None and self.cycles < 0:
            raise SpecError("'cycles' must not be negative")
        if self.first < 0 or (self.entries or 0) < 0:
            raise SpecError("'first' and 'entries' must not be negative")
        if self.feedback_interval < MIN_FEEDBACK_INTERVAL:
            raise SpecError(f"'feedback_interval' must be at least {MIN_FEEDBACK_INTERVAL} s, "
                            f"got {self.feedback_interval}")
        if self.packet_timeout is not None and self.packet_timeout <= 0:
            raise SpecError("'packet_timeout' must be positive (or None: no limit)")
        if self.max_output_bytes is not None and self.max_output_bytes <= 0:
            raise SpecError("'max_output_bytes' must be positive (or None: no cap)")

    # -- the wire -------------------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        """Plain lists and maps (CBOR), without the daemon-only `output_dir` and `packages`."""
        wire: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in _DAEMON_FIELDS:
                continue
            value = getattr(self, f.name)
            wire[f.name] = _plain(value)
        return wire

    @classmethod
    def from_wire(cls, data: Any) -> QuerySpec:
        """The spec a client sent, checked (SpecError names the field): the gateway's call."""
        if not isinstance(data, dict):
            raise SpecError("query spec must be a map")
        unknown = set(data) - set(_WIRE_FIELDS)
        if unknown:
            raise SpecError(f"unknown query field(s): {', '.join(sorted(map(str, unknown)))}")
        for name in ("selector",):
            if name not in data:
                raise SpecError(f"missing query field {name!r}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if value is None and name in _DEFAULT_IF_NONE:
                continue
            values[name] = _freeze(name, value)
        try:
            return cls(**values)
        except TypeError as exc:  # a required field given as None, and the like
            raise SpecError(f"query spec is malformed: {exc}") from None

    def with_output_dir(self, path: str) -> QuerySpec:
        return dataclasses.replace(self, output_dir=path)

    def with_packages(self, packages: list[dict[str, Any]]) -> QuerySpec:
        return dataclasses.replace(self, packages=tuple(dict(p) for p in packages))


_KINDS: dict[str, tuple[type, ...]] = {
    "selector": (str,), "client_address": (str,),
    "dataset": (tuple, type(None)), "dataset_spec": (str, type(None)),
    "cycles": (int, type(None)), "files": (tuple, type(None)),
    "entries": (int, type(None)), "first": (int,), "inputs": (dict,),
    "branches": (tuple, type(None)), "concatenate": (tuple,),
    "packetizer": (str, type(None)), "packetizer_params": (dict, type(None)),
    "sys_path": (tuple,), "selector_hash": (str, type(None)),
    "selector_sources": (tuple, type(None)), "on_missing": (str,),
    "packet_timeout": (int, float, type(None)), "max_output_bytes": (int, type(None)),
    "output_dataset": (str, type(None)),
    "output_overwrite": (bool,), "feedback": (tuple,), "feedback_interval": (int, float),
    "schema": (str, type(None)), "fileset": (dict, type(None)),
    "output_dir": (str,), "packages": (tuple,),
}
# set on the daemon's side only: a client that sends one is refused as an unknown field
_DAEMON_FIELDS = ("output_dir", "packages")
_WIRE_FIELDS = tuple(name for name in _KINDS if name not in _DAEMON_FIELDS)
# older clients send None for these; the default means the same
_DEFAULT_IF_NONE = ("first", "inputs", "concatenate", "sys_path", "on_missing", "feedback",
                    "feedback_interval", "output_overwrite", "client_address")
_NESTED = ("dataset", "files", "selector_sources")


def _freeze(name: str, value: Any) -> Any:
    """Wire lists as the tuples the dataclass holds (nested for pairs and triples)."""
    if isinstance(value, list):
        if name in _NESTED:
            return tuple(tuple(x) if isinstance(x, list) else x for x in value)
        return tuple(value)
    return value


def _shown(item: Any) -> Any:
    return list(item) if isinstance(item, tuple) else item


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(x) for x in value]
    return value
