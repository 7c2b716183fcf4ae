"""Fixtures shared by all tests: a private sandbox, a process-leak check, and a lite
session for the tests that ask for one.

The test process makes itself a child subreaper, so any process our code
orphans is re-parented to it and shows up as its descendant: a test that
leaves one behind fails, naming it (and the fixture kills it).
"""

from __future__ import annotations

import glob
import os
import tempfile
import threading
import time
from collections.abc import Callable

import pytest

import pyproof
from pyproof.supervision.process_tree import (
    become_subreaper,
    cmdline,
    descendants_of,
    is_alive,
    kill_tree,
    reap_children,
)

become_subreaper()

# small real ROOT files shipped with the tests (see tests/data/README.md)
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def data_file(name: str) -> str:
    """The path of a real ROOT file in tests/data; a missing one is an error, never a skip."""
    path = os.path.join(DATA, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"test data file not found: {path} (see tests/data/README.md)")
    return path


def zmumu() -> str:
    """The real Z->mumu sample's tree, as a dataset: `path:events`."""
    return data_file("uproot-Zmumu.root") + ":events"


def at_once(count: int, call: Callable[[], object], timeout: float = 30.0) -> list[object]:
    """Run `call` in `count` threads released together by a barrier; each one's result, or
    the exception it raised, in no particular order. Fails the test if the threads do not
    all meet within `timeout` seconds, or one has not finished by then (a hang is a failure,
    never a missing result)."""
    barrier = threading.Barrier(count)
    outcomes: list[object] = []

    def one() -> None:
        try:
            barrier.wait(timeout)
            outcomes.append(call())
        except BaseException as exc:  # handed back to the test to judge
            outcomes.append(exc)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    end = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    if any(t.is_alive() for t in threads):
        pytest.fail(f"{sum(t.is_alive() for t in threads)} of {count} threads still running "
                    f"{getattr(call, '__name__', call)} after {timeout} s")
    return outcomes


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules marked `slow` (a minute or more each) run first, each kept whole and in
    collection order (a stable sort). The README's command spreads whole files over two
    pytest-xdist workers in this order (below): the long files start first and the many
    short ones fill in at the end, so no worker is left alone with a long file while the
    other has nothing to do."""
    def slow(item: pytest.Item) -> bool:
        module = item.getparent(pytest.Module)
        return module is not None and module.get_closest_marker("slow") is not None

    items.sort(key=lambda item: not slow(item))


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: unknown without it
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`-n N` alone (xdist's default `--dist load`) sends whole files to the workers, in
    collection order: module-scoped fixtures (a cluster, the stress harnesses' runs) are
    made once, not once per worker, and the slow modules go first (above). Any other
    `--dist` asked for is xdist's own."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False  # xdist would put files with more tests first
    return LoadFileScheduling(config, log)


@pytest.fixture(scope="module")
def session():
    """A real lite cluster of two workers, one per test module that asks for `session`
    (a module that needs another cluster defines its own fixture of that name)."""
    with pyproof.connect("lite://?workers=2") as s:
        yield s


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """One real Thespian actor system in this process for a module's tests of actor shells
    (see tests/thespian_system.py)."""
    from tests.thespian_system import in_process_system

    with in_process_system(str(tmp_path_factory.mktemp("thespian-logs"))) as system:
        yield system


@pytest.fixture(scope="session", autouse=True)
def _sandbox(tmp_path_factory: pytest.TempPathFactory):
    sandbox = tmp_path_factory.mktemp("sandbox")
    old = os.environ.get("PYPROOF_SANDBOX")
    os.environ["PYPROOF_SANDBOX"] = str(sandbox)
    yield sandbox
    if old is None:
        os.environ.pop("PYPROOF_SANDBOX", None)
    else:
        os.environ["PYPROOF_SANDBOX"] = old


def _live_descendants() -> set[int]:
    reap_children()
    return {pid for pid in descendants_of(os.getpid()) if is_alive(pid)}


def _run_dirs() -> set[str]:
    # only ours: other test runs on the machine make their own
    return set(glob.glob(os.path.join(tempfile.gettempdir(), f"pyproof-{os.getpid()}-*")))


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail the test that leaves a process or a pyproof temp directory behind."""
    before = _live_descendants()
    dirs_before = _run_dirs()
    yield
    deadline = time.monotonic() + 10.0
    leaked = _live_descendants() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = _live_descendants() - before
    if leaked:
        described = [f"{pid}: {cmdline(pid)}" for pid in sorted(leaked)]
        for pid in leaked:
            kill_tree(pid)
        reap_children()
        pytest.fail("test leaked processes:\n  " + "\n  ".join(described))
    left = _run_dirs() - dirs_before
    if left:
        pytest.fail(f"test left temporary directories behind: {sorted(left)}")
