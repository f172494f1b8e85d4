"""Guaranteed execution when a worker process dies: killed from outside (SIGKILL, what the
out-of-memory killer sends), a segfault, ``os._exit``, or a MemoryError under a small
RLIMIT_AS. The attempt is recorded with a clear error, retried per the request's backoff,
the work is failed after MAX_CONSECUTIVE_CRASHES deaths in a row (it cannot crash-loop
forever), and nothing the attempt started is left running."""

from __future__ import annotations

import os
import signal

import pytest

from nbwork import BackoffPolicy, OneTimeWorkRequest, WorkManager, WorkState
from nbwork._lock import holder_pid
from nbwork._rules import MAX_CONSECUTIVE_CRASHES
from nbwork._store import Store
from tests.conftest import wait_until
from tests.helpers import add, is_dead, stop_scheduler
from tests.reliability import DieHow, read_pid_lines

# Every test here starts a real scheduler and worker processes.
pytestmark = pytest.mark.slow


@pytest.fixture
def rwm(store_path):
    """A WorkManager on a store that journals every state change."""
    Store(store_path).enable_journal()
    manager = WorkManager(store_path)
    yield manager
    stop_scheduler(store_path)


def _spec(wm, request):
    return wm._store.get(request.id)


def _kill_each_attempt(wm, request, folder, attempts: int) -> None:
    """The test plays the out-of-memory killer: SIGKILL each attempt's process."""
    for n in range(1, attempts + 1):
        wait_until(lambda n=n: len(read_pid_lines(folder)) == n, what=f"attempt {n}")
        worker, _ = read_pid_lines(folder)[-1]
        os.kill(worker, signal.SIGKILL)


WAYS = {
    "sigkill": "worker process died: signal 9 (SIGKILL)",
    "segfault": "worker process died: signal 11 (SIGSEGV)",
    "exit": "worker process exited with code 3 before returning a result",
}


@pytest.mark.parametrize("how", sorted(WAYS))
def test_a_dying_worker_is_retried_then_failed_and_leaves_no_process(rwm, tmp_path, how):
    assert MAX_CONSECUTIVE_CRASHES == 3   # the documented default (README, RELIABILITY.md)
    request = OneTimeWorkRequest(DieHow, input_data={"dir": str(tmp_path), "how": how},
                                 backoff_policy=BackoffPolicy.LINEAR, backoff_delay=0)
    scheduler = rwm.daemon.start()
    rwm.enqueue(request)
    if how == "sigkill":
        _kill_each_attempt(rwm, request, tmp_path, MAX_CONSECUTIVE_CRASHES)
    wait_until(lambda: _spec(rwm, request).state.is_finished, what="the work to finish")
    spec = _spec(rwm, request)
    assert spec.state is WorkState.FAILED
    assert spec.run_attempt_count == MAX_CONSECUTIVE_CRASHES
    assert spec.error.startswith(WAYS[how])
    assert "died 3 times in a row; the work is failed so it cannot crash forever" in spec.error
    # Two retries, then the failure: every death was recorded, none lost.
    assert rwm._store.journal_of(request.id) == [
        [None, "ENQUEUED", 0],
        ["ENQUEUED", "RUNNING", 1], ["RUNNING", "ENQUEUED", 1],
        ["ENQUEUED", "RUNNING", 2], ["RUNNING", "ENQUEUED", 2],
        ["ENQUEUED", "RUNNING", 3], ["RUNNING", "FAILED", 3]]
    # Each attempt's process and the grandchild it started are gone.
    lines = read_pid_lines(tmp_path)
    assert len(lines) == MAX_CONSECUTIVE_CRASHES
    for worker, grandchild in lines:
        wait_until(lambda w=worker, g=grandchild: is_dead(w) and is_dead(g),
                   what=f"attempt process {worker} and its grandchild {grandchild} to end")
    # The scheduler was not affected, and still runs work.
    assert holder_pid(rwm.store_path) == scheduler
    after = OneTimeWorkRequest(add, input_data={"a": 1, "b": 2})
    rwm.enqueue(after)
    wait_until(lambda: _spec(rwm, after).state.is_finished, what="a work after the crashes")
    assert _spec(rwm, after).output == {"sum": 3}


def test_a_crash_is_retried_after_the_requests_backoff(rwm, tmp_path):
    delay = 3600.0
    request = OneTimeWorkRequest(DieHow, input_data={"dir": str(tmp_path), "how": "exit"},
                                 backoff_policy=BackoffPolicy.LINEAR, backoff_delay=delay)
    rwm.enqueue(request)
    wait_until(lambda: _spec(rwm, request).state is WorkState.ENQUEUED
               and _spec(rwm, request).run_attempt_count == 1, what="the first crash")
    observed = rwm.clock.now()
    spec = _spec(rwm, request)
    assert spec.error.startswith("worker process exited with code 3")
    assert spec.consecutive_crashes == 1
    # Due one backoff (LINEAR: delay x 1 attempt) after the crash, which happened between the
    # attempt's start and now.
    assert spec.start_time + delay <= spec.next_run_at <= observed + delay
    info = rwm.get_work_info_by_id(request.id)
    assert info.next_schedule_time is not None and info.error == spec.error


def test_deaths_fewer_than_the_bound_then_a_success_is_a_success(rwm, tmp_path):
    gate = tmp_path / "gate"
    request = OneTimeWorkRequest(DieHow, backoff_delay=0, input_data={
        "dir": str(tmp_path), "how": "sigkill", "gate": str(gate)})
    rwm.enqueue(request)
    _kill_each_attempt(rwm, request, tmp_path, MAX_CONSECUTIVE_CRASHES - 1)
    wait_until(lambda: len(read_pid_lines(tmp_path)) == MAX_CONSECUTIVE_CRASHES,
               what="the third attempt")
    gate.touch()   # the third attempt is not killed: it sees the gate and succeeds
    wait_until(lambda: _spec(rwm, request).state.is_finished, what="the work to finish")
    spec = _spec(rwm, request)
    assert spec.state is WorkState.SUCCEEDED and spec.output == {"survived": 2}
    assert spec.consecutive_crashes == 0 and spec.error is None
    assert [e[1] for e in rwm._store.journal_of(request.id)] == [
        "ENQUEUED", "RUNNING", "ENQUEUED", "RUNNING", "ENQUEUED", "RUNNING", "SUCCEEDED"]


def test_a_memory_error_under_a_small_address_space_fails_only_its_work(rwm, tmp_path):
    request = OneTimeWorkRequest(DieHow, input_data={"dir": str(tmp_path), "how": "memory"})
    scheduler = rwm.daemon.start()
    rwm.enqueue(request)
    wait_until(lambda: _spec(rwm, request).state.is_finished, what="the work to finish")
    spec = _spec(rwm, request)
    assert spec.state is WorkState.FAILED
    assert "MemoryError" in spec.error           # the worker's own traceback, kept
    assert spec.error.rstrip().endswith("MemoryError") and "in do_work" in spec.error
    assert spec.run_attempt_count == 1           # an exception is a failure, not a crash
    [(worker, grandchild)] = read_pid_lines(tmp_path)
    wait_until(lambda: is_dead(grandchild), what="the attempt's grandchild to end")
    assert holder_pid(rwm.store_path) == scheduler
    after = OneTimeWorkRequest(add, input_data={"a": 2, "b": 2})
    rwm.enqueue(after)
    wait_until(lambda: _spec(rwm, after).state.is_finished, what="a work after it")
    assert _spec(rwm, after).output == {"sum": 4}
    assert worker > 0
