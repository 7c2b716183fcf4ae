"""Every control message survives the trip between actor processes (Thespian pickles them)."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import typing

from hypothesis import given, settings
from hypothesis import strategies as st

from pyproof.actors import messages as m

CLASSES = [c for _, c in inspect.getmembers(m, inspect.isclass)
           if dataclasses.is_dataclass(c) and c.__module__ == m.__name__]

VALUES = {
    "str": st.text(max_size=20), "int": st.integers(-10, 10**9), "bool": st.booleans(),
    "float": st.floats(allow_nan=False), "bytes": st.binary(max_size=40),
}


def strategy_for(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        text = str(hints[f.name])
        base = next((s for name, s in VALUES.items() if text.startswith(f"<class '{name}'")),
                    None)
        if base is None:  # containers and Any: small plain data
            base = st.dictionaries(st.text(max_size=5), st.integers(), max_size=3) \
                if "dict" in text else st.just(None) if "Any" in text else \
                st.lists(st.text(max_size=5), max_size=3).map(tuple)
        fields[f.name] = base
    return st.builds(cls, **fields)


def test_the_message_module_defines_the_expected_messages():
    names = {c.__name__ for c in CLASSES}
    assert {"Boot", "CreateSession", "StartQuery", "RunQuery", "Started", "PingChild",
            "WorkerLost", "OpenOutbox"} <= names


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_every_message_round_trips_through_pickle(data):
    for cls in CLASSES:
        message = data.draw(strategy_for(cls))
        assert pickle.loads(pickle.dumps(message)) == message
