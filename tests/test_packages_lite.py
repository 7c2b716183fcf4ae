"""Packages end to end on real lite clusters: upload, enable, run by name, versions, setup
hooks, dependencies, hostile zips, restarted workers, and selectors from `__main__`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

import pyproof
from pyproof.packages import PackageError, zips
from pyproof.packages import client as package_client
from tests.daemon_helpers import Background, wait_processed
from tests.package_helpers import write_package, zip_dir
from tests.test_lite_faults import worker_pids

pytestmark = pytest.mark.slow  # a long module: started first (conftest)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def run(session, name: str, cycles: int = 100, **kwargs):
    return session.process(f"{name}.selectors:Scale", cycles=cycles, progress=False, **kwargs)


def still_usable(session) -> None:
    """A query with no package still runs: a refused or broken package spoiled nothing."""
    assert session.process("tests.sample_selectors:Cycles", cycles=10, progress=False).outputs


def enabled_then_fails(session, path: str, name: str, match: str) -> None:
    """Upload and enable the package at `path`: its query fails with QueryError matching
    `match`, and once it is disabled the session goes on."""
    session.upload_package(path)
    session.enable_package(name)
    with pytest.raises(pyproof.QueryError, match=match):
        run(session, name)
    session.disable_package(name)
    still_usable(session)


def setups(result) -> dict[int, tuple[int, int]]:
    """worker pid -> (setup calls seen, package VERSION) from the selector's outputs."""
    return {pid: (calls, version) for pid, calls, version in result.outputs["setups"]}


def test_a_package_directory_and_a_zip_are_uploaded_enabled_and_run_by_name(session, tmp_path):
    as_dir, as_zip = unique("pkgdir"), unique("pkgzip")
    directory = write_package(str(tmp_path), as_dir, factor=3)
    archive = zip_dir(write_package(str(tmp_path / "z"), as_zip, factor=5),
                      str(tmp_path / f"{as_zip}.zip"))
    assert session.upload_package(directory) == as_dir
    assert session.upload_package(archive) == as_zip
    assert session.enable_package(as_dir) == [as_dir]
    assert session.enable_package(as_zip) == [as_zip]
    # the client never imported them: they are not on its path
    assert as_dir not in sys.modules and as_zip not in sys.modules
    assert run(session, as_dir).outputs["x"] == 300  # factor read by importlib.resources
    assert run(session, as_zip).outputs["x"] == 500
    listed = {p["name"]: p for p in session.packages()}
    assert listed[as_dir]["enabled"] and listed[as_zip]["enabled"]
    assert listed[as_dir]["setup"] and listed[as_dir]["files"] == 4


def test_an_unchanged_reupload_moves_no_bytes_and_a_large_one_goes_in_chunks(session, tmp_path,
                                                                            monkeypatch):
    name = unique("pkgbig")
    path = write_package(str(tmp_path), name)
    with open(os.path.join(path, "data", "blob.bin"), "wb") as f:
        f.write(os.urandom(300_000))  # does not compress: several chunks
    monkeypatch.setattr(package_client, "CHUNK", 64 * 1024)
    calls = []
    real_call = package_client.call
    monkeypatch.setattr(package_client, "call",
                        lambda *a, **k: calls.append(a[1]) or real_call(*a, **k))
    before = session.package_bytes_sent
    session.upload_package(path)
    sent = session.package_bytes_sent - before
    assert sent == len(zips.build_package(path).data) > 300_000
    assert calls.count("package_chunk") == -(-sent // (64 * 1024))
    calls.clear()
    session.upload_package(path)  # unchanged: the host has it
    assert session.package_bytes_sent - before == sent
    assert calls == ["package_put"]
    session.enable_package(name)
    assert run(session, name).outputs["x"] == 300


def test_a_changed_package_replaces_the_old_for_the_next_query_never_mid_query(session,
                                                                             tmp_path):
    name = unique("pkgver")
    session.upload_package(write_package(str(tmp_path / "1"), name, factor=3, version=1))
    session.enable_package(name)
    running = Background(run, session, name, cycles=40, packetizer="basic",
                         packetizer_params={"packet_entries": 1}, inputs={"sleep": 0.05})
    wait_processed(session, 4, timeout=20)  # the query runs, its workers have version 1
    session.upload_package(write_package(str(tmp_path / "2"), name, factor=7, version=2))
    during = running.result(60)
    assert during.outputs["x"] == 3 * 40
    assert {v for _, v in setups(during).values()} == {1}
    after = run(session, name, cycles=40)
    assert after.outputs["x"] == 7 * 40
    assert {v for _, v in setups(after).values()} == {2}
    # each version's setup hook ran once in each worker process
    assert {c for c, _ in setups(after).values()} == {1}


def test_a_pinned_version_runs_after_a_newer_one_is_uploaded(session, tmp_path):
    name = unique("pkgpin")
    session.upload_package(write_package(str(tmp_path / "1"), name, factor=2))
    first = next(p for p in session.packages() if p["name"] == name)["version"]
    session.upload_package(write_package(str(tmp_path / "2"), name, factor=9))
    session.enable_package(name, version=first)
    assert run(session, name).outputs["x"] == 200
    session.enable_package(name)  # unpinned: the latest
    assert run(session, name).outputs["x"] == 900


def test_setup_hooks_run_once_per_worker_process_dependencies_first(session, tmp_path):
    base, top = unique("pkgbase"), unique("pkgtop")
    session.upload_package(write_package(str(tmp_path), base))
    session.upload_package(write_package(str(tmp_path), top, requires=[base]))
    assert session.enable_package(top) == [base, top]
    results = [run(session, top) for _ in range(2)]
    for result in results:
        assert {c for c, _ in setups(result).values()} == {1}
        for _pid, *order in result.outputs["order"]:
            assert order.index(base) < order.index(top)
    with pytest.raises(PackageError, match=rf"^package {base!r} is required by {top}"):
        session.disable_package(base)


def test_a_dependency_cycle_is_refused_and_the_session_stays_usable(session, tmp_path):
    a, b = unique("pkgcyca"), unique("pkgcycb")
    session.upload_package(write_package(str(tmp_path), a, requires=[b]))
    session.upload_package(write_package(str(tmp_path), b, requires=[a]))
    with pytest.raises(PackageError, match=rf"^package dependencies form a cycle: "
                                           rf"{a} -> {b} -> {a}; remove one"):
        session.enable_package(a)
    still_usable(session)


def test_a_malicious_zip_is_refused_by_the_daemon_with_a_clear_error(session):
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("evil/__init__.py", "")
        zf.writestr("evil/../../escaped.py", "print('owned')")
    data = out.getvalue()
    # built by hand: the client's own checks would refuse it before sending
    hostile = zips.Built(name="evil", digest="e" * 64, data=data, files=2)
    with pytest.raises(PackageError, match=r"^package 'evil': entry 'evil/../../escaped.py' "
                                           r"has '..'; a package holds only relative paths"):
        package_client.upload(session.control, hostile)
    assert not any(p["name"] == "evil" for p in session.packages())
    still_usable(session)


def test_a_package_syntax_error_names_the_file_and_line(session, tmp_path):
    name = unique("pkgbad")
    path = write_package(str(tmp_path), name)
    with open(os.path.join(path, "selectors.py"), "a") as f:
        f.write("\ndef broken(:\n")
    enabled_then_fails(session, path, name, rf"^SelectorError: cannot import selector module "
                                            rf"'{name}.selectors': syntax error in "
                                            rf"'.*/{name}/selectors.py', line 2\d: ")


def test_a_worker_restarted_mid_session_gets_the_packages_before_its_first_packet(tmp_path):
    name = unique("pkgrestart")
    with pyproof.connect("lite://?workers=2") as session:
        session.upload_package(write_package(str(tmp_path), name, factor=4))
        session.enable_package(name)
        assert run(session, name).outputs["x"] == 400
        old = worker_pids(session)
        os.kill(old["worker-1"], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and worker_pids(session).get("worker-1") in (
                None, old["worker-1"]):
            time.sleep(0.05)
        new = worker_pids(session)["worker-1"]
        assert new != old["worker-1"]
        # until the new worker took packets: bounded in time, not in queries. A fresh worker
        # may load this package's selector (it imports standard modules it has not loaded)
        # only once its warm-up imports are done (uproot and co., actors/warmup.py: a lower
        # priority, so seconds under load); a query here takes some 30 ms, and worker-0
        # alone does all of those that end before then.
        deadline = time.monotonic() + 30
        while True:
            result = run(session, name, cycles=200, packetizer="basic",
                         packetizer_params={"packet_entries": 5})
            assert result.outputs["x"] == 800
            if new in setups(result) or time.monotonic() > deadline:
                break
        assert new in setups(result), "the restarted worker took no packet in 30 s of queries"
        assert setups(result)[new] == (1, 1)


STDIN_SELECTOR = """\
import sys
import numpy as np
import pyproof
{imports}

SCALE = 5


def helper(n):
    return SCALE * n


class Main(pyproof.Selector):
    def begin(self, ctx):
        ctx.outputs["x"] = 0
        ctx.outputs["a"] = np.zeros(2)

    def process(self, cycles, ctx):
        ctx.outputs["x"] += helper(len(cycles)) {extra}
        ctx.outputs["a"] += 1
"""

RUN = """
with pyproof.connect({url!r}) as session:
    try:
        print("x", session.process(Main, cycles=100, progress=False{ship}).outputs["x"])
    except pyproof.QueryError as exc:
        print("error", str(exc).splitlines()[0])
"""


def _python_stdin(script: str, cwd: str, timeout: float = 90) -> str:
    env = {**os.environ, "PYTHONPATH": REPO}
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("style", ["stdin", "notebook"])
def test_a_selector_defined_in_main_runs_end_to_end(tmp_path, style):
    body = STDIN_SELECTOR.format(imports="", extra="")
    if style == "notebook":  # what IPython does: the cell's source in linecache, run in __main__
        body = textwrap.dedent(f"""\
            import linecache, sys
            cell = {body!r}
            name = "<ipython-input-1-0>"
            linecache.cache[name] = (len(cell), None, cell.splitlines(True), name)
            exec(compile(cell, name, "exec"), sys.modules["__main__"].__dict__)
            import pyproof
            from pyproof.packages.interactive import main_module
            print("source" if "class Main" in main_module(Main)[1] else "pickled")
            """)
    out = _python_stdin(body + RUN.format(url="lite://?workers=2", ship=""), str(tmp_path))
    assert "x 500" in out, out
    if style == "notebook":
        assert "source" in out


def test_ship_sends_a_helper_module_workers_could_not_import(tmp_path):
    helpers = unique("helpers")
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / f"{helpers}.py").write_text("BONUS = 7\n")
    imports = (f"sys.path.insert(0, {str(hidden)!r})\nimport {helpers}\n"
               f"sys.path.remove({str(hidden)!r})  # workers are not told where it is")
    body = STDIN_SELECTOR.format(imports=imports, extra=f"+ {helpers}.BONUS")
    shipped = RUN.format(url="lite://?workers=2", ship=f", ship=[{str(hidden / helpers)!r} "
                                                         "+ '.py']")
    not_shipped = RUN.format(url="lite://?workers=2", ship="")
    out = _python_stdin(body + not_shipped + shipped, str(tmp_path))
    assert f"error ModuleNotFoundError: No module named '{helpers}'" in out or \
        f"No module named '{helpers}'" in out, out
    assert "x 5" in out and "x 500" not in out  # 5 * 100 + 7 per packet


def test_a_setup_hook_that_raises_fails_the_query_naming_it_and_the_session_goes_on(session,
                                                                                   tmp_path):
    name = unique("pkgsetupfail")
    path = write_package(str(tmp_path), name)
    with open(os.path.join(path, "pyproof_setup.py"), "w") as f:
        f.write("requires = []\n\n\ndef setup(ctx):\n    raise RuntimeError('no licence')\n")
    enabled_then_fails(session, path, name, rf"^PackageError: package {name!r} setup hook "
                                            rf".*/{name}/pyproof_setup.py: setup\(ctx\) "
                                            r"raised at line 5: RuntimeError\('no licence'\)")
