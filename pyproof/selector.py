"""The user's analysis code: the `Selector` base class, its `Context`, and by-name loading.

Workers never unpickle code: a selector travels as a reference string,
`"package.module:Class"` or `"/path/to/file.py:Class"`, and each worker
imports it. `selector_ref` turns a class into such a string on the client
and checks that a fresh interpreter could import it. With the reference goes
the code itself (`selector_code`: the selector's source and the user's own
modules it imports, keyed by their content hash), so a worker runs exactly
what the client had when it submitted, and an edited selector is re-imported.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import linecache
import os
import site
import sys
import sysconfig
import threading
import time
from dataclasses import field
from typing import Any

from pyproof.dataclass import dataclass  # dataclasses.dataclass, cheaper to apply
from pyproof.errors import ProofError
from pyproof.sandbox import make_private_dir


class SelectorError(ProofError):
    """The selector cannot be found or loaded; the message says which and why."""


class Selector:
    """Subclass this and override `begin`, `process` and `terminate`.

    - `branches`: the branch names each packet reads (None: all branches).
    - `concatenate`: names of numpy-array outputs merged by concatenation
      instead of elementwise addition.
    - `schema`: None (flat branches), or "nanoaod" for NanoEvents-style records
      (`events.Muon.pt` from `nMuon`/`Muon_pt`; coffea's NanoAODSchema when
      coffea is installed).
    - `begin(ctx)` runs on each worker before its first packet of a query
      (and again if the worker's outputs were flushed mid-query, because lost
      work came back to it): create the outputs in `ctx.outputs` there.
    - `process(events, ctx)` runs once per packet, with an awkward array of
      the packet's entries (or a `range` of cycle numbers for CPU tasks); a
      large packet once per step of a few MB (`ctx.entry_start`/`entry_stop`
      say which entries, see datasets/steps.py).
      It updates `ctx.outputs` and returns None (a returned value fails the
      query). Numbers are summed over workers: accumulate them
      (`ctx.outputs["n"] += len(events)`), never assign them.
    - `terminate(outputs)` runs once on the client after the merge; whatever
      it returns (if not None) replaces the outputs.
    """

    branches: list[str] | None = None
    concatenate: tuple[str, ...] = ()
    # "nanoaod": events as NanoEvents records (events.Muon.pt), see pyproof.nanoevents
    schema: str | None = None

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
    dataset: str | None = None  # the cataloged dataset (or fileset name) of the packet
    metadata: dict[str, Any] = field(default_factory=dict)  # the fileset's, for that dataset
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
        make_private_dir(self.output_dir)
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


# -- the selector's code, by content --------------------------------------------------------

# files in these are not the user's own: never hashed, sent or re-imported
_NOT_USERS = ("site-packages", "dist-packages")
_SKIPPED_TOP = ("pyproof", "__main__", "__future__")
_MAX_SOURCES = 500  # a selector importing more of the user's files is not an analysis


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectorCode:
    """The code a query runs: the selector's file and the user's own modules it imports.

    `sources` holds `(module, path, source)` triples: module None for a selector
    given by file path (imported under a fresh name), else the name the module is
    imported by. `digest` (sha256 over the ref and the sources) keys the modules
    loaded in a process: new code is imported afresh, the same code only once.
    The client reads it when it submits and sends it with the query, so every
    worker (also one restarted later) runs that code, whatever its disk holds.
    """

    ref: str
    sources: tuple[tuple[str | None, str, str], ...]
    digest: str

    @classmethod
    def of(cls, ref: str, sources: list[tuple[str | None, str, str]]) -> SelectorCode:
        h = hashlib.sha256()
        for part in (ref, *(x for s in sources for x in (s[0] or "", s[1], s[2]))):
            data = part.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
        return cls(ref=ref, sources=tuple(sources), digest=h.hexdigest())

    def to_wire(self) -> list[list[str | None]]:
        return [list(s) for s in self.sources]

    @classmethod
    def from_wire(cls, ref: str, sources: Any, digest: Any) -> SelectorCode:
        """The code a query spec carries; refused if it does not match its digest."""
        if not isinstance(sources, list | tuple) or not all(
                isinstance(s, list | tuple) and len(s) == 3 and isinstance(s[0], str | None)
                and isinstance(s[1], str) and isinstance(s[2], str) for s in sources):
            raise SelectorError(f"selector {ref!r}: its sources must be a list of "
                                "[module, path, source]")
        code = cls.of(ref, [(s[0], s[1], s[2]) for s in sources])
        if digest is not None and digest != code.digest:
            raise SelectorError(f"selector {ref!r}: the sources sent do not match their hash "
                                f"{str(digest)[:16]}... (corrupted on the way?); submit again")
        return code


def selector_code(ref: str, search_path: list[str] | None = None) -> SelectorCode:
    """Read the code `ref` runs as it is on disk now: its file and the user's modules it imports.

    What is read is remembered with the status (mtime, ctime, size, inode) of
    every file read and of every directory the modules were looked up in: while
    none of those changed, the same code is returned without reading and parsing
    again (a few stat calls instead of about 3 ms per submit for a 200-line
    script). A file or directory changed within `_RACY_SECONDS` of the reading
    is never trusted that way (git's "racy clean" rule: a write in the same
    timestamp tick leaves the mtime equal), so an edit is always seen.
    """
    search = [p for p in (sys.path if search_path is None else search_path) if p]
    key = (ref, tuple(search))
    hit = _CODE_CACHE.get(key)
    if hit is not None:
        watched, stamps, code = hit
        if _stamps(watched) == stamps:
            return code
    now_ns = time.time_ns()
    code, watched = _read_selector_code(ref, search)
    stamps = _stamps(watched)
    racy = now_ns - int(_RACY_SECONDS * 1e9)
    if all(s is None or s[0] < racy for s in stamps):  # None: stays missing
        if len(_CODE_CACHE) >= _CODE_CACHE_SIZE:
            _CODE_CACHE.clear()
        _CODE_CACHE[key] = (watched, stamps, code)
    else:
        _CODE_CACHE.pop(key, None)
    return code


_RACY_SECONDS = 2.0
_CODE_CACHE_SIZE = 128
# (ref, search path) -> (watched paths, their stamps, the code read): see selector_code
_CODE_CACHE: dict[tuple[str, tuple[str, ...]], tuple[
    tuple[str, ...], tuple[tuple[int, int, int, int] | None, ...], SelectorCode]] = {}


def _stamps(paths: tuple[str, ...]) -> tuple[tuple[int, int, int, int] | None, ...]:
    """(mtime, ctime, size, inode) of each path; None for one that is not there."""
    out: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _read_selector_code(ref: str, search: list[str]) -> tuple[SelectorCode, tuple[str, ...]]:
    """`selector_code` without its memory: the code, and the paths whose change may change it.

    The selector's file and the user's modules it imports, read now.

    The user's own modules, by a pragmatic rule: every module named in an
    `import` statement of the selector's file (anywhere in it, also inside
    functions), and so on recursively, whose file lies under the selector
    file's directory or the working directory, but not in the Python
    installation (stdlib, site-packages) nor in pyproof. They are located
    along `search_path` (default sys.path; the client passes the sys.path
    workers get) without being imported. Modules imported otherwise
    (`importlib.import_module`, `exec`) are not included, and those of them
    first imported after the selector's module (an `import` inside `process`)
    are re-read then: workers read those from their own disk.
    """
    module_part, _ = _split_ref(ref)
    # a new file in any of these may change what an import finds
    watched = [os.path.abspath(p) for p in search] + [os.getcwd()]
    if module_part.endswith(".py"):
        path = os.path.abspath(module_part)
        if not os.path.isfile(path):
            raise SelectorError(f"selector file {path!r} does not exist")
        root: tuple[str | None, str] = (None, path)
    else:
        found = _module_file(module_part, search)
        if found is None or not _users_own(found, [os.path.dirname(found), os.getcwd()]):
            # installed code: imported as usual, never re-run
            return SelectorCode.of(ref, []), tuple(watched + ([found] if found else []))
        root = (module_part, found)
    user_dirs = [os.path.dirname(root[1]), os.getcwd()]
    sources: list[tuple[str | None, str, str]] = []
    queue, seen = [root], {root[0] or root[1]}
    while queue:
        name, path = queue.pop(0)
        try:
            with open(path, "rb") as f:
                source = importlib.util.decode_source(f.read())
        except (OSError, SyntaxError, UnicodeDecodeError) as exc:
            raise SelectorError(f"cannot read {path!r}, which selector {ref!r} imports: "
                                f"{exc}") from None
        sources.append((name, path, source))
        if len(sources) > _MAX_SOURCES:
            raise SelectorError(f"selector {ref!r} imports more than {_MAX_SOURCES} modules "
                                f"from {user_dirs}; keep libraries outside the analysis "
                                "directory (installed with pip)")
        package = None if name is None else (
            name if os.path.basename(path) == "__init__.py" else name.rpartition(".")[0])
        for imported in _imported_names(source, package):
            if imported in seen or imported.partition(".")[0] in _SKIPPED_TOP:
                continue
            seen.add(imported)
            file = _module_file(imported, search)
            if file is not None and _users_own(file, user_dirs):
                queue.append((imported, file))
    for _, path, _ in sources:
        watched += [path, os.path.dirname(path)]
    return SelectorCode.of(ref, sources), tuple(dict.fromkeys(watched + user_dirs))


def _split_ref(ref: str) -> tuple[str, str]:
    module_part, sep, qualname = ref.rpartition(":")
    if not sep or not module_part or not qualname:
        raise SelectorError(f"selector {ref!r} must be 'module:Class' or 'path/to/file.py:Class'")
    return module_part, qualname


def _imported_names(source: str, package: str | None) -> list[str]:
    """Module names an import statement of `source` may load (parents first)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []  # importing it fails with the real error
    names: list[str] = []

    def add(dotted: str) -> None:
        parts = dotted.split(".")
        names.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if not package:
                    continue
                try:
                    base = importlib.util.resolve_name("." * node.level + base, package)
                except (ImportError, ValueError):
                    continue
            if not base:
                continue
            add(base)
            names.extend(f"{base}.{a.name}" for a in node.names if a.name != "*")
    return names


def _module_file(name: str, search: list[str]) -> str | None:
    """The .py file `name` would be imported from along `search`, without importing anything."""
    locations: Any = search
    spec = None
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        if locations is None:
            return None  # a parent that is a plain module: `name` is an attribute
        try:
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:i]), list(locations))
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        locations = spec.submodule_search_locations
    origin = spec.origin if spec is not None and spec.has_location else None
    return os.path.abspath(origin) if origin and origin.endswith(".py") else None


@functools.cache
def _installed_dirs() -> tuple[str, ...]:
    """Where installed code lives (never the user's own): fixed for the process, so asked
    once (sysconfig's answer costs about a millisecond, on every query's submit)."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
            os.path.dirname(os.path.abspath(__file__))}  # pyproof's own package
    dirs.update(sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib",
                                                           "platlib"))
    try:
        dirs.update(site.getsitepackages())
        dirs.add(site.getusersitepackages())
    except AttributeError:  # site of some virtualenvs
        pass
    return tuple(os.path.realpath(d) for d in dirs if d)


def _within(path: str, directory: str) -> bool:
    try:
        return os.path.commonpath([path, directory]) == directory
    except ValueError:
        return False


def _users_own(path: str, user_dirs: list[str]) -> bool:
    path = os.path.realpath(path)
    if any(part in _NOT_USERS for part in path.split(os.sep)):
        return False
    if any(_within(path, d) for d in _installed_dirs()):
        return False
    return any(_within(path, os.path.realpath(d)) for d in user_dirs)


# -- loading ----------------------------------------------------------------------------------

_LOCK = threading.RLock()
# ref -> (digest, class): the code last loaded for each selector in this process
_LOADED: dict[str, tuple[str, type[Selector]]] = {}
# a file selector's path -> the fresh module name its current code is loaded under
_FRESH_NAMES: dict[str, str] = {}


def load_selector(ref: str, code: SelectorCode | None = None) -> type[Selector]:
    """Import the selector class named by `ref` (a `selector_ref` string), running `code`.

    `code` (default: `selector_code(ref)`, the disk as it is now) decides what
    runs: when it differs from what this process loaded last for `ref`, the
    selector and the user's modules it imports are imported afresh from its
    sources (never from disk or a stale .pyc); the old modules stay alive for
    whoever still holds their classes. Thread-safe: concurrent callers wait
    for one import and get the same class.
    """
    module_part, qualname = _split_ref(ref)
    with _LOCK:
        if code is None:
            code = selector_code(ref)
        loaded = _LOADED.get(ref)
        if loaded is not None and loaded[0] == code.digest:
            return loaded[1]
        try:
            module = _import_code(module_part, code)
        except SelectorError:
            raise
        except SyntaxError as exc:  # where, first: it may be a module the selector imports
            raise SelectorError(
                f"cannot import selector module {module_part!r}: syntax error in "
                f"{exc.filename!r}, line {exc.lineno}: {exc.msg}") from exc
        except Exception as exc:
            raise SelectorError(
                f"cannot import selector module {module_part!r}: {exc!r}") from exc
        cls = _selector_class(module, ref, module_part, qualname)
        _LOADED[ref] = (code.digest, cls)
        return cls


def _selector_class(module: Any, ref: str, module_part: str, qualname: str) -> type[Selector]:
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


def _import_code(module_part: str, code: SelectorCode) -> Any:
    """Import `module_part` with the user's modules run from `code`'s sources (lock held)."""
    modules = {name: (path, source) for name, path, source in code.sources if name}
    for name in modules:  # stale versions: their importers must re-run them
        sys.modules.pop(name, None)
    for _, path, source in code.sources:
        # tracebacks show the lines that ran, not the file as edited since
        linecache.cache[path] = (len(source), None, source.splitlines(True), path)
    finder = _SentModules(modules)
    sys.meta_path.insert(0, finder)
    try:
        if not module_part.endswith(".py"):
            return importlib.import_module(module_part)
        root = [(path, source) for name, path, source in code.sources if name is None]
        if not root:
            raise SelectorError(f"selector file {module_part!r}: no source of it was given")
        path, source = root[0]
        name = f"pyproof_selector_{code.digest[:16]}"
        spec = importlib.util.spec_from_file_location(name, path, loader=_SentSource(source))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # registered before it runs (dataclasses and pickle look modules up by name);
        # other threads wait on _LOCK, so none sees it half-made
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        old = _FRESH_NAMES.get(module_part)
        if old is not None and old != name:
            sys.modules.pop(old, None)
        _FRESH_NAMES[module_part] = name
        return module
    finally:
        sys.meta_path.remove(finder)


class _SentSource(importlib.abc.Loader):
    """Runs a module from a source string: no disk read, no bytecode cache."""

    def __init__(self, source: str) -> None:
        self.source = source

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: Any) -> None:
        exec(compile(self.source, module.__spec__.origin, "exec", dont_inherit=True),
             module.__dict__)

    def get_source(self, name: str) -> str:
        return self.source


class _SentModules(importlib.abc.MetaPathFinder):
    """Finds the user's modules in sent sources, for the thread importing a selector only."""

    def __init__(self, modules: dict[str, tuple[str, str]]) -> None:
        self.modules = modules
        self.thread = threading.get_ident()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        entry = self.modules.get(fullname)
        if entry is None or threading.get_ident() != self.thread:
            return None
        file, source = entry
        package = os.path.basename(file) == "__init__.py"
        return importlib.util.spec_from_file_location(
            fullname, file, loader=_SentSource(source),
            submodule_search_locations=[os.path.dirname(file)] if package else None)


def forget_loaded() -> None:
    """Import every selector afresh next time (the packages on sys.path changed)."""
    with _LOCK:
        _LOADED.clear()
