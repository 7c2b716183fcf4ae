"""Build packages into canonical zips, and check and unpack zips that anyone may have sent.

A package is a tree of files whose root goes on the workers' `sys.path`: a
directory `mypkg/` becomes the entries `mypkg/...` (so `import mypkg` works
and `importlib.resources.files("mypkg")` finds its data), a zip with one top
directory is taken as it is (a flat zip is put under a directory named after
it), a wheel's entries are its root. The content hash (`digest`) is a sha256
over the sorted (path, content) pairs, not over the zip's bytes: the same
files give the same hash whatever zip library or timestamps made them, and
the receiving side recomputes it while unpacking.

Unpacking trusts nothing: every entry name is checked (no absolute paths,
drive letters, backslashes, `..`, NULs, duplicates), links are refused,
the number of entries and the unpacked size are capped (declared sizes and
the bytes really inflated are both counted: zip bombs), and the tree is
written into a fresh temporary directory that is renamed into place only
when complete, so concurrent unpackers of one package never see half of it.
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass

from pyproof.packages.errors import PackageError
from pyproof.sandbox import make_private_dir, open_private

SETUP_FILE = "pyproof_setup.py"
MAX_ENTRIES = 20_000
MAX_UNPACKED = int(os.environ.get("PYPROOF_PACKAGE_MAX_UNPACKED") or 512 * 1024 * 1024)
MAX_ZIP = int(os.environ.get("PYPROOF_PACKAGE_MAX_SIZE") or 256 * 1024 * 1024)
_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".ipynb_checkpoints", ".mypy_cache",
              ".pytest_cache", ".ruff_cache"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_READ = 1024 * 1024
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Built:
    """A package ready to upload: its name, content hash and canonical zip."""

    name: str
    digest: str
    data: bytes
    files: int


def content_digest(files: list[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for name, data in sorted(files):
        encoded = name.encode("utf-8")
        h.update(len(encoded).to_bytes(8, "little"))
        h.update(encoded)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def check_name(name: str, what: str = "package") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise PackageError(f"{what} name {name!r} is not a Python identifier (letters, digits "
                           "and _, not starting with a digit): name the directory so that "
                           "`import NAME` works")
    return name


def build_package(path: str | os.PathLike[str], name: str | None = None) -> Built:
    """Read a directory, a `.zip` or a `.whl` at `path` into a canonical zip (see module doc)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        name = check_name(name or os.path.basename(path.rstrip(os.sep)))
        files = _read_dir(path, name)
    elif os.path.isfile(path) and path.endswith((".zip", ".whl")):
        with open(path, "rb") as f:
            data = f.read(MAX_ZIP + 1)
        entries = [(e, d) for e, d in safe_entries(data, where=path)
                   if not e.endswith((".pyc", ".pyo"))
                   and not _SKIP_DIRS.intersection(e.split("/")[:-1])]
        if path.endswith(".whl"):
            dist = sorted({e.split("/", 1)[0] for e, _ in entries
                           if e.split("/", 1)[0].endswith(".dist-info")})
            if not dist:
                raise PackageError(f"wheel {path!r} has no .dist-info directory; build it with "
                                   "`pip wheel` or `python -m build`")
            name = check_name(name or dist[0].split("-", 1)[0].replace(".", "_"))
            files = entries
        else:
            tops = {e.split("/", 1)[0] for e, _ in entries}
            if len(tops) == 1 and all("/" in e for e, _ in entries):
                top = tops.pop()
                name = check_name(name or top)
                files = [(f"{name}/{e.split('/', 1)[1]}", d) for e, d in entries]
            else:  # a flat zip: its modules go under a directory named after it
                name = check_name(name or os.path.splitext(os.path.basename(path))[0])
                files = [(f"{name}/{e}", d) for e, d in entries]
    elif os.path.exists(path):
        raise PackageError(f"{path!r} is not a package: give a directory, a .zip or a .whl")
    else:
        raise PackageError(f"package {path!r} does not exist")
    if not files:
        raise PackageError(f"package {path!r} has no files")
    return Built(name=name, digest=content_digest(files), data=_canonical_zip(files),
                 files=len(files))


def _read_dir(root: str, name: str) -> list[tuple[str, bytes]]:
    files: list[tuple[str, bytes]] = []
    total = 0
    for directory, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for entry in [*dirs, *names]:
            full = os.path.join(directory, entry)
            if os.path.islink(full) and not _inside(os.path.realpath(full), root):
                raise PackageError(f"package {name!r}: {full!r} is a link out of the package "
                                   f"(to {os.path.realpath(full)!r}); copy the file in instead")
        for entry in sorted(names):
            full = os.path.join(directory, entry)
            if entry.endswith((".pyc", ".pyo")) or not os.path.isfile(full):
                continue
            with open(full, "rb") as f:
                data = f.read()
            total += len(data)
            if total > MAX_UNPACKED or len(files) >= MAX_ENTRIES:
                raise PackageError(f"package {name!r} at {root!r} is larger than "
                                   f"{MAX_UNPACKED // 2**20} MiB or {MAX_ENTRIES} files; keep "
                                   "large data in files the workers read, not in packages")
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            files.append((f"{name}/{rel}", data))
    return files


def pack_tree(root: str, digest: str, *, where: str) -> bytes:
    """An unpacked package tree (its files, not the bytecode Python wrote there) as the
    canonical zip it was unpacked from; refused unless it still hashes to `digest`."""
    files: list[tuple[str, bytes]] = []
    for directory, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for entry in sorted(names):
            full = os.path.join(directory, entry)
            if entry.endswith((".pyc", ".pyo")) or not os.path.isfile(full) or (
                    os.path.islink(full)):
                continue
            with open(full, "rb") as f:
                files.append((os.path.relpath(full, root).replace(os.sep, "/"), f.read()))
    got = content_digest(files)
    if got != digest:
        raise PackageError(f"{where}: its files changed since it was unpacked (they hash to "
                           f"{got[:16]}...); upload it again")
    return _canonical_zip(files)


def _inside(path: str, root: str) -> bool:
    root = os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


def _canonical_zip(files: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.external_attr = (stat.S_IFREG | 0o600) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return out.getvalue()


# -- checking what anyone sent --------------------------------------------------------------


def check_entry_name(name: str, where: str) -> str:
    """`name` if it is a safe relative path inside the package, else PackageError."""
    bad = None
    if not name or "\x00" in name:
        bad = "an empty name or a NUL"
    elif name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        bad = "an absolute path"
    elif "\\" in name:
        bad = "a backslash"
    elif any(part == ".." for part in name.split("/")):
        bad = "'..'"
    elif any(part in ("", ".") for part in name.rstrip("/").split("/")):
        bad = "an empty or '.' path segment"
    if bad:
        raise PackageError(f"{where}: entry {name!r} has {bad}; a package holds only "
                           "relative paths inside itself (refused, nothing unpacked)")
    return name


def _open_zip(data: bytes, where: str) -> zipfile.ZipFile:
    if len(data) > MAX_ZIP:
        raise PackageError(f"{where}: the zip is larger than {MAX_ZIP // 2**20} MiB "
                           "($PYPROOF_PACKAGE_MAX_SIZE)")
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise PackageError(f"{where}: not a valid zip ({exc})") from None


def _checked_infos(zf: zipfile.ZipFile, where: str) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise PackageError(f"{where}: {len(infos)} entries, more than {MAX_ENTRIES}")
    seen: set[str] = set()
    declared = 0
    files = []
    for info in infos:
        name = check_entry_name(info.filename, where)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise PackageError(f"{where}: entry {name!r} is a symbolic link; links are refused "
                               "(they may point out of the package)")
        key = name.rstrip("/")
        if key in seen:
            raise PackageError(f"{where}: entry {name!r} appears twice")
        seen.add(key)
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise PackageError(f"{where}: entry {name!r} is encrypted")
        declared += info.file_size
        if declared > MAX_UNPACKED:
            raise PackageError(f"{where}: unpacks to more than {MAX_UNPACKED // 2**20} MiB "
                               "($PYPROOF_PACKAGE_MAX_UNPACKED); refused (a zip bomb?)")
        files.append(info)
    # a directory entry that is also a file's parent path is fine; a file that is also a
    # directory ("a" and "a/b") is not
    file_names = {i.filename for i in files}
    for key in seen:
        parent = key.rpartition("/")[0]
        while parent:
            if parent in file_names:
                raise PackageError(f"{where}: {parent!r} is both a file and a directory")
            parent = parent.rpartition("/")[0]
    return files


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int, where: str) -> bytes:
    """The entry's bytes, never more than it declared nor than `budget` (zip bombs)."""
    limit = min(info.file_size, budget)
    chunks, got = [], 0
    try:
        with zf.open(info) as f:
            while True:
                chunk = f.read(min(_READ, limit - got + 1))
                if not chunk:
                    break
                got += len(chunk)
                if got > limit:
                    raise PackageError(f"{where}: entry {info.filename!r} inflates beyond its "
                                       f"declared size or the cap of {MAX_UNPACKED // 2**20} "
                                       "MiB; refused (a zip bomb?)")
                chunks.append(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            NotImplementedError, RuntimeError) as exc:
        raise PackageError(f"{where}: entry {info.filename!r} cannot be read ({exc})") from None
    except Exception as exc:  # zlib.error and friends: corrupt data
        raise PackageError(f"{where}: entry {info.filename!r} is corrupt ({exc})") from None
    return b"".join(chunks)


def safe_entries(data: bytes, *, where: str) -> list[tuple[str, bytes]]:
    """Every file of the zip `data` as (name, bytes), after every check above."""
    with _open_zip(data, where) as zf:
        budget = MAX_UNPACKED
        out = []
        for info in _checked_infos(zf, where):
            content = _read_entry(zf, info, budget, where)
            budget -= len(content)
            out.append((info.filename, content))
        return out


def unpack(data: bytes, final: str, *, digest: str, where: str) -> bool:
    """Check `data` and unpack it at `final` atomically; True if this call unpacked it.

    The content must hash to `digest` (corruption or a lying sender is refused).
    If `final` appears meanwhile (another process unpacked the same package),
    ours is thrown away: the tree at `final` is always whole.
    """
    if os.path.isdir(final):
        return False
    entries = safe_entries(data, where=where)
    got = content_digest(entries)
    if got != digest:
        raise PackageError(f"{where}: its content hashes to {got[:16]}..., not the "
                           f"{digest[:16]}... it was sent as (corrupted on the way?); "
                           "upload it again")
    parent = make_private_dir(os.path.dirname(final))
    tmp = tempfile.mkdtemp(prefix=".unpacking-", dir=parent)
    try:
        for name, content in entries:
            target = os.path.normpath(os.path.join(tmp, *name.split("/")))
            if os.path.commonpath([target, tmp]) != tmp or target == tmp:  # names were checked
                raise PackageError(f"{where}: entry {name!r} leaves the package")
            make_private_dir(os.path.dirname(target))
            with open_private(target, "xb") as f:
                f.write(content)
        try:
            os.rename(tmp, final)
        except OSError:
            if os.path.isdir(final):  # another unpacker won the race: same content
                return False
            raise
        return True
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def read_requires(source: str, where: str) -> list[str]:
    """The `requires = [...]` list of a setup file, read without running it (ast)."""
    try:
        tree = ast.parse(source, filename=where)
    except SyntaxError as exc:
        raise PackageError(f"{where}, line {exc.lineno}: syntax error ({exc.msg})") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "requires" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                value = None
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise PackageError(f"{where}, line {node.lineno}: `requires` must be a literal "
                                   "list of package names, e.g. requires = [\"common\"]")
            return [check_name(v, "required package") for v in value]
    return []


def setup_file(entries: list[tuple[str, bytes]], name: str) -> str | None:
    """The path (inside the package) of its setup hook, if it has one."""
    names = {e for e, _ in entries}
    for candidate in (f"{name}/{SETUP_FILE}", SETUP_FILE):
        if candidate in names:
            return candidate
    return None
