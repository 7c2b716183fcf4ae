"""NanoEvents-style records for a packet: `events.Muon.pt` from `nMuon`/`Muon_pt` branches.

`schema` names how a packet's entries are given to the selector:

- `"nanoaod"`: with coffea installed, coffea's `NanoAODSchema` (records with
  vector behaviour, cross-references); without it, plain awkward records
  grouped by branch prefix (`group_by_prefix`).
- `"module:Class"` or a coffea schema class given to `process(schema=...)`:
  that coffea schema.

Built per packet from the packet's entry range, on the file the worker has
open (so bytes read are still counted), with coffea's metadata keys
(`dataset`, `filename`, `treename`, `entrystart`, `entrystop`, `fileuuid`)
plus the fileset's metadata.
"""

from __future__ import annotations

import importlib
from typing import Any

import awkward as ak

from pyproof.errors import InputError

NANOAOD = "nanoaod"


def schema_name(schema: Any) -> str | None:
    """The wire form of a schema: "nanoaod", "module:Class", or None."""
    if schema is None:
        return None
    if isinstance(schema, str):
        if schema.lower() == NANOAOD or ":" in schema:
            return schema.lower() if schema.lower() == NANOAOD else schema
        raise InputError(f"schema={schema!r}: use 'nanoaod', a coffea schema class "
                         "(NanoAODSchema) or 'module:Class'")
    if isinstance(schema, type):
        return f"{schema.__module__}:{schema.__qualname__}"
    raise InputError(f"schema={schema!r}: use 'nanoaod', a coffea schema class or 'module:Class'")


def coffea_schema(name: str) -> Any:
    """The coffea schema class `name` stands for, or None ("nanoaod" without coffea)."""
    if name == NANOAOD:
        try:
            from coffea.nanoevents import NanoAODSchema
        except ImportError:
            return None
        return NanoAODSchema
    module, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def group_by_prefix(arrays: ak.Array) -> ak.Array:
    """Flat NanoAOD branches as records: `Muon_pt`, `Muon_eta` (counter `nMuon`) -> `Muon.pt`.

    A prefix with a counter branch `nX` becomes a jagged list of records; other
    `X_y` branches sharing a prefix become a flat record; everything else stays
    a field of its own. Pure awkward: no coffea, no vector behaviour.
    """
    fields = list(arrays.fields)
    groups: dict[str, list[str]] = {}
    for name in fields:
        prefix, sep, rest = name.partition("_")
        if sep and prefix and rest:
            groups.setdefault(prefix, []).append(name)
    out: dict[str, Any] = {}
    grouped: set[str] = set()
    for prefix, members in groups.items():
        if len(members) < 2 and f"n{prefix}" not in fields:
            continue
        record = {m.partition("_")[2]: arrays[m] for m in members}
        depth = 2 if f"n{prefix}" in fields else 1
        try:
            out[prefix] = ak.zip(record, depth_limit=depth, with_name=prefix)
        except ValueError:  # members of different lengths per event: not one collection
            continue
        grouped.update(members)
    for name in fields:
        if name not in grouped and name not in out:
            out[name] = arrays[name]
    return ak.zip(out, depth_limit=1)


def read_events(handle: Any, tree_name: str, start: int, stop: int, *, schema: str,
                metadata: dict[str, Any], branches: list[str] | None) -> Any:
    """A packet's entries as NanoEvents (or grouped records), on the open file `handle`."""
    schema_class = coffea_schema(schema)
    if schema_class is None:
        tree = handle[tree_name]
        arrays = tree.arrays(branches, entry_start=start, entry_stop=stop, library="ak")
        return _with_metadata(group_by_prefix(arrays), metadata)
    from coffea.nanoevents import NanoEventsFactory

    factory = NanoEventsFactory.from_root(
        file=handle, treepath=tree_name, schemaclass=schema_class, metadata=metadata,
        mode="virtual", entry_start=start, entry_stop=stop)
    return factory.events()


class _Events(ak.Array):
    """Grouped records that carry `metadata` as coffea's NanoEvents do."""

    metadata: dict[str, Any] = {}


def _with_metadata(events: ak.Array, metadata: dict[str, Any]) -> ak.Array:
    out = _Events(events)
    out.metadata = metadata
    return out
