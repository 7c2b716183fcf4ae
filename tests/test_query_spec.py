"""QuerySpec: one schema, one validation (the gateway's), attributes everywhere."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyproof.errors import ProofError
from pyproof.query.spec import QuerySpec, SpecError

BASE = {"selector": "m:S", "client_address": "ipc:///tmp/x.ipc"}

specs = st.builds(
    QuerySpec, selector=st.just("m:S"),
    cycles=st.integers(0, 10**9), first=st.integers(0, 100),
    entries=st.none() | st.integers(0, 100),
    inputs=st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    concatenate=st.lists(st.text(max_size=4), max_size=3).map(tuple),
    feedback=st.lists(st.text(max_size=4), max_size=3).map(tuple),
    feedback_interval=st.floats(0.05, 100),
    selector_sources=st.none() | st.lists(st.tuples(st.none() | st.text(max_size=3),
                                                    st.text(max_size=3), st.text(max_size=3)),
                                          max_size=2).map(tuple),
)


@settings(max_examples=50, deadline=None)
@given(specs)
def test_a_spec_survives_the_wire_and_pickle_unchanged(spec):
    assert QuerySpec.from_wire(spec.to_wire()) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_a_client_cannot_choose_where_workers_write():
    with pytest.raises(SpecError, match=r"^unknown query field\(s\): output_dir$"):
        QuerySpec.from_wire({**BASE, "cycles": 1, "output_dir": "/etc"})
    spec = QuerySpec.from_wire({**BASE, "cycles": 1}).with_output_dir("/sandbox/q")
    assert spec.output_dir == "/sandbox/q" and "output_dir" not in spec.to_wire()


@pytest.mark.parametrize(("change", "message"), [
    ({}, r"^a query needs exactly one of 'dataset', 'dataset_spec', 'cycles' and 'files'$"),
    ({"cycles": 1, "files": [["a", None]]}, r"^a query needs exactly one of"),
    ({"cycles": True}, r"^query field 'cycles' has the wrong type \(bool\)$"),
    ({"cycles": -1}, r"^'cycles' must not be negative$"),
    ({"cycles": 1, "first": -2}, r"^'first' and 'entries' must not be negative$"),
    ({"dataset": [["a.root"]]}, r"^dataset element \['a.root'\] must be \[path, tree\]$"),
    ({"cycles": 1, "on_missing": "ignore"}, r"^'on_missing' must be 'fail' or 'skip'$"),
    ({"cycles": 1, "feedback": ["h", 3]}, r"^query field 'feedback' must be a list of strings$"),
    ({"cycles": 1, "feedback_interval": 0.001},
     r"^'feedback_interval' must be at least 0.05 s, got 0.001$"),
])
def test_the_one_validation_names_the_field(change, message):
    with pytest.raises(SpecError, match=message):
        QuerySpec.from_wire({**BASE, **change})


def test_a_spec_that_is_not_a_map_or_lacks_a_selector_is_refused():
    with pytest.raises(SpecError, match=r"^query spec must be a map$"):
        QuerySpec.from_wire([1])
    with pytest.raises(SpecError, match=r"^missing query field 'selector'$"):
        QuerySpec.from_wire({"cycles": 1})


def test_spec_errors_are_proof_errors_a_user_can_catch():
    assert issubclass(SpecError, ProofError)
    with pytest.raises(ProofError):
        QuerySpec(selector="m:S")
