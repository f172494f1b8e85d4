"""A request becomes its stored record in one place (``nbwork._records``)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from nbwork import BackoffPolicy, Constraints, OneTimeWorkRequest, PeriodicWorkRequest, RunAfter
from nbwork._records import REQUEST_FIELDS, RecordMaker, spec_of_request
from nbwork._spec import WorkSpec
from nbwork.data import ArrayCreatingInputMerger
from tests import helpers

PLACE = {"id", "unique_name", "prerequisites", "log_name", "run_after"}
"""What a record takes from where the request is enqueued, or fixes then: how it waits for
its prerequisites (``run_after``) is fixed with them, and update_work refuses to change it."""


def _every_field_set() -> list:
    """Requests whose every setting differs from a record's default."""
    one_time = OneTimeWorkRequest(
        helpers.echo, input_data={"x": 1}, tags=["t"], initial_delay=5,
        constraints=Constraints(requires_charging=True),
        backoff_policy=BackoffPolicy.LINEAR, backoff_delay=timedelta(seconds=12),
        keep_results_for=60, input_merger=ArrayCreatingInputMerger,
        run_after=RunAfter.ALL_FINISHED)
    periodic = PeriodicWorkRequest(helpers.echo, repeat_interval=timedelta(hours=1),
                                   flex_interval=timedelta(minutes=20), tags=["p"])
    return [one_time, periodic]


def test_update_work_replaces_every_field_a_request_decides():
    """A field the mapping takes from a request but update_work does not replace would keep
    its old value after an update: the two lists are one."""
    defaults = WorkSpec(id="", worker_name="", code_key="")
    from_request: set[str] = set()
    for request in _every_field_set():
        spec = spec_of_request(request, "key", ("a",), "name")
        from_request |= {f.name for f in dataclasses.fields(WorkSpec)
                         if getattr(spec, f.name) != getattr(defaults, f.name)}
    assert from_request - PLACE == set(REQUEST_FIELDS)


def test_a_maker_serializes_each_worker_once_and_adds_a_writers_tag():
    maker = RecordMaker()
    first, second = (OneTimeWorkRequest(helpers.echo, tags=["mine"]) for _ in range(2))
    works = [maker.new_work(first, ("p",), "name", tag="watch:w"), maker.new_work(second)]
    assert works[0].payload is works[1].payload  # one serialization for both
    assert works[0].spec.tags == ("mine", "watch:w") and works[1].spec.tags == ("mine",)
    assert (works[0].spec.prerequisites, works[0].spec.unique_name) == (("p",), "name")
    assert works[1].spec.unique_name is None


def test_a_record_is_stored_as_a_tuple_and_read_back_whole_as_is_an_older_dict():
    import pickle

    import pytest

    from nbwork._spec import RECORD_FIELDS, RECORD_LAYOUT, Attempt
    from nbwork.info import WorkState

    for request in _every_field_set():
        spec = RecordMaker().new_work(request, ("p1",), "name").spec
        spec.state, spec.attempt = WorkState.RUNNING, Attempt("t" * 32, 12.5, 4321, 99.0)
        spec.content = {"paths": ["/a"], "first": 1.0, "last": 2.0}
        record = spec.to_record()
        assert type(record) is tuple and record[0] == RECORD_LAYOUT
        assert WorkSpec.from_record(pickle.loads(pickle.dumps(record))) == spec
        assert WorkSpec.from_record(spec.to_dict()) == spec  # layout 1, of older versions
        # About half the bytes of the dict it replaces (a third less at the least).
        assert len(pickle.dumps(record)) < 0.6 * len(pickle.dumps(spec.to_dict()))
    for bad in [(RECORD_LAYOUT + 1, *record[1:]), record[:-1], (), ["a", "list"], None]:
        with pytest.raises((ValueError, TypeError)):
            WorkSpec.from_record(bad)
    unknown = list(record)
    unknown[1 + RECORD_FIELDS.index("state")] = "EXPLODED"
    with pytest.raises(ValueError, match="unknown state 'EXPLODED'"):
        WorkSpec.from_record(tuple(unknown))
