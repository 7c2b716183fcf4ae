"""The import guard (actors/import_guard.py) and the warm-up that installs it
(actors/warmup.py), each case in a fresh interpreter (python -c) with real packages: what
waits while a warm-up runs, what does not, and that threads importing awkward and hist
beside a real warm-up get them whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run(code: str, cwd, timeout: float = 120) -> str:
    """Run `code` in a fresh interpreter in `cwd`; its stdout (it must exit 0)."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def user_package(tmp_path):
    """A user's package (beyond the warm-up's reach) in `tmp_path`: one module imports
    only its sibling, one a standard module."""
    package = tmp_path / "upkg"
    package.mkdir()
    (package / "__init__.py").write_text("from . import helper\nfrom .helper import X\n")
    (package / "helper.py").write_text("X = 1\n")
    (package / "needs.py").write_text("import sched\n")
    (package / "needs_not.py").write_text("")
    return tmp_path


def test_only_an_import_that_would_load_a_module_within_the_warm_ups_reach_waits(
        user_package):
    out = run("""
        import builtins, importlib, pickle, sys, threading
        from pyproof.actors import import_guard

        original = builtins.__import__, importlib.import_module
        waits = []
        import_guard.install(lambda: waits.append(1))

        fresh = ("colorsys", "graphlib", "netrc", "filecmp", "xml", "_lzma", "getopt", "sched",
                 "shelve")
        assert not [name for name in fresh if name in sys.modules]

        def waited(statement):
            waits.clear()
            exec(statement, {})
            return bool(waits)

        # loaded already: no wait, whatever the form
        assert not waited("import os")
        assert not waited("from os import path")
        assert not waited("import importlib.util")
        # the standard library, not loaded yet: waits (statement, __import__, C pickle,
        # importlib.import_module, a C extension)
        assert waited("import colorsys")
        assert waited("__import__('graphlib')")
        assert waited("import pickle; pickle.loads(b'cfilecmp\\\\ncmp\\\\n.')")
        assert waited("import importlib; importlib.import_module('netrc')")
        assert waited("import _lzma")
        # a package loaded, its submodule not: a from list that names it waits
        import xml
        assert waited("from xml import dom")
        # the user's package (relative imports inside, its own attribute in a from list)
        # does not wait; its module that imports a standard module waits there
        sys.path.insert(0, ".")
        assert not waited("import upkg")
        assert not waited("import importlib; importlib.import_module('.helper', 'upkg')")
        assert waited("import upkg.needs")
        # pyproof's own modules are beyond reach; numpy within
        assert not import_guard._within_reach("pyproof")
        assert import_guard._within_reach("numpy") and import_guard._within_reach("sys")
        assert not import_guard._within_reach("upkg")
        # a module still initializing on some thread counts as not loaded
        import types
        half = types.ModuleType("half_made")
        half.__spec__ = importlib.machinery.ModuleSpec("half_made", None)
        half.__spec__._initializing = True
        sys.modules["half_made"] = half
        assert waited("import half_made")
        half.__spec__._initializing = False
        assert not waited("import half_made")
        # relative names resolve against the importer's package
        assert import_guard._absolute("b", {"__package__": "a.x"}, 2) == "a.b"
        assert import_guard._absolute("", {"__package__": "a.x"}, 1) == "a.x"
        assert import_guard._absolute("b", {"__name__": "a.x", "__spec__": None}, 1) == "a.b"
        assert import_guard._absolute("b", {"__name__": "a", "__path__": [],
                                            "__spec__": None}, 1) == "a.b"
        # the warm-up's own modules are within reach wherever they are found
        import_guard.install(lambda: waits.append(1), within=("upkg",))
        assert import_guard._within_reach("upkg")
        assert waited("import upkg.needs_not")
        # the exempt thread (the warm-up's) never waits
        import_guard.install(lambda: waits.append(1), exempt=threading.get_ident())
        assert not waited("import getopt")
        # uninstalled: the originals are back, nothing waits
        import_guard.uninstall()
        assert (builtins.__import__, importlib.import_module) == original
        assert not import_guard.installed()
        import_guard.install(lambda: waits.append(1))
        assert import_guard.installed()
        import_guard.uninstall()
        assert not waited("import shelve")
        print("ok")
    """, cwd=user_package)
    assert out == "ok\n"


def test_a_thread_importing_a_module_the_warm_up_imports_later_waits_and_neither_deadlocks(
        tmp_path):
    # waiting in __import__, before importlib takes the module's lock: the warm-up then
    # takes it freely (a finder that waited would hold it, and both would stand still)
    out = run("""
        import os, threading, time
        os.environ.update(PYPROOF_TEST_HOOKS="1", PYPROOF_TEST_WARMUP_DELAY="1")
        from pyproof.actors import import_guard, warmup
        t0 = time.monotonic()
        thread = warmup.start_warmup(("colorsys",))
        assert import_guard.installed() and warmup.warming_up()
        import colorsys
        took = time.monotonic() - t0
        assert 1 <= took < 30, took
        thread.join(30)
        assert not thread.is_alive() and not warmup.warming_up()
        assert not import_guard.installed()
        print("ok")
    """, cwd=tmp_path)
    assert out == "ok\n"


def test_no_warm_up_and_no_guard_for_modules_loaded_already_or_with_warmup_off(tmp_path):
    out = run("""
        import os
        import colorsys
        from pyproof.actors import import_guard, warmup
        assert warmup.start_warmup(("colorsys", "os")) is None
        assert not import_guard.installed() and not warmup.warming_up()
        os.environ["PYPROOF_WARMUP"] = "0"
        assert warmup.start_warmup(("graphlib",)) is None
        assert not import_guard.installed()
        print("ok")
    """, cwd=tmp_path)
    assert out == "ok\n"


HAMMER = """
    import importlib, sys, threading, time
    from pyproof.actors import warmup
    thread = warmup.start_warmup(("numpy", "awkward", "hist"))
    assert thread is not None
    time.sleep({delay})
    errors = []

    def query(module):
        try:
            importlib.import_module(module)
            import awkward as ak
            from awkward.operations import ak_num
            assert ak.num(ak.Array([[1, 2], [3]])).tolist() == [2, 1]
            import hist
            assert hist.Hist.new.Reg(10, 0, 1).Double().fill([0.5]).sum() == 1
        except Exception as exc:
            errors.append(f"{{module}}: {{exc!r}}")

    threads = [threading.Thread(target=query, args=(m,)) for m in
               ("awkward", "awkward.operations", "hist", "awkward.highlevel")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert not any(t.is_alive() for t in threads)
    print(errors or "ok")
"""


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.15, 0.2])
def test_threads_importing_awkward_and_hist_beside_a_real_warm_up_get_them_whole(
        tmp_path, delay):
    # without the guard these threads meet awkward half made ("partially initialized
    # module 'awkward.highlevel' has no attribute 'Array'") at each of these delays
    assert run(HAMMER.format(delay=delay), cwd=tmp_path) == "ok\n"


def test_merging_and_encoding_take_a_data_module_still_being_imported_for_absent(tmp_path):
    # a worker's query merges and encodes its outputs while its warm-up may be halfway
    # through numpy or awkward: in sys.modules, without their types yet (seen: "partially
    # initialized module 'numpy' has no attribute 'ndarray'" at stage 'merge')
    out = run("""
        import collections, importlib.machinery, sys, types
        for name in ("numpy", "awkward", "boost_histogram", "hist"):
            assert name not in sys.modules
            half = sys.modules[name] = types.ModuleType(name)  # nothing in it yet
            half.__spec__ = importlib.machinery.ModuleSpec(name, None)
            half.__spec__._initializing = True
        from pyproof.lazy import loaded
        from pyproof.merging.merge import merge, merge_outputs
        from pyproof.transport.codec import EncodeError, decode, encode
        assert loaded("numpy") is None and loaded("os") is sys.modules["os"]
        assert merge(1, 2) == 3 and merge([1], [2]) == [1, 2]
        assert merge_outputs({"n": 1, "c": collections.Counter(a=1)},
                             {"n": 2, "c": collections.Counter(a=2)}) == \\
            {"n": 3, "c": collections.Counter(a=3)}
        value = {"n": 3, "s": {1, 2}, "c": collections.Counter(a=1), "t": (1, 2.5)}
        assert decode(encode(value)) == value
        try:
            encode(object())
        except EncodeError:
            pass
        print("ok")
    """, cwd=tmp_path)
    assert out == "ok\n"


def test_a_fork_during_the_warm_up_waits_for_it_and_the_child_imports_freely(tmp_path):
    # (a selector's multiprocessing, say): the child has no warm-up thread to wait for,
    # and no module lock is left held by one
    out = run("""
        import os, time
        os.environ.update(PYPROOF_TEST_HOOKS="1", PYPROOF_TEST_WARMUP_DELAY="1")
        from pyproof.actors import import_guard, warmup
        t0 = time.monotonic()
        warmup.start_warmup(("colorsys",))
        pid = os.fork()
        if pid == 0:
            ok = not import_guard.installed() and not warmup.warming_up()
            import graphlib  # a module not loaded: would wait for a warm-up not there
            os._exit(0 if ok and "colorsys" in __import__("sys").modules else 1)
        try:
            assert time.monotonic() - t0 >= 1  # the fork waited for the warm-up
            deadline = time.monotonic() + 30
            while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
                assert time.monotonic() < deadline, "the child hangs"
                time.sleep(0.01)
            assert os.waitstatus_to_exitcode(done[1]) == 0
        except BaseException:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise
        print("ok")
    """, cwd=tmp_path)
    assert out == "ok\n"


def test_a_data_thread_waiting_for_the_warm_up_at_an_import_is_not_found_stuck(tmp_path):
    # the master's merge and plane threads are watched (thread_beats): a wait for the
    # warm-up (seconds on a loaded machine) is not a deadlock; silence counts from its end
    out = run("""
        import os, time
        os.environ.update(PYPROOF_TEST_HOOKS="1", PYPROOF_TEST_WARMUP_DELAY="3")
        from pyproof.actors import warmup
        from pyproof.actors.thread_beats import ThreadBeats
        beats = ThreadBeats()
        thread = warmup.start_warmup(("graphlib",))
        assert thread is not None
        beats.stamp()  # then silent: this thread waits for the warm-up
        time.sleep(0.3)
        assert beats.stuck(time.monotonic(), bound=0.1) == []
        thread.join(30)
        ended = warmup.silence_excused_until()  # (its end: the clock passed explicitly)
        assert beats.stuck(ended + 0.4, bound=0.5, max_busy=0) == []
        stuck = beats.stuck(ended + 0.6, bound=0.5, max_busy=0)
        assert [s.name for s in stuck] == ["MainThread"]
        print("ok")
    """, cwd=tmp_path)
    assert out == "ok\n"


def test_a_data_thread_silent_beyond_a_stuck_warm_ups_deadline_is_found_stuck(tmp_path):
    # no import waits past the deadline (wait_warmup): silence after it is the thread's
    out = run("""
        import os, time
        os.environ.update(PYPROOF_TEST_HOOKS="1", PYPROOF_TEST_WARMUP_DELAY="1000")  # stuck
        from pyproof.actors import warmup
        from pyproof.actors.thread_beats import ThreadBeats
        warmup.WARMUP_WAIT = 1.0
        beats = ThreadBeats()
        thread = warmup.start_warmup(("graphlib",))
        beats.stamp()
        while time.monotonic() < warmup._deadline + 1.0:
            time.sleep(0.1)
        assert thread.is_alive() and warmup.warming_up()
        stuck = beats.stuck(time.monotonic(), bound=0.5, max_busy=0)
        assert [s.name for s in stuck] == ["MainThread"], stuck
        print("ok")
    """, cwd=tmp_path)
    assert out == "ok\n"


def test_an_import_from_inside_a_meta_path_finder_does_not_stop_the_warm_up(tmp_path):
    # importlib runs each sys.meta_path finder under its global import lock, and some
    # import there (setuptools' DistutilsMetaFinder imports setuptools when distutils is
    # imported). The guard neither runs the finders to judge a name (a nested import would
    # wait holding that lock) nor waits in an import nested inside one: the warm-up, whose
    # next import takes that lock, would stand still until the bound (120 s)
    (tmp_path / "usermod.py").write_text("X = 1\n")
    out = run("""
        import faulthandler, os, sys, threading, time
        os.environ.update(PYPROOF_TEST_HOOKS="1", PYPROOF_TEST_WARMUP_DELAY="1")
        faulthandler.dump_traceback_later(60, exit=True)  # a hang fails, with its stacks
        sys.path.insert(0, ".")
        from pyproof.actors import import_guard, warmup

        class ImportingFinder:  # as setuptools' DistutilsMetaFinder does for distutils
            def find_spec(self, name, path=None, target=None):
                if name in ("usermod", "colorsys"):
                    import graphlib  # not loaded, within reach, under the import lock
                return None

        sys.meta_path.insert(0, ImportingFinder())
        t0 = time.monotonic()
        thread = warmup.start_warmup(("colorsys", "filecmp"))
        import usermod  # the user's: no wait; the finder's nested import: no wait
        assert "graphlib" in sys.modules and warmup.warming_up()
        thread.join(60)
        assert not thread.is_alive() and "filecmp" in sys.modules
        assert time.monotonic() - t0 < 30  # (about 2 s: the warm-up's two delays)
        print("ok")
    """, cwd=tmp_path, timeout=90)
    assert out == "ok\n"


def test_a_stuck_warm_up_is_waited_for_once_until_its_deadline_then_the_guard_is_off(
        tmp_path):
    # one deadline per warm-up, not a bound per import: else every module an import
    # loads (xml.dom.minidom: nine) would wait the whole bound again, nested ones too
    out = run("""
        import os, sys, time
        os.environ.update(PYPROOF_TEST_HOOKS="1", PYPROOF_TEST_WARMUP_DELAY="1000")  # stuck
        import structlog.testing
        import pyproof.logs  # (loaded in an actor: the warning goes there)
        from pyproof.actors import import_guard, warmup
        warmup.WARMUP_WAIT = 2.0
        assert not {"sched", "graphlib", "xml", "netrc", "filecmp"} & set(sys.modules)
        thread = warmup.start_warmup(("sched", "graphlib"))
        t0 = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            import xml.dom.minidom
            took = time.monotonic() - t0
            import netrc, filecmp
        assert 1.5 < took < 10, took  # (the bound once: 2 s; per import: 18 s or more)
        assert thread.is_alive() and not import_guard.installed()
        assert [(e["event"], e["log_level"], e["importing"], e["not_loaded"]) for e in logs] \\
            == [("warmup_overdue", "warning", "sched", ["sched", "graphlib"])], logs
        print("ok")
    """, cwd=tmp_path, timeout=90)
    assert out == "ok\n"


def test_a_second_install_under_a_foreign_import_wrapper_guards_without_recursion(tmp_path):
    # a debugger's or patcher's __import__ wrapped over the guard survives uninstall
    # (it calls ours); a second warm-up's install must not take it for the original
    out = run("""
        import builtins, importlib, sys
        from pyproof.actors import import_guard
        waits = []
        import_guard.install(lambda: waits.append(1))
        ours, ours_module = builtins.__import__, importlib.import_module

        def foreign(*args, **kwargs):
            return ours(*args, **kwargs)

        def foreign_module(*args, **kwargs):
            return ours_module(*args, **kwargs)

        builtins.__import__, importlib.import_module = foreign, foreign_module
        import_guard.uninstall()
        assert builtins.__import__ is foreign and not import_guard.installed()
        import colorsys  # ours passes it on: no wait
        assert waits == []
        import_guard.install(lambda: waits.append(1))  # a second warm-up
        assert builtins.__import__ is foreign and import_guard.installed()
        import graphlib
        assert len(waits) == 1
        importlib.import_module("netrc")  # (and what it imports: shlex)
        assert len(waits) >= 2 and {"graphlib", "netrc"} <= set(sys.modules)
        import_guard.uninstall()
        waits.clear()
        import filecmp
        assert waits == []
        print("ok")
    """, cwd=tmp_path)
    assert out == "ok\n"


def test_the_data_packages_dependencies_beside_them_on_pythonpath_wait_too(tmp_path):
    # an LCG view on CVMFS, `pip install --target`: hist with boost_histogram beside it,
    # neither in site-packages; a thread importing boost_histogram while the warm-up
    # imports hist would load it beside the warm-up
    view = tmp_path / "view"
    for name, code in (("datapkg", "import deppkg\n"), ("deppkg", "X = 1\n")):
        (view / name).mkdir(parents=True)
        (view / name / "__init__.py").write_text(code)
    out = run("""
        import os, sys
        os.environ.update(PYPROOF_TEST_HOOKS="1", PYPROOF_TEST_WARMUP_DELAY="1")
        sys.path.insert(0, "view")  # (as PYTHONPATH puts it)
        from pyproof.actors import import_guard, warmup
        assert not import_guard._within_reach("deppkg")
        thread = warmup.start_warmup(("datapkg",))
        assert import_guard._within_reach("deppkg")
        assert not import_guard._within_reach("pyproof")
        import deppkg  # waits for the warm-up (its 1 s delay, then datapkg, deppkg)
        assert not warmup.warming_up()
        thread.join(30)
        assert "datapkg" in sys.modules and not thread.is_alive()
        print("ok")
    """, cwd=tmp_path)
    assert out == "ok\n"


def test_a_fork_waits_for_the_warm_up_before_other_fork_hooks_take_their_locks(tmp_path):
    # os.fork runs `before` hooks latest registered first: logging's (it takes its module
    # lock) registered after the warm-up's hook held that lock while the fork waited, and
    # the warm-up, at concurrent.futures' logging.getLogger, waited for it: until the
    # deadline, and the fork then came mid warm-up after all
    out = run("""
        import os, sys, time
        os.environ.update(PYPROOF_TEST_HOOKS="1", PYPROOF_TEST_WARMUP_DELAY="1")
        from pyproof.actors import warmup
        warmup.WARMUP_WAIT = 30.0
        assert "logging" not in sys.modules and "concurrent.futures" not in sys.modules
        import logging  # registers its fork hook after warmup.py is imported
        t0 = time.monotonic()
        thread = warmup.start_warmup(("concurrent.futures",))
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        took = time.monotonic() - t0
        os.waitpid(pid, 0)
        assert 1 <= took < 15, took  # (the warm-up's 1 s; held back: the 30 s deadline)
        assert "concurrent.futures" in sys.modules
        thread.join(30)
        print("ok")
    """, cwd=tmp_path, timeout=90)
    assert out == "ok\n"


def test_a_path_hook_that_imports_while_the_guard_looks_for_a_name_neither_waits_nor_recurses(
        tmp_path):
    # the guard judges a name with importlib's path finder, which asks sys.path_hooks
    # about a directory it has not seen; a hook may import (a not-loaded standard module)
    (tmp_path / "hooked").mkdir()
    (tmp_path / "hooked" / "usermod2.py").write_text("X = 2\n")
    out = run("""
        import os, sys, time
        os.environ.update(PYPROOF_TEST_HOOKS="1", PYPROOF_TEST_WARMUP_DELAY="1")
        from pyproof.actors import warmup
        asked = []

        def hook(entry):
            if entry.endswith("hooked") and not asked:  # (its own import asks it again)
                asked.append(entry)
                import graphlib  # not loaded, within reach
            raise ImportError  # (the next hook, FileFinder's, takes the directory)

        sys.path_hooks.insert(0, hook)
        thread = warmup.start_warmup(("colorsys",))
        sys.path.insert(0, os.path.abspath("hooked"))  # (a directory not seen yet)
        import usermod2  # the user's: no wait; the hook's import: no wait either
        assert warmup.warming_up() and len(asked) == 1 and "graphlib" in sys.modules
        thread.join(30)
        print("ok")
    """, cwd=tmp_path)
    assert out == "ok\n"
