"""Chains end to end: prerequisites, BLOCKED, failure propagation, input mergers, combine."""

from __future__ import annotations

import pytest

from nbwork import (
    ArrayCreatingInputMerger,
    InvalidRequestError,
    OneTimeWorkRequest,
    OverwritingInputMerger,
    WorkContinuation,
    WorkState,
)
from tests import helpers
from tests.conftest import wait_until


def _state(wm, request):
    return wm.get_work_info_by_id(request.id).state


@pytest.mark.slow
def test_a_chain_runs_step_by_step_and_outputs_flow_down(wm):
    a = OneTimeWorkRequest(helpers.emit, input_data={"key": "a", "value": 1})
    b = OneTimeWorkRequest(helpers.emit, input_data={"key": "b", "value": 2})
    c = OneTimeWorkRequest(helpers.echo, input_data={"own": 3})
    d = OneTimeWorkRequest(helpers.echo, input_data={"d": 4})
    e = OneTimeWorkRequest(helpers.echo, input_data={"e": 5})
    continuation = wm.begin_with([a, b]).then(c).then([d, e])
    operation = continuation.enqueue()
    assert sorted(operation.enqueued) == sorted(r.id for r in (a, b, c, d, e))
    infos = {i.id: i for i in wm.wait(continuation, timeout=60)}
    assert all(i.state is WorkState.SUCCEEDED for i in infos.values())
    ia, ib, ic, id_, ie = (infos[r.id] for r in (a, b, c, d, e))
    assert ic.output_data == {"own": 3, "a": 1, "b": 2}
    assert id_.output_data == {"d": 4, "own": 3, "a": 1, "b": 2}
    assert ie.output_data == {"e": 5, "own": 3, "a": 1, "b": 2}
    # Each step depends on every request of the step before.
    assert set(ic.prerequisites) == {a.id, b.id}
    assert set(id_.prerequisites) == {c.id} and set(ie.prerequisites) == {c.id}
    assert set(ic.dependents) == {d.id, e.id}
    assert ia.dependents == (c.id,) and ib.dependents == (c.id,)
    # A step starts only after the steps before it finished (recorded times, not durations).
    assert ic.start_time >= max(ia.finish_time, ib.finish_time)
    assert min(id_.start_time, ie.start_time) >= ic.finish_time


@pytest.mark.slow
def test_dependents_stay_blocked_until_every_prerequisite_succeeded(wm, tmp_path):
    gate = tmp_path / "gate"
    slow = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": str(gate), "value": 7})
    fast = OneTimeWorkRequest(helpers.emit, input_data={"key": "fast", "value": 1})
    after = OneTimeWorkRequest(helpers.echo)
    last = OneTimeWorkRequest(helpers.echo)
    wm.begin_with([slow, fast]).then(after).then(last).enqueue()
    assert _state(wm, after) is WorkState.BLOCKED
    assert _state(wm, last) is WorkState.BLOCKED
    assert wm.wait(fast, timeout=30).state is WorkState.SUCCEEDED
    wait_until(lambda: _state(wm, slow) is WorkState.RUNNING, what="the gated work to run")
    # One prerequisite succeeded, one runs: still blocked.
    assert _state(wm, after) is WorkState.BLOCKED
    assert _state(wm, last) is WorkState.BLOCKED
    helpers.touch(gate)
    info = wm.wait(last, timeout=30)
    assert info.state is WorkState.SUCCEEDED
    assert info.output_data["value"] == 7 and info.output_data["fast"] == 1


@pytest.mark.slow
def test_a_failure_fails_every_dependent_transitively_without_running_them(wm):
    bad = OneTimeWorkRequest(helpers.boom)
    good = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 2})
    child = OneTimeWorkRequest(helpers.echo)
    grandchild_1 = OneTimeWorkRequest(helpers.echo)
    grandchild_2 = OneTimeWorkRequest(helpers.echo)
    chain = wm.begin_with([bad, good]).then(child).then([grandchild_1, grandchild_2])
    chain.enqueue()
    infos = {i.id: i for i in wm.wait(chain, timeout=30)}
    assert infos[bad.id].state is WorkState.FAILED
    assert infos[good.id].state is WorkState.SUCCEEDED
    for request in (child, grandchild_1, grandchild_2):
        info = infos[request.id]
        assert info.state is WorkState.FAILED
        assert info.run_attempt_count == 0 and info.start_time is None
        assert info.finish_time is not None


@pytest.mark.slow
def test_a_chain_enqueued_after_a_failed_prerequisite_fails_at_once(wm):
    bad = OneTimeWorkRequest(helpers.boom)
    first = wm.begin_with(bad)
    first.enqueue()
    assert wm.wait(bad, timeout=30).state is WorkState.FAILED
    late = OneTimeWorkRequest(helpers.echo)
    first.then(late).enqueue()
    info = wm.get_work_info_by_id(late.id)
    assert info.state is WorkState.FAILED and info.start_time is None


@pytest.mark.slow
def test_overwriting_merger_later_outputs_win_over_own_input(wm):
    a = OneTimeWorkRequest(helpers.emit, input_data={"key": "x", "value": 1})
    b = OneTimeWorkRequest(helpers.emit, input_data={"key": "y", "value": 2})
    c = OneTimeWorkRequest(helpers.echo, input_data={"x": 0, "z": 9},
                           input_merger=OverwritingInputMerger)
    wm.begin_with([a, b]).then(c).enqueue()
    info = wm.wait(c, timeout=30)
    assert info.output_data == {"x": 1, "y": 2, "z": 9}


@pytest.mark.slow
def test_array_creating_merger_gathers_every_output_into_lists(wm):
    parts = [OneTimeWorkRequest(helpers.emit, input_data={"key": "value", "value": v})
             for v in (1, 2, 3)]
    total = OneTimeWorkRequest(helpers.sum_values, input_data={"value": 10},
                               input_merger=ArrayCreatingInputMerger)
    wm.begin_with(parts).then(total).enqueue()
    info = wm.wait(total, timeout=30)
    assert info.state is WorkState.SUCCEEDED
    assert info.output_data == {"total": 16, "count": 4}


@pytest.mark.slow
def test_an_array_merge_of_mixed_types_fails_the_dependent(wm):
    a = OneTimeWorkRequest(helpers.emit, input_data={"key": "value", "value": 1})
    b = OneTimeWorkRequest(helpers.echo, input_data={"value": "text"})
    c = OneTimeWorkRequest(helpers.sum_values, input_merger=ArrayCreatingInputMerger)
    wm.begin_with([a, b]).then(c).enqueue()
    info = wm.wait(c, timeout=30)
    assert info.state is WorkState.FAILED
    assert "cannot build the input of this work" in info.error
    assert "'value'" in info.error


@pytest.mark.slow
def test_combine_joins_the_leaves_of_several_chains(wm):
    a = OneTimeWorkRequest(helpers.emit, input_data={"key": "value", "value": 1})
    b = OneTimeWorkRequest(helpers.echo)
    c = OneTimeWorkRequest(helpers.emit, input_data={"key": "value", "value": 20})
    d = OneTimeWorkRequest(helpers.echo)
    final = OneTimeWorkRequest(helpers.sum_values, input_merger=ArrayCreatingInputMerger)
    left = wm.begin_with(a).then(b)
    right = wm.begin_with(c).then(d)
    combined = WorkContinuation.combine([left, right]).then(final)
    combined.enqueue()
    infos = {i.id: i for i in wm.wait(combined, timeout=30)}
    assert len(infos) == 5
    assert set(infos[final.id].prerequisites) == {b.id, d.id}
    assert infos[final.id].output_data == {"total": 21, "count": 2}


@pytest.mark.slow
def test_enqueueing_a_request_twice_is_refused_and_writes_nothing(wm):
    # A long initial delay keeps the store still while we compare it.
    first = OneTimeWorkRequest(helpers.echo, initial_delay=3600)
    wm.enqueue(first)
    before = wm.get_work_infos()
    counter = wm._store.change_counter()
    fresh = OneTimeWorkRequest(helpers.echo)
    with pytest.raises(InvalidRequestError, match="already enqueued"):
        wm.enqueue(first)
    with pytest.raises(InvalidRequestError, match="already enqueued"):
        wm.enqueue([fresh, first])          # the new one is not written either
    with pytest.raises(InvalidRequestError, match="already enqueued"):
        wm.begin_with(fresh).then(first).enqueue()
    assert wm.get_work_info_by_id(fresh.id) is None
    assert wm.get_work_infos() == before
    assert wm._store.change_counter() == counter   # not a single commit


def test_repeating_a_request_in_a_chain_is_refused_and_writes_nothing(wm):
    a = OneTimeWorkRequest(helpers.echo)
    b = OneTimeWorkRequest(helpers.echo)
    with pytest.raises(InvalidRequestError, match="appears twice"):
        wm.begin_with([a, b]).then(a)
    with pytest.raises(InvalidRequestError, match="appears twice"):
        wm.begin_with([a, a])
    left = wm.begin_with(a)
    right = wm.begin_with(a)
    with pytest.raises(InvalidRequestError, match="appears twice"):
        WorkContinuation.combine([left, right])
    assert wm.get_work_infos() == []
    assert wm.daemon.pid is None            # nothing was enqueued, nothing was started
