"""Unique work end to end: every ExistingWorkPolicy, chains under a name, and two
processes racing to enqueue the same name."""

from __future__ import annotations

import pytest

from nbwork import (
    ArrayCreatingInputMerger,
    ExistingWorkPolicy,
    OneTimeWorkRequest,
    StopReason,
    WorkManager,
    WorkState,
)
from tests import helpers
from tests.conftest import wait_until

# Every test here starts a real scheduler and worker processes.
pytestmark = pytest.mark.slow

NAME = "IMAGE_MANIPULATION"


def _info(wm, request):
    return wm.get_work_info_by_id(request.id)


def _running(wm, request):
    return _info(wm, request).state is WorkState.RUNNING


def test_replace_cancels_the_running_chain_and_the_new_one_runs(wm, tmp_path):
    started = tmp_path / "old"
    started.mkdir()
    old_first = OneTimeWorkRequest(helpers.StopAware, input_data={"dir": str(started)})
    old_second = OneTimeWorkRequest(helpers.echo)
    wm.enqueue_unique_work(NAME, ExistingWorkPolicy.REPLACE, [old_first])
    wm.begin_unique_work(NAME, ExistingWorkPolicy.APPEND, old_second).enqueue()
    wait_until(lambda: (started / "started").exists(), what="the old chain to run")

    new = OneTimeWorkRequest(helpers.add, input_data={"a": 20, "b": 22})
    operation = wm.enqueue_unique_work(NAME, ExistingWorkPolicy.REPLACE, [new])
    assert operation.enqueued == [new.id]
    assert operation.cancelled_running == [old_first.id]
    assert wm.wait(new, timeout=30).output_data == {"sum": 42}

    # The old chain was stopped (its worker saw the stop) and is CANCELLED history outside
    # the name; only the new work is under the name.
    wait_until(lambda: (started / "on_stopped").exists(), what="on_stopped of the old worker")
    for request in (old_first, old_second):
        info = _info(wm, request)
        assert info.state is WorkState.CANCELLED
        assert info.unique_work_name is None
    assert _info(wm, old_first).stop_reason is StopReason.CANCELLED_BY_APP
    assert [i.id for i in wm.get_work_infos_for_unique_work(NAME)] == [new.id]


def test_keep_drops_new_work_while_existing_work_is_enqueued_or_running(wm, tmp_path):
    gate = tmp_path / "gate"
    queued = OneTimeWorkRequest(helpers.echo, initial_delay=3600)
    wm.enqueue_unique_work("queued", ExistingWorkPolicy.KEEP, [queued])
    running = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": str(gate)})
    wm.enqueue_unique_work("running", ExistingWorkPolicy.KEEP, [running])
    wait_until(lambda: _running(wm, running), what="the existing work to run")

    for name in ("queued", "running"):
        newcomer = OneTimeWorkRequest(helpers.echo)
        operation = wm.enqueue_unique_work(name, ExistingWorkPolicy.KEEP, [newcomer])
        assert operation.enqueued == [] and operation.dropped == [newcomer.id]
        assert _info(wm, newcomer) is None                     # never stored
        assert len(wm.get_work_infos_for_unique_work(name)) == 1

    # Once the existing work is finished, KEEP enqueues the new work in its place.
    helpers.touch(gate)
    assert wm.wait(running, timeout=30).state is WorkState.SUCCEEDED
    after = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 1})
    assert wm.enqueue_unique_work("running", "KEEP", [after]).enqueued == [after.id]
    assert wm.wait(after, timeout=30).state is WorkState.SUCCEEDED
    assert [i.id for i in wm.get_work_infos_for_unique_work("running")] == [after.id]


def test_append_waits_for_the_existing_leaves_and_receives_their_outputs(wm, tmp_path):
    gate = tmp_path / "gate"
    first = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": str(gate), "value": 5})
    sibling = OneTimeWorkRequest(helpers.emit, input_data={"key": "value", "value": 6})
    wm.enqueue_unique_work(NAME, ExistingWorkPolicy.APPEND, [first, sibling])
    appended = OneTimeWorkRequest(helpers.sum_values, input_merger=ArrayCreatingInputMerger)
    wm.enqueue_unique_work(NAME, ExistingWorkPolicy.APPEND, [appended])
    info = _info(wm, appended)
    assert set(info.prerequisites) == {first.id, sibling.id}
    assert wm.wait(sibling, timeout=30).state is WorkState.SUCCEEDED
    assert _info(wm, appended).state is WorkState.BLOCKED
    helpers.touch(gate)
    info = wm.wait(appended, timeout=30)
    assert info.state is WorkState.SUCCEEDED
    assert info.output_data == {"total": 11, "count": 2}
    assert info.unique_work_name == NAME
    names = [i.id for i in wm.get_work_infos_for_unique_work(NAME)]
    assert sorted(names) == sorted([first.id, sibling.id, appended.id])


def test_append_onto_succeeded_work_runs_at_once_with_its_output(wm):
    first = OneTimeWorkRequest(helpers.emit, input_data={"key": "k", "value": 3})
    wm.enqueue_unique_work(NAME, ExistingWorkPolicy.APPEND, [first])
    wm.wait(first, timeout=30)
    second = OneTimeWorkRequest(helpers.echo)
    wm.enqueue_unique_work(NAME, ExistingWorkPolicy.APPEND, [second])
    assert _info(wm, second).state in (WorkState.ENQUEUED, WorkState.RUNNING,
                                       WorkState.SUCCEEDED)
    assert wm.wait(second, timeout=30).output_data == {"k": 3}


def test_append_onto_a_failed_leaf_fails_the_new_work_at_once(wm):
    bad = OneTimeWorkRequest(helpers.boom)
    wm.enqueue_unique_work(NAME, ExistingWorkPolicy.APPEND, [bad])
    assert wm.wait(bad, timeout=30).state is WorkState.FAILED
    new = OneTimeWorkRequest(helpers.echo)
    after_new = OneTimeWorkRequest(helpers.echo)
    wm.begin_unique_work(NAME, ExistingWorkPolicy.APPEND, new).then(after_new).enqueue()
    for request in (new, after_new):
        info = _info(wm, request)
        assert info.state is WorkState.FAILED           # at once, never run
        assert info.start_time is None
        assert info.unique_work_name == NAME


def test_append_onto_a_cancelled_leaf_cancels_the_new_work(wm):
    queued = OneTimeWorkRequest(helpers.echo, initial_delay=3600)
    wm.enqueue_unique_work(NAME, ExistingWorkPolicy.APPEND, [queued])
    wm.cancel_work_by_id(queued.id)
    new = OneTimeWorkRequest(helpers.echo)
    wm.enqueue_unique_work(NAME, ExistingWorkPolicy.APPEND, [new])
    assert _info(wm, new).state is WorkState.CANCELLED


def test_append_or_replace_onto_a_failed_chain_starts_fresh(wm):
    bad = OneTimeWorkRequest(helpers.boom)
    dependent = OneTimeWorkRequest(helpers.echo)
    wm.begin_unique_work(NAME, ExistingWorkPolicy.APPEND_OR_REPLACE, bad).then(dependent).enqueue()
    assert wm.wait(dependent, timeout=30).state is WorkState.FAILED
    fresh = OneTimeWorkRequest(helpers.add, input_data={"a": 2, "b": 3})
    operation = wm.enqueue_unique_work(NAME, ExistingWorkPolicy.APPEND_OR_REPLACE, [fresh])
    assert operation.enqueued == [fresh.id]
    info = wm.wait(fresh, timeout=30)
    assert info.state is WorkState.SUCCEEDED and info.output_data == {"sum": 5}
    assert info.prerequisites == ()
    assert [i.id for i in wm.get_work_infos_for_unique_work(NAME)] == [fresh.id]
    assert _info(wm, bad).state is WorkState.FAILED          # kept as history
    assert _info(wm, bad).unique_work_name is None


def test_append_or_replace_onto_a_healthy_chain_appends(wm):
    first = OneTimeWorkRequest(helpers.emit, input_data={"key": "k", "value": 1})
    wm.enqueue_unique_work(NAME, ExistingWorkPolicy.APPEND_OR_REPLACE, [first])
    second = OneTimeWorkRequest(helpers.echo)
    wm.enqueue_unique_work(NAME, ExistingWorkPolicy.APPEND_OR_REPLACE, [second])
    assert _info(wm, second).prerequisites == (first.id,)
    assert wm.wait(second, timeout=30).output_data == {"k": 1}


def test_begin_unique_work_then_puts_the_whole_chain_under_the_name(wm):
    a = OneTimeWorkRequest(helpers.emit, input_data={"key": "a", "value": 1})
    b = OneTimeWorkRequest(helpers.echo)
    c = OneTimeWorkRequest(helpers.echo)
    chain = wm.begin_unique_work(NAME, ExistingWorkPolicy.REPLACE, a).then(b).then(c)
    chain.enqueue()
    assert [i.state for i in wm.wait(chain, timeout=30)] == [WorkState.SUCCEEDED] * 3
    infos = wm.get_work_infos_for_unique_work(NAME)
    assert {i.id for i in infos} == {a.id, b.id, c.id}
    assert all(i.unique_work_name == NAME for i in infos)
    assert wm.get_work_info_by_id(c.id).output_data == {"a": 1}
    assert wm.get_work_infos_for_unique_work("no such name") == []


def test_then_after_an_enqueued_unique_continuation_keeps_the_name(wm, tmp_path):
    """WorkManager records every work of a named continuation under the name, whenever it
    is enqueued: APPEND then chains after it (order a, b, x), not next to it."""
    gate = tmp_path / "gate"
    a = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": str(gate), "value": 1})
    b = OneTimeWorkRequest(helpers.echo)
    x = OneTimeWorkRequest(helpers.echo)
    continuation = wm.begin_unique_work(NAME, ExistingWorkPolicy.APPEND, a)
    continuation.enqueue()
    continuation.then(b).enqueue()
    assert _info(wm, b).unique_work_name == NAME
    wm.enqueue_unique_work(NAME, ExistingWorkPolicy.APPEND, [x])
    assert _info(wm, x).prerequisites == (b.id,)
    assert _info(wm, x).state is WorkState.BLOCKED
    assert [i.id for i in wm.get_work_infos_for_unique_work(NAME)] == [a.id, b.id, x.id]
    helpers.touch(gate)
    done = wm.wait([a, b, x], timeout=30)
    assert [i.state for i in done] == [WorkState.SUCCEEDED] * 3
    assert done[0].finish_time <= done[1].start_time and done[1].finish_time <= done[2].start_time
    assert done[2].output_data["value"] == 1             # a's output, through b


def test_keep_and_cancel_unique_work_see_a_later_then(wm):
    a = OneTimeWorkRequest(helpers.emit, input_data={"key": "k", "value": 1})
    continuation = wm.begin_unique_work(NAME, ExistingWorkPolicy.KEEP, a)
    continuation.enqueue()
    assert wm.wait(a, timeout=30).state is WorkState.SUCCEEDED
    b = OneTimeWorkRequest(helpers.echo, initial_delay=3600)
    continuation.then(b).enqueue()
    assert _info(wm, b).state is WorkState.ENQUEUED
    newcomer = OneTimeWorkRequest(helpers.echo)
    operation = wm.enqueue_unique_work(NAME, ExistingWorkPolicy.KEEP, [newcomer])
    assert operation.dropped == [newcomer.id]          # b, under the name, is ENQUEUED
    assert [i.id for i in wm.get_work_infos_for_unique_work(NAME)] == [a.id, b.id]
    wm.cancel_unique_work(NAME)
    assert _info(wm, b).state is WorkState.CANCELLED
    assert _info(wm, a).state is WorkState.SUCCEEDED


def _enqueue_keep(store: str, gate: str, barrier, results) -> None:
    """In another process: enqueue unique work with KEEP, report what happened."""
    wm = WorkManager(store)
    request = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": gate})
    barrier.wait(30)
    operation = wm.enqueue_unique_work("race", ExistingWorkPolicy.KEEP, [request])
    results.put((request.id, operation.enqueued, operation.dropped))


def test_two_processes_enqueueing_with_keep_create_exactly_one_work(wm, tmp_path):
    gate = str(tmp_path / "gate")
    outcomes, exitcodes = helpers.run_together(_enqueue_keep, (wm.store_path, gate), 2, 60)
    assert exitcodes == [0, 0]
    winners = [o for o in outcomes if o[1]]
    losers = [o for o in outcomes if o[2]]
    assert len(winners) == 1 and len(losers) == 1
    infos = wm.get_work_infos_for_unique_work("race")
    assert [i.id for i in infos] == [winners[0][0]]
    assert wm.get_work_info_by_id(losers[0][0]) is None
    helpers.touch(gate)
    assert wm.wait(winners[0][0], timeout=30).state is WorkState.SUCCEEDED
