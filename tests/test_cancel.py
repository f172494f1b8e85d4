"""Cancelling end to end: queued, blocked and running work, stubborn workers, every cancel
call, late results and dependents of finished work."""

from __future__ import annotations

import pytest

from nbwork import (
    ExistingWorkPolicy,
    OneTimeWorkRequest,
    StopReason,
    WorkContinuation,
    WorkState,
)
from tests import helpers
from tests.conftest import wait_until
from tests.helpers import is_dead, read_ints

# Every test here starts a real scheduler and worker processes.
pytestmark = pytest.mark.slow


def _info(wm, request):
    return wm.get_work_info_by_id(request.id)


def _state(wm, request):
    return _info(wm, request).state


def _attempt_handled(wm, request) -> bool:
    """The scheduler has dealt with the end of the work's last attempt (internal record)."""
    spec = wm._store.get(request.id)
    return spec is not None and spec.attempt is None


def test_cancel_queued_work_with_a_long_initial_delay(wm):
    request = OneTimeWorkRequest(helpers.echo, initial_delay=3600)
    wm.enqueue(request)
    info = _info(wm, request)
    assert info.state is WorkState.ENQUEUED and info.next_schedule_time is not None
    operation = wm.cancel_work_by_id(request.id)
    assert operation.cancelled_running == []
    info = _info(wm, request)
    assert info.state is WorkState.CANCELLED
    assert info.run_attempt_count == 0 and info.finish_time is not None
    assert info.next_schedule_time is None
    assert wm.wait(request, timeout=5).state is WorkState.CANCELLED


def test_cancel_blocked_work_leaves_its_prerequisite_running(wm, tmp_path):
    gate = tmp_path / "gate"
    first = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": str(gate)})
    second = OneTimeWorkRequest(helpers.echo)
    third = OneTimeWorkRequest(helpers.echo)
    wm.begin_with(first).then(second).then(third).enqueue()
    assert _state(wm, second) is WorkState.BLOCKED
    wm.cancel_work_by_id(second.id)
    assert _state(wm, second) is WorkState.CANCELLED
    assert _state(wm, third) is WorkState.CANCELLED       # dependents go with it
    assert _state(wm, first) in (WorkState.ENQUEUED, WorkState.RUNNING)
    helpers.touch(gate)
    assert wm.wait(first, timeout=30).state is WorkState.SUCCEEDED
    assert _state(wm, second) is WorkState.CANCELLED       # terminal: never runs
    assert _info(wm, second).start_time is None


def test_a_running_worker_is_stopped_and_its_late_result_is_ignored(wm, tmp_path):
    request = OneTimeWorkRequest(helpers.StopAware, input_data={"dir": str(tmp_path)},
                                 tags=["stoppable"])
    wm.enqueue(request)
    wait_until(lambda: (tmp_path / "started").exists(), what="the worker to start")
    worker_pid = int((tmp_path / "started").read_text())
    operation = wm.cancel_work_by_id(request.id)
    assert operation.cancelled_running == [request.id]
    wait_until(lambda: (tmp_path / "on_stopped").exists(), what="on_stopped() to be called")
    wait_until(lambda: (tmp_path / "saw_stop").exists(), what="the worker to see is_stopped")
    assert (tmp_path / "saw_stop").read_text() == "CANCELLED_BY_APP"
    # The worker returned Result.success after the stop: that result must not count. (It
    # cooperated, so its warm worker process lives on for the next attempt.)
    wait_until(lambda: _attempt_handled(wm, request), what="the scheduler to handle the end")
    assert not is_dead(worker_pid)
    info = _info(wm, request)
    assert info.state is WorkState.CANCELLED
    assert info.stop_reason is StopReason.CANCELLED_BY_APP
    assert info.output_data == {}
    assert "stop requested (CANCELLED_BY_APP)" in wm.read_log(request.id)


def test_a_worker_ignoring_the_stop_is_terminated_with_its_process_group(
        store_path, tmp_path, monkeypatch):
    monkeypatch.setenv("NBWORK_STOP_GRACE", "0.5")   # read when the scheduler is started
    from nbwork import WorkManager

    wm = WorkManager(store_path)
    request = OneTimeWorkRequest(helpers.Stubborn, input_data={"dir": str(tmp_path)})
    wm.enqueue(request)
    pids_file = tmp_path / "pids"
    wait_until(pids_file.exists, what="the stubborn worker to start its grandchild")
    worker_pid, grandchild_pid = read_ints(pids_file)
    assert not is_dead(worker_pid) and not is_dead(grandchild_pid)
    wm.cancel_work_by_id(request.id)
    assert _state(wm, request) is WorkState.CANCELLED     # at once, in the store
    wait_until(lambda: is_dead(worker_pid), timeout=20, what="the worker to be terminated")
    wait_until(lambda: is_dead(grandchild_pid), timeout=20, what="its grandchild to be killed")
    wait_until(lambda: _attempt_handled(wm, request), what="the scheduler to handle the end")
    assert _state(wm, request) is WorkState.CANCELLED
    with open(f"{store_path}/scheduler.log") as log:
        assert "ignored its stop; terminating it" in log.read()


def test_cancel_all_work_by_tag(wm, tmp_path):
    gate = tmp_path / "gate"
    tagged_running = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": str(gate)},
                                        tags=["batch"])
    tagged_queued = OneTimeWorkRequest(helpers.echo, initial_delay=3600, tags=["batch", "x"])
    tagged_blocked = OneTimeWorkRequest(helpers.echo, tags=["batch"])
    other = OneTimeWorkRequest(helpers.echo, initial_delay=3600, tags=["other"])
    untagged_dependent = OneTimeWorkRequest(helpers.echo)
    wm.enqueue([tagged_queued, other])
    wm.begin_with(tagged_running).then(tagged_blocked).then(untagged_dependent).enqueue()
    wait_until(lambda: _state(wm, tagged_running) is WorkState.RUNNING, what="work to run")
    operation = wm.cancel_all_work_by_tag("batch")
    assert operation.cancelled_running == [tagged_running.id]
    for request in (tagged_running, tagged_queued, tagged_blocked, untagged_dependent):
        assert _state(wm, request) is WorkState.CANCELLED
    assert _state(wm, other) is WorkState.ENQUEUED
    info = wm.wait(tagged_running, timeout=30)
    assert info.state is WorkState.CANCELLED
    assert wm.cancel_all_work_by_tag("no such tag").cancelled_running == []


def test_cancel_unique_work(wm, tmp_path):
    gate = tmp_path / "gate"
    first = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": str(gate)})
    second = OneTimeWorkRequest(helpers.echo)
    bystander = OneTimeWorkRequest(helpers.echo, initial_delay=3600)
    wm.begin_unique_work("unique", ExistingWorkPolicy.REPLACE, first).then(second).enqueue()
    wm.enqueue_unique_work("another", ExistingWorkPolicy.REPLACE, [bystander])
    wait_until(lambda: _state(wm, first) is WorkState.RUNNING, what="the unique work to run")
    wm.cancel_unique_work("unique")
    assert [i.state for i in wm.get_work_infos_for_unique_work("unique")] == [
        WorkState.CANCELLED, WorkState.CANCELLED]
    assert _state(wm, bystander) is WorkState.ENQUEUED
    wait_until(lambda: _attempt_handled(wm, first), what="the running work to be stopped")
    assert _state(wm, first) is WorkState.CANCELLED


def test_cancel_all_work(wm, tmp_path):
    gate = tmp_path / "gate"
    running = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": str(gate)})
    blocked = OneTimeWorkRequest(helpers.echo)
    queued = OneTimeWorkRequest(helpers.echo, initial_delay=3600)
    done = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 2})
    wm.enqueue(done)
    assert wm.wait(done, timeout=30).state is WorkState.SUCCEEDED
    wm.begin_with(running).then(blocked).enqueue()
    wm.enqueue(queued)
    wait_until(lambda: _state(wm, running) is WorkState.RUNNING, what="work to run")
    operation = wm.cancel_all_work()
    assert operation.cancelled_running == [running.id]
    for request in (running, blocked, queued):
        assert _state(wm, request) is WorkState.CANCELLED
    assert _state(wm, done) is WorkState.SUCCEEDED        # finished work is untouched
    wait_until(lambda: _attempt_handled(wm, running), what="the running work to be stopped")
    assert wm.get_work_infos(None) and all(
        i.state.is_finished for i in wm.get_work_infos())


def test_cancelling_finished_work_cancels_its_unfinished_dependents(wm, tmp_path):
    first = OneTimeWorkRequest(helpers.emit, input_data={"key": "k", "value": 1})
    second = OneTimeWorkRequest(helpers.StopAware, input_data={"dir": str(tmp_path)})
    third = OneTimeWorkRequest(helpers.echo)
    wm.begin_with(first).then(second).then(third).enqueue()
    wait_until(lambda: (tmp_path / "started").exists(), what="the second step to run")
    assert _state(wm, first) is WorkState.SUCCEEDED
    operation = wm.cancel_work_by_id(first.id)
    assert operation.cancelled_running == [second.id]
    assert _state(wm, first) is WorkState.SUCCEEDED
    assert _info(wm, first).output_data == {"k": 1}
    assert _state(wm, second) is WorkState.CANCELLED
    assert _state(wm, third) is WorkState.CANCELLED
    wait_until(lambda: (tmp_path / "on_stopped").exists(), what="the running step to stop")
    wait_until(lambda: _attempt_handled(wm, second), what="the scheduler to handle the end")
    assert _state(wm, second) is WorkState.CANCELLED


def test_cancelling_unknown_or_finished_work_changes_nothing(wm):
    done = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 2})
    wm.enqueue(done)
    before = wm.wait(done, timeout=30)
    assert wm.cancel_work_by_id(done.id).cancelled_running == []
    assert wm.cancel_work_by_id("00000000-0000-0000-0000-000000000000").cancelled_running == []
    assert wm.get_work_info_by_id(done.id) == before


def test_cancelling_a_coroutine_worker_cancels_its_coroutine(wm, tmp_path):
    request = OneTimeWorkRequest(helpers.AsyncStopAware, input_data={"dir": str(tmp_path)})
    wm.enqueue(request)
    wait_until(lambda: (tmp_path / "started").exists(), what="the coroutine to start")
    worker_pid = int((tmp_path / "started").read_text())
    wm.cancel_work_by_id(request.id)
    wait_until(lambda: (tmp_path / "cancelled").exists(), what="the coroutine to be cancelled")
    wait_until(lambda: _attempt_handled(wm, request), what="the scheduler to handle the end")
    assert not is_dead(worker_pid)  # it cooperated: its warm process stays for the next work
    info = _info(wm, request)
    assert info.state is WorkState.CANCELLED and info.output_data == {}


def test_cancel_by_tag_or_unique_name_leaves_the_dependents_of_finished_work_alone(wm):
    """WorkManager selects the *unfinished* work with the tag or name; only a cancel by id
    starts from a finished work and reaches its dependents."""
    tagged = OneTimeWorkRequest(helpers.emit, input_data={"key": "k", "value": 1},
                                tags=["done"])
    after_tagged = OneTimeWorkRequest(helpers.echo, initial_delay=3600)
    named = OneTimeWorkRequest(helpers.emit, input_data={"key": "n", "value": 2})
    after_named = OneTimeWorkRequest(helpers.echo, initial_delay=3600)
    wm.begin_with(tagged).then(after_tagged).enqueue()
    # combine(): a dependent that is not under the name itself.
    unique = wm.begin_unique_work("finished", ExistingWorkPolicy.KEEP, named)
    WorkContinuation.combine([unique]).then(after_named).enqueue()
    wm.wait([tagged, named], timeout=30)
    assert _info(wm, after_named).unique_work_name is None
    assert _state(wm, after_tagged) is _state(wm, after_named) is WorkState.ENQUEUED

    wm.cancel_all_work_by_tag("done")
    wm.cancel_unique_work("finished")
    assert _state(wm, after_tagged) is WorkState.ENQUEUED
    assert _state(wm, after_named) is WorkState.ENQUEUED
    wm.cancel_work_by_id(tagged.id)                     # by id: the dependents too
    assert _state(wm, after_tagged) is WorkState.CANCELLED
    assert _state(wm, after_named) is WorkState.ENQUEUED
