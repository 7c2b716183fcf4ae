"""Specs and restart windows: OTP's defaults, validation messages, add_restart semantics."""

from __future__ import annotations

import ast
import pathlib
import pkgutil
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyproof.supervision as sup
from pyproof.supervision import (
    ChildSpec,
    ChildType,
    Decision,
    Restart,
    RestartWindow,
    Shutdown,
    Strategy,
    SupervisorSpec,
    SupFlags,
    add_restart,
)


def test_sup_flags_default_to_one_for_one_with_intensity_1_in_5_seconds():
    flags = SupFlags()
    assert (flags.strategy, flags.intensity, flags.period) == (Strategy.ONE_FOR_ONE, 1, 5.0)
    assert flags.ping_interval is None


def test_a_worker_defaults_to_permanent_with_a_5_second_shutdown():
    spec = ChildSpec(id="gateway", start=("Gateway", {}))
    assert spec.restart is Restart.PERMANENT
    assert spec.type is ChildType.WORKER
    assert spec.shutdown == Shutdown.timeout(5.0)
    assert spec.watchdog is True


def test_a_supervisor_child_defaults_to_an_infinite_shutdown():
    spec = ChildSpec(id="sessions", start=None, type="supervisor")
    assert spec.type is ChildType.SUPERVISOR
    assert spec.shutdown is Shutdown.INFINITY


def test_strings_are_accepted_for_the_closed_vocabulary():
    spec = ChildSpec(id="w", start=None, restart="transient", shutdown="brutal_kill")
    assert spec.restart is Restart.TRANSIENT and spec.shutdown.is_brutal_kill
    assert ChildSpec(id="w", start=None, shutdown="infinity").shutdown.is_infinity
    assert ChildSpec(id="w", start=None, shutdown=0.5).shutdown.seconds == 0.5
    assert SupFlags(strategy="rest_for_one").strategy is Strategy.REST_FOR_ONE
    assert str(Shutdown.timeout(2)) == "2" and str(Shutdown.BRUTAL_KILL) == "brutal_kill"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ChildSpec(id="w", start=None, restart="sometimes"),
         "invalid restart type: 'sometimes'"),
        (lambda: ChildSpec(id="w", start=None, type="manager"), "invalid child type: 'manager'"),
        (lambda: ChildSpec(id="w", start=None, shutdown=-1), "invalid shutdown: -1"),
        (lambda: ChildSpec(id="w", start=None, shutdown="soon"), "invalid shutdown: 'soon'"),
        (lambda: ChildSpec(id="w", start=None, shutdown=True), "invalid shutdown: True"),
        (lambda: ChildSpec(id="w", start=None, shutdown=float("nan")), "invalid shutdown: nan"),
        (lambda: ChildSpec(id="", start=None), "invalid child id: ''"),
        (lambda: ChildSpec(id=3, start=None), "invalid child id: 3"),
        (lambda: SupFlags(strategy="all_for_one"), "invalid strategy: 'all_for_one'"),
        (lambda: SupFlags(intensity=-1), "invalid intensity: -1"),
        (lambda: SupFlags(intensity=1.5), "invalid intensity: 1.5"),
        (lambda: SupFlags(period=0), "invalid period: 0"),
        (lambda: SupFlags(ping_interval=0), "invalid ping_interval: 0"),
        (lambda: SupFlags(ping_timeout=-2.0), "invalid ping_timeout: -2.0"),
        (lambda: SupervisorSpec(name="s", children=(ChildSpec(id="a", start=1),
                                                    ChildSpec(id="b", start=2),
                                                    ChildSpec(id="a", start=3))),
         "duplicate child id: 'a'"),
        (lambda: SupervisorSpec(name="s", children=("a",)), "invalid child spec: 'a'"),
        (lambda: sup.SupervisorCore(SupFlags(), [ChildSpec(id="x", start=1)] * 2),
         "duplicate child id: 'x'"),
    ],
)
def test_invalid_specs_name_the_field_and_the_value(make, message):
    with pytest.raises(ValueError, match=rf"^{re.escape(message)}$"):
        make()


def test_specs_are_frozen_slotted_and_keyword_only():
    spec = ChildSpec(id="w", start=None)
    with pytest.raises(AttributeError):
        spec.id = "x"  # type: ignore[misc]
    assert not hasattr(spec, "__dict__")
    with pytest.raises(TypeError):
        ChildSpec("w", None)  # type: ignore[misc]


def test_a_supervisor_spec_nests_as_the_start_of_a_child():
    inner = SupervisorSpec(name="session-1", flags=SupFlags(strategy="one_for_all"),
                           children=[ChildSpec(id="master", start="Master")])
    outer = ChildSpec(id="session-1", start=inner, type="supervisor", restart="temporary")
    assert outer.start.children[0].id == "master"
    assert isinstance(inner.children, tuple)


# ------------------------------------------------------------ restart window


def test_intensity_1_period_5_escalates_on_a_second_restart_within_5_seconds():
    window = RestartWindow(1, 5.0)
    assert window.add(10.0) is Decision.OK
    assert window.add(15.0) is Decision.ESCALATE  # exactly `period` later still counts


def test_a_restart_older_than_the_period_is_forgotten():
    window = RestartWindow(1, 5.0)
    assert window.add(10.0) is Decision.OK
    assert window.add(15.001) is Decision.OK
    assert window.restarts == (15.001,)


def test_intensity_0_escalates_on_the_first_restart():
    assert RestartWindow(0, 5.0).add(0.0) is Decision.ESCALATE


def test_add_restart_keeps_the_window_newest_first():
    window, decision = add_restart((3.0, 2.0, 1.0), 4.0, intensity=3, period=2.0)
    assert window == (4.0, 3.0, 2.0) and decision is Decision.OK


@settings(max_examples=200, deadline=None)
@given(
    intensity=st.integers(0, 4),
    period=st.floats(0.5, 10.0),
    gaps=st.lists(st.floats(0.0, 6.0), min_size=1, max_size=30),
)
def test_a_restart_escalates_exactly_when_more_than_intensity_fall_in_the_closed_period(
    intensity, period, gaps
):
    window = RestartWindow(intensity, period)
    now, history = 0.0, []
    for gap in gaps:
        now += gap
        history.append(now)
        recent = [t for t in history if t >= now - period]
        expected = Decision.OK if len(recent) <= intensity else Decision.ESCALATE
        assert window.add(now) is expected
        assert window.restarts == tuple(reversed(recent))


# ------------------------------------------------------------ the package


def test_the_package_exports_exactly_its_public_names():
    public = {name for name in dir(sup) if not name.startswith("_")}
    # submodules show in dir() once imported (by this test or any other)
    modules = {info.name for info in pkgutil.iter_modules(sup.__path__)}
    assert set(sup.__all__) == public - modules
    for name in sup.__all__:
        assert getattr(sup, name) is not None


PURE = ("core.py", "events.py", "restart.py", "spec.py", "threads.py", "watchdog.py",
        "__init__.py")
FORBIDDEN = {"thespian", "pynng", "time", "datetime", "random", "os", "signal", "subprocess",
             "socket", "threading", "asyncio", "structlog"}


@pytest.mark.parametrize("module", PURE)
def test_the_core_modules_import_no_actor_system_socket_or_clock(module):
    root = pathlib.Path(sup.__file__).parent
    tree = ast.parse((root / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module == "process_tree":
            imported.add("process_tree")
    assert not imported & (FORBIDDEN | {"process_tree"}), imported & FORBIDDEN
