"""Guaranteed execution when the scheduler dies: its supervisor restarts it within seconds
with no client call, the attempts it left running are recovered (not lost, not left RUNNING,
their orphaned processes gone), and a succeeded work never completes twice.

These tests only *read* the store after killing a scheduler: every WorkManager call that
may start a scheduler (enqueue, wait, a new WorkManager...) would hide a missing restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from nbwork import OneTimeWorkRequest, WorkManager, WorkState
from nbwork._daemon import Daemon
from nbwork._lock import holder_pid
from nbwork._store import Store
from tests.conftest import wait_until
from tests.helpers import is_dead, stop_scheduler, touch
from tests.reliability import (
    RecordThenWait,
    read_pid_lines,
    scheduler_log,
    succeeded_count,
    supervisor_of,
    supervisors,
)

# Every test here starts a real scheduler and worker processes.
pytestmark = pytest.mark.slow

RESUME_WITHIN = 5.0  # seconds: the bound for work to resume after a scheduler death


@pytest.fixture
def rwm(store_path):
    """A WorkManager on a store that journals every state change."""
    Store(store_path).enable_journal()
    manager = WorkManager(store_path)
    yield manager
    stop_scheduler(store_path)


def _spec(wm, request):
    return wm._store.get(request.id)


def _gated(tmp_path) -> OneTimeWorkRequest:
    return OneTimeWorkRequest(RecordThenWait, input_data={
        "dir": str(tmp_path), "gate": str(tmp_path / "gate")})


def test_a_killed_scheduler_is_restarted_within_5_s_with_no_client_call(rwm, tmp_path):
    request = _gated(tmp_path)
    rwm.enqueue(request)
    wait_until(lambda: len(read_pid_lines(tmp_path)) == 1, what="the first attempt")
    [(worker, grandchild)] = read_pid_lines(tmp_path)
    old = wait_until(lambda: holder_pid(rwm.store_path), what="the scheduler")
    supervisor = supervisor_of(old)
    assert supervisor is not None, "the scheduler must run under a supervisor"
    # The supervisor is detached too: a kernel restart (which kills the kernel's process
    # group) cannot reach it.
    assert os.getsid(supervisor.pid) == supervisor.pid != os.getsid(0)

    os.kill(old, signal.SIGKILL)
    killed_at = time.monotonic()

    def within_5_s() -> float:
        return max(0.0, killed_at + RESUME_WITHIN - time.monotonic())

    new = wait_until(lambda: holder_pid(rwm.store_path) not in (None, old),
                     timeout=within_5_s(), what="a new scheduler within 5 s of the kill")
    new = holder_pid(rwm.store_path)
    wait_until(lambda: len(read_pid_lines(tmp_path)) == 2, timeout=within_5_s(),
               what="the work to run again within 5 s of the kill")
    assert supervisor_of(new).pid == supervisor.pid          # restarted by the same supervisor
    # The orphaned attempt and its grandchild are gone: the work never runs twice at once.
    wait_until(lambda: is_dead(worker) and is_dead(grandchild), what="the orphans to end")
    spec = _spec(rwm, request)
    assert spec.state is WorkState.RUNNING and spec.run_attempt_count == 2
    assert spec.stop_reason is None

    touch(tmp_path / "gate")
    wait_until(lambda: _spec(rwm, request).state.is_finished, what="the work to finish")
    spec = _spec(rwm, request)
    assert spec.state is WorkState.SUCCEEDED and spec.output == {"seen": 1}
    store = rwm._store
    assert store.journal_of(request.id) == [
        [None, "ENQUEUED", 0], ["ENQUEUED", "RUNNING", 1],
        ["RUNNING", "ENQUEUED", 1],                              # recovered, not lost
        ["ENQUEUED", "RUNNING", 2], ["RUNNING", "SUCCEEDED", 2]]
    assert succeeded_count(store, request.id) == 1
    log = scheduler_log(rwm.store_path)
    assert f"scheduler {old} killed by signal 9 (SIGKILL); restarting it" in log
    assert f"recovering {request.id}" in log


def test_a_scheduler_killed_again_and_again_is_restarted_each_time(rwm, tmp_path):
    request = _gated(tmp_path)
    rwm.enqueue(request)
    killed = []
    for round_ in range(1, 5):
        wait_until(lambda r=round_: len(read_pid_lines(tmp_path)) == r, timeout=RESUME_WITHIN,
                   what=f"attempt {round_} to start")
        pid = holder_pid(rwm.store_path)
        assert pid is not None and pid not in killed
        killed.append(pid)
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: len(read_pid_lines(tmp_path)) == 5, timeout=RESUME_WITHIN,
               what="attempt 5 to start")
    touch(tmp_path / "gate")
    wait_until(lambda: _spec(rwm, request).state.is_finished, what="the work to finish")
    spec = _spec(rwm, request)
    # Killed schedulers are not crashes of the work: it is not failed, and ran to success.
    assert spec.state is WorkState.SUCCEEDED and spec.run_attempt_count == 5
    assert succeeded_count(rwm._store, request.id) == 1
    *orphans, (_, last_grandchild) = read_pid_lines(tmp_path)
    for worker, grandchild in orphans:
        wait_until(lambda w=worker, g=grandchild: is_dead(w) and is_dead(g),
                   what="every orphaned attempt to end")
    # The last attempt's process may stay for the next attempt; what the attempt started not.
    wait_until(lambda: is_dead(last_grandchild), what="the last attempt's grandchild to end")


def test_after_a_reboot_the_first_client_use_resumes_the_work(rwm, tmp_path):
    request = _gated(tmp_path)
    rwm.enqueue(request)
    wait_until(lambda: len(read_pid_lines(tmp_path)) == 1, what="the first attempt")
    scheduler = holder_pid(rwm.store_path)
    supervisor = supervisor_of(scheduler)
    # A reboot ends every process at once, supervisor included.
    supervisor.kill()
    os.kill(scheduler, signal.SIGKILL)
    wait_until(lambda: is_dead(scheduler) and is_dead(supervisor.pid), what="the 'reboot'")
    wait_until(lambda: all(is_dead(p) for p in read_pid_lines(tmp_path)[0]),
               what="the attempt to end with its scheduler")
    assert _spec(rwm, request).state is WorkState.RUNNING     # as the dead scheduler left it
    assert holder_pid(rwm.store_path) is None

    touch(tmp_path / "gate")
    WorkManager(rwm.store_path)          # the first client use after the reboot
    wait_until(lambda: _spec(rwm, request).state.is_finished, what="the work to finish")
    spec = _spec(rwm, request)
    assert spec.state is WorkState.SUCCEEDED and spec.run_attempt_count == 2
    assert supervisor_of(holder_pid(rwm.store_path)) is not None


def test_the_supervisor_ends_with_a_scheduler_that_exits_idle(store_path):
    Store(store_path)
    pid = Daemon(store_path, idle_exit=0.3).start()
    supervisor = supervisor_of(pid)
    assert supervisor is not None
    wait_until(lambda: is_dead(pid) and is_dead(supervisor.pid), what="both to exit")
    assert holder_pid(store_path) is None
    assert "restarting" not in scheduler_log(store_path)


def test_stop_ends_the_supervisor_too_and_nothing_restarts(rwm, tmp_path):
    rwm.enqueue(_gated(tmp_path))
    wait_until(lambda: read_pid_lines(tmp_path), what="the attempt")
    pid = rwm.daemon.pid
    supervisor = supervisor_of(pid)
    assert rwm.daemon.stop() is True
    wait_until(lambda: is_dead(pid) and is_dead(supervisor.pid), what="both to exit")
    assert holder_pid(rwm.store_path) is None and not supervisors(rwm.store_path)


def test_stop_of_a_scheduler_that_ignores_sigterm_kills_its_supervisor_first(rwm, tmp_path):
    rwm.enqueue(_gated(tmp_path))
    wait_until(lambda: read_pid_lines(tmp_path), what="the attempt")
    pid = rwm.daemon.pid
    supervisor = supervisor_of(pid)
    os.kill(pid, signal.SIGSTOP)          # a hung scheduler: SIGTERM does nothing
    try:
        assert rwm.daemon.stop(timeout=0.5) is True
    finally:
        if not is_dead(pid):
            os.kill(pid, signal.SIGCONT)
    # Killed with SIGKILL, which its supervisor would have taken for a crash.
    wait_until(lambda: is_dead(pid) and is_dead(supervisor.pid), what="both to end")
    assert holder_pid(rwm.store_path) is None and not supervisors(rwm.store_path)


def test_of_two_schedulers_started_at_once_one_runs_and_the_other_supervisor_leaves(
        store_path):
    Store(store_path)
    first, second = Daemon(store_path), Daemon(store_path)
    first.spawn()
    second.spawn()
    pid = wait_until(lambda: holder_pid(store_path), what="a scheduler")
    wait_until(lambda: len(supervisors(store_path)) == 1, what="the loser's supervisor to exit")
    assert supervisors(store_path)[0].pid == supervisor_of(pid).pid
    assert "restarting" not in scheduler_log(store_path)


def test_the_supervisor_gives_up_on_a_scheduler_that_cannot_start(tmp_path):
    store = tmp_path / "store"
    Store(str(store)).close()
    os.chmod(store, 0o777)        # a store others can write: every scheduler refuses it
    code = ("import sys, nbwork._supervisor as s; s.RESTART_PAUSE = 0.01; "
            "s.MAX_FAILURES = 3; sys.exit(s.supervise(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "--store", str(store)], timeout=120,
                          capture_output=True, text=True, start_new_session=True)
    assert done.returncode == 1
    assert done.stderr.count("exited with code 1; restarting it") == 2
    assert "it failed 3 times in a row, so it is not restarted" in done.stderr
    assert "can be written by other users" in done.stderr


def test_sigterm_to_the_supervisor_stops_the_scheduler_cleanly(rwm, tmp_path):
    request = _gated(tmp_path)
    rwm.enqueue(request)
    wait_until(lambda: read_pid_lines(tmp_path), what="the attempt")
    pid = rwm.daemon.pid
    supervisor = supervisor_of(pid)
    supervisor.terminate()
    wait_until(lambda: is_dead(pid) and is_dead(supervisor.pid), what="both to exit")
    assert psutil.pid_exists(pid) is False or is_dead(pid)
    spec = _spec(rwm, request)
    # A clean stop puts the running work back in the queue at once (no recovery needed).
    assert spec.state is WorkState.ENQUEUED and spec.stop_reason == "SCHEDULER_RESTARTED"
