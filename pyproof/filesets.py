"""coffea's fileset forms, as pyproof datasets with short names and metadata.

A fileset is a dict of dataset name -> files, in either of coffea's forms:

    {"ttbar": ["a.root", "b.root:Events"]}
    {"ttbar": {"files": {"a.root": "Events"}, "metadata": {"xsec": 831.8},
               "treename": "Events"}}

`parse_fileset` turns one into the [[path, tree], ...] list a query runs
over, plus the name of the dataset of each file (what `ctx.dataset` says on
a worker: the user's short name) and each dataset's metadata (`ctx.metadata`;
`events.metadata` with a schema). Pure: no files are opened here.
"""

from __future__ import annotations

import os
from dataclasses import field
from typing import Any

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.errors import InputError


@dataclass(frozen=True, slots=True, kw_only=True)
class Fileset:
    """A parsed fileset: the files to run over and what the workers say about each."""

    elements: list[list[str | None]]                      # [[path, tree], ...]
    names: list[list[str | None]] = field(default_factory=list)  # [[path, tree, name], ...]
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"names": self.names, "metadata": self.metadata}


def is_fileset(dataset: Any) -> bool:
    """A dict of name -> list of files or name -> {"files": ...}: coffea's fileset forms.

    A `{path: tree}` dict (tree a string or None) is not one.
    """
    return isinstance(dataset, dict) and bool(dataset) and all(
        isinstance(v, list | tuple | dict) for v in dataset.values())


def absolute(path: str) -> str:
    """A local path made absolute (the workers' working directory differs); URLs as given."""
    return path if "://" in path else os.path.abspath(path)


def parse_fileset(fileset: dict[str, Any], *, default_tree: str | None = None) -> Fileset:
    """The files, their dataset names and metadata of a coffea fileset.

    Files given without a tree take the entry's "treename", else `default_tree`.
    """
    from pyproof.datasets.sources import split_file_tree

    elements: list[list[str | None]] = []
    names: list[list[str | None]] = []
    metadata: dict[str, dict[str, Any]] = {}
    seen: dict[tuple[str, str | None], str] = {}
    for name, entry in fileset.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"fileset key {name!r}: a dataset name must be a non-empty string")
        tree_default = default_tree
        if isinstance(entry, dict):
            unknown = set(entry) - {"files", "metadata", "treename", "preload"}
            if "files" not in entry or unknown:
                raise InputError(
                    f"fileset entry {name!r} must be a list of files or a dict with 'files' "
                    "(and optionally 'metadata', 'treename')"
                    + (f"; unknown keys: {', '.join(sorted(map(str, unknown)))}"
                       if unknown else ""))
            meta = entry.get("metadata") or {}
            if not isinstance(meta, dict):
                raise InputError(f"fileset entry {name!r}: 'metadata' must be a dict")
            metadata[name] = dict(meta)
            tree_default = entry.get("treename") or default_tree
            files = entry["files"]
        else:
            metadata[name] = {}
            files = entry
        if isinstance(files, dict):
            pairs = [(os.fspath(p), t or tree_default) for p, t in files.items()]
        elif isinstance(files, list | tuple):
            pairs = []
            for f in files:
                path, tree = split_file_tree(os.fspath(f))
                pairs.append((path, tree or tree_default))
        else:
            raise InputError(f"fileset entry {name!r}: 'files' must be a list of paths or a "
                             f"dict of path -> tree, not {type(files).__name__}")
        for path, tree in pairs:
            key = (absolute(path), tree)
            if key in seen:
                raise InputError(f"file {path} (tree {tree}) is in datasets {seen[key]!r} and "
                                 f"{name!r} of the fileset: give each file to one dataset")
            seen[key] = name
            elements.append([key[0], tree])
            names.append([key[0], tree, name])
    return Fileset(elements=elements, names=names, metadata=metadata)


def read_fileset(path: str) -> dict[str, Any]:
    """A coffea fileset from a JSON file (`--fileset fileset.json`), checked as `process` does."""
    import json

    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as exc:
        raise InputError(f"cannot read fileset {path}: {exc.strerror}; give the path of a "
                         "JSON file") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"fileset {path} is not valid JSON: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}") from None
    if not is_fileset(data):
        raise InputError(f"fileset {path} must be a JSON object of dataset name -> list of "
                         "files (or -> {\"files\": {path: tree}, \"metadata\": {...}})")
    parse_fileset(data)  # its errors, now, with the file named by the caller
    return data


def names_by_file(wire: dict[str, Any] | None) -> dict[tuple[str, str | None], str]:
    """(path, tree) -> dataset name, from `Fileset.to_wire()` (on a worker)."""
    if not wire:
        return {}
    return {(p, t): n for p, t, n in wire.get("names") or []}
