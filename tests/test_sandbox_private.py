"""Private by default: another local user finds nothing readable in a user's sandbox.

Real lite sessions and a real proofd run a query that writes output files
and registers a dataset; then every directory of the sandbox (and of the run
directory) must be 0700 and every file 0600 (or stricter), and `nobody`,
walking it with `setpriv`, must read nothing. A sandbox an older version left
0755/0644 is made private when a cluster starts on it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile

import pytest

import pyproof
from pyproof import sandbox
from pyproof.datasets import Catalog
from pyproof.datasets.cli import default_catalog_path
from tests.conftest import data_file
from tests.daemon_helpers import Daemon

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
as_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                             reason="acting as another user (nobody) needs root and setpriv")

# run as nobody: try to list every directory and read every file it is given
PROBE = """
import json, os, sys
readable = []
for path in json.load(sys.stdin):
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
        readable.append(path)
    except OSError:
        pass
print(json.dumps({"uid": os.getuid(), "readable": readable}))
"""


@pytest.fixture
def home(monkeypatch):
    """A fresh sandbox whose parent everyone may enter (pytest's own tmp is 0700, which
    would hide everything from nobody whatever we do)."""
    holder = tempfile.mkdtemp(prefix="private-sandbox-")
    os.chmod(holder, 0o755)
    path = os.path.join(holder, "sandbox")
    monkeypatch.setenv("PYPROOF_SANDBOX", path)
    monkeypatch.delenv("PYPROOF_CATALOG", raising=False)
    yield path
    shutil.rmtree(holder, ignore_errors=True)


def everything_under(*tops: str) -> list[str]:
    found = []
    for top in tops:
        found.append(top)
        for root, dirs, files in os.walk(top):
            found.extend(os.path.join(root, name) for name in dirs + files)
    return found


def not_private(paths: list[str]) -> list[str]:
    """Directories that are not 0700 and files that are not 0600 or stricter (a socket
    may keep its owner's x bit: it means nothing on one); with their modes."""
    wrong = []
    for path in paths:
        info = os.lstat(path)
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISDIR(info.st_mode):
            ok = mode == 0o700
        elif stat.S_ISSOCK(info.st_mode):
            ok = not mode & 0o077
        else:
            ok = not mode & ~0o600
        if not ok:
            wrong.append(f"{path} {mode:04o}")
    return wrong


def readable_by_nobody(paths: list[str]) -> list[str]:
    done = subprocess.run([*NOBODY, sys.executable, "-I", "-c", PROBE], input=json.dumps(paths),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["uid"] == 65534
    return report["readable"]


def skim(session) -> pyproof.client.result.Result:
    """A query that writes output files on the workers and registers them as a dataset."""
    result = session.process("tests.sample_selectors:Skim",
                             dataset=f"{data_file('uproot-Zmumu.root')}:events",
                             inputs={"cut": 60.0}, packetizer="basic",
                             packetizer_params={"packet_entries": 500},
                             output_dataset="skim", output_overwrite=True, progress=False)
    assert result.output_files and result.output_dataset.endswith("/skim")
    return result


def assert_nothing_shared(home: str, *more: str) -> list[str]:
    paths = everything_under(home, *more)
    assert {"not private": not_private(paths), "nobody reads": readable_by_nobody(paths)} == {
        "not private": [], "nobody reads": []}
    return paths


@as_root
def test_a_lite_sandbox_with_logs_outputs_and_a_catalog_is_the_users_alone(home):
    with pyproof.connect("lite://?workers=2") as session:
        result = skim(session)
        # the client process's own catalog access; open, it keeps its -wal and -shm files
        with session.datasets as catalog:
            assert catalog.show(result.output_dataset).files
            paths = assert_nothing_shared(home, session.cluster.run_dir)
    names = {os.path.basename(p) for p in paths}
    # the walk saw what matters: logs, a selector's files, the catalog and its WAL
    assert {"master.jsonl", "worker-0.jsonl", "daemon.out", "datasets.sqlite",
            "datasets.sqlite-wal", "datasets.sqlite-shm", "secret", "control.ipc"} <= names
    assert any(p.endswith(".root") for p in paths)
    assert any(name.startswith("client-") for name in names)


@as_root
def test_a_proofd_sandbox_run_and_log_directories_are_the_users_alone(home):
    daemon = Daemon()
    try:
        with pyproof.connect(f"{daemon.url}?workers=1") as session:
            skim(session)
            paths = assert_nothing_shared(home)
    finally:
        daemon.stop()
    names = {os.path.basename(p) for p in paths}
    assert {"gateway.jsonl", "ready.json", "secret", "datasets.sqlite", "run", "logs"} <= names
    assert any(p.endswith(".root") for p in paths)
    assert any(p.endswith(".ipc") for p in paths)  # the sessions' sockets in the run directory


def old_sandbox(home: str) -> dict[str, str]:
    """A sandbox as an older version left it: 0755 directories, 0644 files."""
    old = os.umask(0o022)
    try:
        logs = os.path.join(home, "lite", "20240101-000000-1-abc", "logs")
        outputs = os.path.join(home, "outputs", "s1", "q1", "worker-0-1-b0")
        proofd = os.path.join(home, "proofd-1093", "logs")
        for directory in (logs, outputs, proofd):
            os.makedirs(directory)
        files = {"log": os.path.join(logs, "master.jsonl"),
                 "output": os.path.join(outputs, "skim.root"),
                 "proofd": os.path.join(proofd, "gateway.jsonl")}
        for path in files.values():
            with open(path, "w") as f:
                f.write('{"event": "session_opened", "session": "s1"}\n')
        catalog = os.path.join(home, "datasets.sqlite")
        with sqlite3.connect(catalog) as db:
            db.execute("CREATE TABLE t (x)")
        files["catalog"] = catalog
    finally:
        os.umask(old)
    os.chmod(home, 0o755)
    return files


@as_root
def test_a_sandbox_left_readable_by_an_older_version_is_made_private_when_a_cluster_starts(
        home, tmp_path):
    files = old_sandbox(home)
    # not ours to change: another user's file, and what a symlink points to
    theirs = os.path.join(home, "lite", "theirs.txt")
    with open(theirs, "w") as f:
        f.write("x")
    os.chmod(theirs, 0o644)
    os.chown(theirs, 65534, 65534)
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    outside.chmod(0o644)
    os.symlink(outside, os.path.join(home, "outputs", "link"))
    assert sorted(readable_by_nobody(list(files.values()))) == sorted(files.values())

    with pyproof.connect("lite://?workers=1") as session:
        assert session.process("tests.sample_selectors:Cycles", cycles=10,
                               progress=False).stats.entries == 10
    mine = [p for p in everything_under(home) if p != theirs and not os.path.islink(p)]
    assert not_private(mine) == []
    assert readable_by_nobody(everything_under(home)) == []
    assert stat.S_IMODE(os.lstat(theirs).st_mode) == 0o644
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644


# ---- the helpers and the catalog, without a cluster ----------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_catalog_and_its_wal_files_are_private_whatever_the_umask(home, umask_022):
    os.makedirs(home)
    path = default_catalog_path()
    with Catalog(path, user="alice") as catalog:
        catalog.register("one", [data_file("uproot-Zmumu.root")], tree="events")
        made = [path + s for s in ("", "-wal", "-shm")]
        assert not_private(made) == []


def test_an_old_catalog_in_the_sandbox_is_made_private_when_opened(home, umask_022):
    files = old_sandbox(home)
    with Catalog(files["catalog"], user="alice"):
        pass
    assert not_private([home, files["catalog"]]) == []
    assert stat.S_IMODE(os.stat(files["log"]).st_mode) == 0o644  # the daemon's job


def test_a_catalog_outside_the_sandbox_keeps_the_mode_its_owner_gave_it(
        home, tmp_path, umask_022):
    shared = tmp_path / "group-catalog.sqlite"
    with Catalog(shared, user="alice"):
        pass
    assert stat.S_IMODE(shared.stat().st_mode) == 0o600  # created private
    shared.chmod(0o640)  # the owner's choice
    with Catalog(shared, user="alice"):
        pass
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640


def test_private_directories_and_files_are_made_so_whatever_the_umask(tmp_path, umask_022):
    deep = tmp_path / "a" / "b" / "c"
    sandbox.make_private_dir(deep)
    assert not_private([str(tmp_path / "a"), str(tmp_path / "a" / "b"), str(deep)]) == []
    log = deep / "x.jsonl"
    with sandbox.open_private(log, "a") as f:
        f.write("one\n")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    log.chmod(0o644)
    with sandbox.open_private(log, "a") as f:  # an old file of ours is fixed on opening
        f.write("two\n")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600 and log.read_text() == "one\ntwo\n"
    os.symlink(log, deep / "link")
    with pytest.raises(OSError):
        sandbox.open_private(deep / "link", "a")
    log.chmod(0o640)
    with pytest.raises(FileExistsError):  # a file in the way: no directory, and left alone
        sandbox.make_private_dir(log / "sub")
    assert stat.S_IMODE(log.stat().st_mode) == 0o640


def test_make_private_tree_changes_only_our_own_entries_and_follows_no_symlink(
        tmp_path, umask_022):
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "f").write_text("x")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "inner").mkdir(parents=True)
    (elsewhere / "inner" / "g").write_text("x")
    os.symlink(elsewhere, top / "dirlink")
    os.symlink(elsewhere / "inner" / "g", top / "filelink")
    changed = sandbox.make_private_tree(top)
    assert sorted(changed) == sorted(str(p) for p in (top, top / "sub", top / "sub" / "f"))
    assert not_private([str(top), str(top / "sub"), str(top / "sub" / "f")]) == []
    for untouched in (elsewhere, elsewhere / "inner"):
        assert stat.S_IMODE(untouched.stat().st_mode) == 0o755
    assert stat.S_IMODE((elsewhere / "inner" / "g").stat().st_mode) == 0o644
    assert sandbox.make_private_tree(top) == []  # nothing left to do


def test_the_daemon_walks_the_sandbox_once_the_admin_is_forked(tmp_path) -> None:
    # an lstat per entry of the sandbox: side by side with the root's boot, not before the
    # actor system starts (actors/daemon.py); ready.json still comes after it
    import json
    import subprocess
    import sys

    code = ("import sys, json\n"
            "from pyproof import sandbox\n"
            "import pyproof.actors.system as system\n"
            "walked = []\n"
            "real = sandbox.make_private_tree\n"
            "sandbox.make_private_tree = lambda top: (walked.append(top), real(top))[1]\n"
            "class Forking(Exception): pass\n"
            "def start_system(log_dir, **options):\n"
            "    raise Forking(list(walked))\n"
            "system.start_system = start_system\n"
            "from pyproof.actors import daemon\n"
            "try:\n"
            f"    daemon.main(['--run-dir', {str(tmp_path / 'run')!r}, '--log-dir', "
            f"{str(tmp_path / 'logs')!r}])\n"
            "except Forking as forking:\n"
            "    print(json.dumps(forking.args[0]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == []
