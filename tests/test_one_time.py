"""One-time work end to end: a real scheduler runs real worker processes on a temp store."""

from __future__ import annotations

import os

import pytest

from nbwork import InvalidRequestError, OneTimeWorkRequest, PeriodicWorkRequest, WorkState
from tests import helpers
from tests.conftest import wait_until
from tests.helpers import read_ints

# Every test here starts a real scheduler and worker processes.
pytestmark = pytest.mark.slow


def test_function_worker_runs_and_its_output_is_kept(wm):
    request = OneTimeWorkRequest(helpers.add, input_data={"a": 2, "b": 40})
    operation = wm.enqueue(request)
    assert operation.enqueued == [request.id]
    info = wm.wait(request.id, timeout=30)
    assert info.state is WorkState.SUCCEEDED
    assert info.output_data == {"sum": 42}
    assert info.error is None


def test_worker_subclass_sees_its_attempt_and_work_info_has_every_field(wm):
    request = OneTimeWorkRequest(helpers.Describe, input_data={"k": 1}, tags=["t1", "t2"])
    wm.enqueue(request)
    info = wm.wait(request, timeout=30)
    assert info.state is WorkState.SUCCEEDED
    out = info.output_data
    assert out["id"] == request.id
    assert out["tags"] == ["t1", "t2"]
    assert out["run_attempt_count"] == 0          # the worker sees earlier attempts: none
    assert out["input"] == ["k"]
    assert out["pid"] != os.getpid()              # it ran in another process
    assert info.run_attempt_count == 1            # the stored count after one run
    assert info.worker_name == "tests.helpers.Describe"
    assert info.tags == frozenset({"t1", "t2"})
    assert info.input_data == {"k": 1}
    assert info.enqueue_time is not None and info.start_time is not None
    assert info.finish_time is not None
    assert info.enqueue_time <= info.start_time <= info.finish_time
    assert info.log_path == os.path.join(wm.store_path, "logs", f"{request.id}.log")
    assert info.next_schedule_time is None and info.stop_reason is None
    assert info.progress == {} and info.unique_work_name is None
    assert wm.get_work_info_by_id(request.id) == info


def test_stdout_and_stderr_go_to_the_work_log(wm):
    request = OneTimeWorkRequest(helpers.chatty)
    wm.enqueue(request)
    info = wm.wait(request.id, timeout=30)
    assert info.state is WorkState.SUCCEEDED
    log = wm.read_log(request.id)
    assert "to-stdout: hello from the worker" in log
    assert "to-stderr: warning from the worker" in log
    with open(info.log_path) as f:
        assert f.read() == log


def test_read_log_of_work_that_printed_nothing_is_empty(wm):
    request = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 1})
    wm.enqueue(request)
    wm.wait(request.id, timeout=30)
    assert wm.read_log(request.id) == ""


def test_uncaught_exception_fails_the_work_with_its_traceback(wm):
    request = OneTimeWorkRequest(helpers.boom)
    wm.enqueue(request)
    info = wm.wait(request.id, timeout=30)
    assert info.state is WorkState.FAILED
    assert "Traceback (most recent call last)" in info.error
    assert "ValueError: boom-4711: the worker raised on purpose" in info.error
    assert "boom-4711" in wm.read_log(request.id)
    assert info.output_data == {}
    assert info.run_attempt_count == 1


def test_an_output_over_the_size_limit_fails_the_work_with_a_clear_error(wm):
    function = OneTimeWorkRequest(helpers.too_big)
    subclass = OneTimeWorkRequest(helpers.TooBigResult)
    wm.enqueue([function, subclass])
    for info in wm.wait([function.id, subclass.id], timeout=30):
        assert info.state is WorkState.FAILED
        assert "over the limit of 10240 bytes" in info.error
        assert "DataError" in info.error


def test_an_output_that_is_not_data_fails_the_work_with_a_clear_error(wm):
    request = OneTimeWorkRequest(helpers.not_data)
    wm.enqueue(request)
    info = wm.wait(request.id, timeout=30)
    assert info.state is WorkState.FAILED
    assert "Data key 'things': a set cannot be stored in Data" in info.error


def test_retry_runs_again_and_the_attempt_count_grows(wm, tmp_path):
    record = str(tmp_path / "attempts")
    request = OneTimeWorkRequest(helpers.RetryTwice, input_data={"record": record},
                                 backoff_delay=0)
    wm.enqueue(request)
    info = wm.wait(request.id, timeout=30)
    assert info.state is WorkState.SUCCEEDED
    assert read_ints(record) == [0, 1, 2]
    assert info.output_data == {"seen": 2}
    assert info.run_attempt_count == 3


def test_wait_accepts_several_targets_and_times_out_naming_the_state(wm, tmp_path):
    blocked = OneTimeWorkRequest(helpers.wait_for_gate, input_data={"gate": str(tmp_path / "g")})
    quick = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 2})
    wm.enqueue([blocked, quick])
    assert wm.wait(quick, timeout=30).state is WorkState.SUCCEEDED
    try:
        wm.wait([blocked.id, quick.id], timeout=0.2)
    except TimeoutError as exc:
        assert blocked.id[:8] in str(exc)
    else:
        raise AssertionError("wait() returned before the gated work finished")
    helpers.touch(tmp_path / "g")
    infos = wm.wait([blocked.id, quick.id], timeout=30)
    assert [i.state for i in infos] == [WorkState.SUCCEEDED] * 2


def test_progress_is_seen_while_running_and_cleared_after(wm, tmp_path):
    gate = tmp_path / "gate"
    subclass = OneTimeWorkRequest(helpers.Progressing, input_data={"gate": str(gate)})
    function = OneTimeWorkRequest(helpers.progressing_function, input_data={"gate": str(gate)})
    wm.enqueue([subclass, function])
    wait_until(lambda: wm.get_work_info_by_id(subclass.id).progress
               == {"percent": 50, "step": "half"}, what="the worker's progress")
    wait_until(lambda: wm.get_work_info_by_id(function.id).progress == {"percent": 10},
               what="the function's progress")
    assert wm.get_work_info_by_id(subclass.id).state is WorkState.RUNNING
    helpers.touch(gate)
    for info in wm.wait([subclass, function], timeout=30):
        assert info.state is WorkState.SUCCEEDED
        assert info.progress == {}


def test_a_coroutine_worker_runs(wm):
    request = OneTimeWorkRequest(helpers.AsyncAdd, input_data={"a": 2, "b": 3})
    wm.enqueue(request)
    info = wm.wait(request, timeout=30)
    assert info.state is WorkState.SUCCEEDED and info.output_data == {"sum": 5}


def test_periodic_work_is_enqueued_with_enqueue_and_waits_for_its_next_period(wm, tmp_path):
    record = str(tmp_path / "runs")
    request = PeriodicWorkRequest(helpers.RecordRun, repeat_interval=3600,
                                  input_data={"record": record})
    assert wm.enqueue(request).enqueued == [request.id]
    wait_until(lambda: len(read_ints(record)) == 1, what="the first period")
    info = wait_until(lambda: (i := wm.get_work_info_by_id(request.id)).state
                      is WorkState.ENQUEUED and i, what="the wait for the next period")
    assert info.is_periodic and info.run_attempt_count == 0    # reset between periods
    assert info.next_schedule_time is not None and info.next_schedule_time > info.start_time
    wm.cancel_work_by_id(request.id)
    assert wm.wait(request, timeout=30).state is WorkState.CANCELLED
    with pytest.raises(InvalidRequestError, match="cannot be chained"):
        wm.begin_with(PeriodicWorkRequest(helpers.RecordRun, repeat_interval=60))


def test_update_work_changes_queued_work_and_not_finished_work(wm):
    request = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 1}, initial_delay=3600)
    wm.enqueue(request)
    changed = OneTimeWorkRequest(helpers.add, input_data={"a": 20, "b": 22}, id=request.id,
                                 tags=["v2"])
    assert wm.update_work(changed) == "APPLIED_IMMEDIATELY"
    info = wm.wait(request, timeout=30)         # no initial delay any more: it runs now
    assert info.output_data == {"sum": 42}
    assert info.generation == 1 and info.tags == frozenset({"v2"})
    assert wm.update_work(changed) == "NOT_APPLIED"
    assert wm.get_work_info_by_id(request.id) == info


def test_update_work_of_running_work_applies_from_its_next_run(wm, tmp_path):
    gate = tmp_path / "gate"
    request = OneTimeWorkRequest(helpers.GateWorker, input_data={"gate": str(gate), "value": 1})
    wm.enqueue(request)
    wait_until(lambda: wm.get_work_info_by_id(request.id).state is WorkState.RUNNING,
               what="the work to run")
    changed = OneTimeWorkRequest(helpers.GateWorker, id=request.id,
                                 input_data={"gate": str(gate), "value": 2})
    assert wm.update_work(changed) == "APPLIED_FOR_NEXT_RUN"
    helpers.touch(gate)
    info = wm.wait(request, timeout=30)
    assert info.output_data == {"value": 1}     # the attempt in flight kept its input
    assert info.generation == 1


def test_update_work_refuses_unknown_work_and_a_change_of_kind(wm):
    with pytest.raises(InvalidRequestError, match="no work with id"):
        wm.update_work(OneTimeWorkRequest(helpers.echo))
    request = OneTimeWorkRequest(helpers.echo, initial_delay=3600)
    wm.enqueue(request)
    before = wm.get_work_infos()
    with pytest.raises(InvalidRequestError, match="cannot become periodic"):
        wm.update_work(PeriodicWorkRequest(helpers.echo, repeat_interval=60, id=request.id))
    assert wm.get_work_infos() == before
