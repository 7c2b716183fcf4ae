"""The user's analysis code: the `Selector` base class, its `Context`, and by-name loading.

Workers never unpickle code: a selector travels as a reference string,
`"package.module:Class"` or `"/path/to/file.py:Class"`, and each worker
imports it. `selector_ref` turns a class into such a string on the client
and checks that a fresh interpreter could import it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from pyproof.errors import ProofError


class SelectorError(ProofError):
    """The selector cannot be found or loaded; the message says which and why."""


class Selector:
    """Subclass this and override `begin`, `process` and `terminate`.

    - `branches`: the branch names each packet reads (None: all branches).
    - `concatenate`: names of numpy-array outputs merged by concatenation
      instead of elementwise addition.
    - `begin(ctx)` runs on each worker before its first packet of a query
      (and again if the worker's outputs were flushed mid-query, because lost
      work came back to it): create the outputs in `ctx.outputs` there.
    - `process(events, ctx)` runs once per packet, with an awkward array of
      the packet's entries (or a `range` of cycle numbers for CPU tasks).
    - `terminate(outputs)` runs once on the client after the merge; whatever
      it returns (if not None) replaces the outputs.
    """

    branches: list[str] | None = None
    concatenate: tuple[str, ...] = ()

    def begin(self, ctx: Context) -> None:
        pass

    def process(self, events: Any, ctx: Context) -> None:
        raise NotImplementedError(f"{type(self).__name__}.process is not implemented")

    def terminate(self, outputs: dict[str, Any]) -> dict[str, Any] | None:
        return None


@dataclass(slots=True, kw_only=True)
class Context:
    """What a selector sees on a worker: inputs, its outputs and where it is."""

    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    worker: str = ""
    query: str = ""
    session: str = ""
    # set per packet
    dataset: str | None = None  # the cataloged dataset the packet belongs to
    file: str | None = None
    tree: str | None = None
    entry_start: int = 0
    entry_stop: int = 0
    # set by the worker: this batch's directory for ctx.output_file, and what it handed out
    output_dir: str = ""
    written: list[str] = field(default_factory=list)

    def output_file(self, name: str) -> str:
        """A fresh path for a file the selector writes here (e.g. skimmed events with uproot).

        Each call returns a new path ending in `name` (made unique if needed), in
        a directory of this worker's current batch of packets under the query's
        output directory (`$PYPROOF_SANDBOX/outputs/<session>/<query>/`). Write
        and close the file within the same `process` (or `begin`) call. The
        file is kept only if the outputs of the packets it came with are
        accepted (exactly once); with `process(..., output_dataset=NAME)` the
        kept files are registered as dataset NAME.
        """
        if not isinstance(name, str) or not name or os.path.basename(name) != name or name in (
                ".", ".."):
            raise ValueError(f"ctx.output_file({name!r}): give a plain file name such as "
                             "'skim.root' (no directories)")
        if not self.output_dir:
            raise RuntimeError("ctx.output_file(...) works on a worker of a query only")
        os.makedirs(self.output_dir, exist_ok=True)
        stem, suffix = os.path.splitext(name)
        path, n = os.path.join(self.output_dir, name), 0
        while path in self.written or os.path.exists(path):
            n += 1
            path = os.path.join(self.output_dir, f"{stem}-{n}{suffix}")
        self.written.append(path)
        return path


def selector_ref(selector: type | str) -> str:
    """The reference string workers import `selector` by."""
    if isinstance(selector, str):
        if ":" not in selector:
            raise SelectorError(
                f"selector {selector!r} must be 'module:Class' or 'path/to/file.py:Class'"
            )
        module, _, name = selector.rpartition(":")
        if module.endswith(".py"):
            return f"{os.path.abspath(module)}:{name}"
        return selector
    if not (isinstance(selector, type) and issubclass(selector, Selector)):
        raise SelectorError(f"{selector!r} is not a subclass of pyproof.Selector")
    qualname = selector.__qualname__
    if "<locals>" in qualname:
        raise SelectorError(
            f"selector {qualname} is defined inside a function; define it at module level "
            "so workers can import it by name"
        )
    module = sys.modules.get(selector.__module__)
    path = getattr(module, "__file__", None)
    if selector.__module__ != "__main__" and _importable_by_name(selector.__module__, path):
        return f"{selector.__module__}:{qualname}"
    if path is None:
        raise SelectorError(
            f"selector {qualname} comes from {selector.__module__!r}, which has no file "
            "(interactive session?); put it in a .py file and pass 'file.py:Class'"
        )
    return f"{os.path.abspath(path)}:{qualname}"


def _importable_by_name(module_name: str, path: str | None) -> bool:
    """True when a worker with the client's sys.path finds the same module file."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return False
    if spec is None or spec.origin is None or path is None:
        return False
    return os.path.abspath(spec.origin) == os.path.abspath(path)


def load_selector(ref: str) -> type[Selector]:
    """Import the selector class named by `ref` (a `selector_ref` string)."""
    module_part, sep, qualname = ref.rpartition(":")
    if not sep or not module_part or not qualname:
        raise SelectorError(f"selector {ref!r} must be 'module:Class' or 'path/to/file.py:Class'")
    try:
        if module_part.endswith(".py"):
            module = _import_file(module_part)
        else:
            module = importlib.import_module(module_part)
    except SelectorError:
        raise
    except Exception as exc:
        raise SelectorError(f"cannot import selector module {module_part!r}: {exc!r}") from exc
    obj: Any = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = sorted(n for n in dir(module) if not n.startswith("_"))
            raise SelectorError(
                f"module {module_part!r} has no selector {qualname!r} (it has: {', '.join(names)})"
            ) from None
    if not (isinstance(obj, type) and issubclass(obj, Selector)):
        raise SelectorError(f"{ref!r} is not a subclass of pyproof.Selector")
    return obj


def _import_file(path: str):
    if not os.path.isfile(path):
        raise SelectorError(f"selector file {path!r} does not exist")
    digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
    name = f"pyproof_selector_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SelectorError(f"cannot import selector file {path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module

