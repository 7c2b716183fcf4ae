"""Packages: code and data shipped to every worker of a session, by content hash.

Layers (bottom up):
- `zips`: pure-ish: build a package (directory, zip or wheel) into a canonical
  zip with a content hash; check a zip from anyone (no absolute paths, no
  `..`, no links, size caps against zip bombs) and unpack it atomically;
- `store`: the per-user host cache under the sandbox (`packages/<user>/`):
  versions by hash, uploads in chunks, each session's enabled packages,
  dependencies, least-recently-used eviction; safe for many daemons at once;
- `service`: the gateway's side: control requests `package_*` and the list of
  packages a query runs with (resolved when the query starts, never mid-query);
- `activate`: the worker's side: `sys.path`, fresh modules for a new version,
  setup hooks (`pyproof_setup.py`, once per worker process);
- `client`: uploads from a client or proofctl (no bytes when the host has it);
- `interactive`: a selector defined in `__main__` (a notebook cell, `python -`)
  travels as source, or else pickled by value (unpickled by workers only);
- `cli`: `proofctl packages ls|upload|enable|disable|rm|clear`.
"""

from pyproof.packages.errors import PackageError

__all__ = ["PackageError"]
