"""The detached scheduler process: session, exclusivity, wake-up, stop and restart, idle
exit, crash recovery, crashing workers, and workers whose defining process is gone."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading

import psutil
import pytest

from nbwork import OneTimeWorkRequest, StopReason, WorkManager, WorkState
from nbwork._daemon import Daemon
from nbwork._lock import holder_pid, last_holder_pid
from nbwork._wake import notify
from tests import helpers
from tests.conftest import wait_until
from tests.helpers import is_dead, read_ints, scheduler_processes

# Every test here starts a real scheduler and worker processes.
pytestmark = pytest.mark.slow


def _state(wm, request):
    return wm.get_work_info_by_id(request.id).state


def _reap(pid: int) -> None:
    """Wait for a process to end (reaping it if it is our child)."""
    try:
        psutil.Process(pid).wait(20)
    except psutil.NoSuchProcess:
        pass


def test_the_scheduler_is_detached_in_a_session_of_its_own(wm):
    pid = wm.daemon.start()
    assert pid != os.getpid()
    assert os.getsid(pid) != os.getsid(0)
    assert os.getsid(pid) == pid              # a session leader: a kernel restart can't reach it
    assert os.getpgid(pid) != os.getpgid(0)
    assert psutil.Process(pid).cwd() == wm.store_path
    assert wm.daemon.start() == pid           # start() of a running scheduler is a no-op
    assert wm.daemon.is_running


def _start_and_enqueue(store: str, barrier, results) -> None:
    """In another process: enqueue work and start the scheduler at the same moment as others."""
    wm = WorkManager(store)
    request = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 2})
    barrier.wait(30)
    wm.enqueue(request)
    pid = wm.daemon.start()
    info = wm.wait(request, timeout=60)
    results.put((pid, info.state.value, info.output_data["sum"]))


@pytest.mark.slow
def test_exactly_one_scheduler_when_four_processes_start_it_at_once(wm):
    outcomes, exitcodes = helpers.run_together(_start_and_enqueue, (wm.store_path,), 4, 90)
    assert exitcodes == [0] * 4
    pids = {pid for pid, _, _ in outcomes}
    assert len(pids) == 1                      # every client found the same scheduler
    assert [(state, total) for _, state, total in outcomes] == [("SUCCEEDED", 3)] * 4
    (pid,) = pids
    assert holder_pid(wm.store_path) == pid
    # Schedulers that lost the race exit by themselves; exactly one stays.
    wait_until(lambda: [p.pid for p in scheduler_processes(wm.store_path)] == [pid],
               what="the extra schedulers to exit")


def test_an_enqueue_wakes_the_scheduler_through_its_fifo(wm):
    assert not notify(wm.store_path)          # no scheduler: nobody listens
    wm.daemon.start()
    # start() returns once the scheduler holds the lock; it opens the FIFO a moment later
    # (on a loaded machine, after it looked for a predecessor's leftover processes).
    wait_until(lambda: notify(wm.store_path), what="the scheduler to listen on its FIFO")
    for i in range(5):
        request = OneTimeWorkRequest(helpers.add, input_data={"a": i, "b": i})
        wm.enqueue(request)
        assert wm.wait(request, timeout=30).output_data == {"sum": 2 * i}


def test_stop_then_an_enqueue_starts_the_scheduler_again(wm):
    first_pid = wm.daemon.start()
    assert wm.daemon.stop() is True
    assert wm.daemon.pid is None
    wait_until(lambda: is_dead(first_pid), what="the stopped scheduler to exit")
    assert wm.daemon.stop() is False          # nothing to stop
    request = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 2})
    wm.enqueue(request)
    second_pid = wait_until(lambda: wm.daemon.pid, what="a new scheduler")
    assert second_pid != first_pid
    assert wm.wait(request, timeout=30).state is WorkState.SUCCEEDED


def test_stop_returns_running_work_to_the_queue_and_it_runs_later(wm, tmp_path):
    gate, started = tmp_path / "gate", tmp_path / "started"
    request = OneTimeWorkRequest(helpers.GateWorker, input_data={
        "gate": str(gate), "value": 3, "started": str(started)})
    wm.enqueue(request)
    # Begun, not only RUNNING: an attempt stopped before its process began it goes back to
    # the queue as if it had never left it (no stop reason, the attempt not counted).
    wait_until(started.exists, what="the attempt to begin")
    assert wm.daemon.stop() is True
    info = wm.get_work_info_by_id(request.id)
    assert info.state is WorkState.ENQUEUED    # not left RUNNING with no scheduler
    assert info.stop_reason is StopReason.SCHEDULER_RESTARTED
    assert info.run_attempt_count == 1
    helpers.touch(gate)
    info = wm.wait(request, timeout=30)        # a client call starts a scheduler again
    assert info.state is WorkState.SUCCEEDED and info.output_data == {"value": 3}
    assert info.run_attempt_count == 2


@pytest.mark.slow
def test_idle_exit_then_an_enqueue_restarts_the_scheduler(wm):
    pid = Daemon(wm.store_path, idle_exit=1).start()
    wait_until(lambda: is_dead(pid), timeout=30, what="the idle scheduler to exit")
    assert holder_pid(wm.store_path) is None
    request = OneTimeWorkRequest(helpers.add, input_data={"a": 1, "b": 2})
    wm.enqueue(request)
    assert wm.wait(request, timeout=30).state is WorkState.SUCCEEDED
    assert wm.daemon.pid not in (None, pid)


@pytest.mark.slow
def test_work_enqueued_while_the_scheduler_exits_for_idleness_is_never_stranded(
        store_path, monkeypatch):
    # A scheduler that leaves as soon as it is idle: every enqueue races its exit.
    monkeypatch.setenv("NBWORK_IDLE_EXIT", "0.02")
    wm = WorkManager(store_path)
    runners = set()
    for i in range(16):
        request = OneTimeWorkRequest(helpers.add, input_data={"a": i, "b": 1})
        wm.enqueue(request)
        # Poll the store: wm.wait() would start a scheduler itself and hide a stranded work.
        wait_until(lambda r=request: _state(wm, r) is WorkState.SUCCEEDED, timeout=30,
                   what=f"work {i} to run")
        runners.add(last_holder_pid(store_path))
        if i % 2:
            # Every other round, let it exit completely: the next enqueue must start one.
            wait_until(lambda: holder_pid(store_path) is None, what="the idle exit")
        # Otherwise enqueue again at once, while it may be halfway out.
    assert len(runners) >= 8


def test_a_killed_scheduler_is_replaced_and_its_running_work_recovered(wm, tmp_path,
                                                                       monkeypatch):
    # No supervisor (it would restart the scheduler by itself, see test_reliability.py):
    # this is the path after a reboot, where the next client call starts one.
    monkeypatch.setenv("NBWORK_SUPERVISE", "0")
    request = OneTimeWorkRequest(helpers.SlowFirstAttempt, input_data={"dir": str(tmp_path)})
    wm.enqueue(request)
    wait_until((tmp_path / "pids").exists, what="the first attempt to start")
    worker_pid, grandchild_pid = read_ints(tmp_path / "pids")
    old = wm.daemon.pid
    old_tree = [p.pid for p in psutil.Process(old).children(recursive=True)]
    assert worker_pid in old_tree and grandchild_pid in old_tree

    os.kill(old, signal.SIGKILL)
    _reap(old)
    wait_until(lambda: holder_pid(wm.store_path) is None, what="the lock to be released")
    assert _state(wm, request) is WorkState.RUNNING       # as the dead scheduler left it

    WorkManager(wm.store_path)                 # a new client: it starts a new scheduler
    new = wait_until(lambda: holder_pid(wm.store_path), what="a new scheduler")
    assert new != old
    wait_until(lambda: _state(wm, request) is WorkState.SUCCEEDED, what="the recovered work")
    info = wm.get_work_info_by_id(request.id)
    assert info.output_data["seen"] == 1       # the second attempt ran it
    assert info.run_attempt_count == 2
    # Every process of the dead scheduler is gone: the orphaned attempt, its grandchild,
    # the forkserver.
    for pid in old_tree:
        wait_until(lambda pid=pid: is_dead(pid), what=f"orphan {pid} to be killed")
    with open(os.path.join(wm.store_path, "scheduler.log")) as log:
        assert f"recovering {request.id}" in log.read()


def test_an_attempt_whose_scheduler_is_gone_ends_itself_and_its_group(tmp_path):
    """The scheduler can die after starting an attempt but before the attempt's pid is in
    the store; then its successor cannot find the orphan. The attempt must end itself."""
    import multiprocessing.forkserver

    from nbwork._code import serialize_worker
    from nbwork._executors.base import AttemptSpec
    from nbwork._executors.local import LocalExecutor

    executor = LocalExecutor(capacity=1)
    key, payload = serialize_worker(helpers.Stubborn, "tests.helpers.Stubborn")
    executor.submit(AttemptSpec(
        work_id="w", token="t", worker_name="tests.helpers.Stubborn", code_key=key,
        payload=payload, input_data={"dir": str(tmp_path)}, log_path=str(tmp_path / "log")))
    pids: list[int] = []
    try:
        wait_until((tmp_path / "pids").exists, what="the attempt to start its grandchild")
        pids = read_ints(tmp_path / "pids")
        # What the kernel does to the scheduler's end of the pipe when the scheduler dies.
        executor._by_token["t"].conn.close()
        for pid in pids:
            wait_until(lambda pid=pid: is_dead(pid), what=f"process {pid} to end")
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        executor._by_token.clear()
        executor._slots.clear()
        multiprocessing.forkserver._forkserver._stop()   # the forkserver this test started


def test_wait_starts_a_scheduler_when_none_runs(wm, tmp_path, monkeypatch):
    # No supervisor (it would restart the scheduler by itself, see test_reliability.py):
    # this is the path after a reboot, where the next client call starts one.
    monkeypatch.setenv("NBWORK_SUPERVISE", "0")
    request = OneTimeWorkRequest(helpers.SlowFirstAttempt, input_data={"dir": str(tmp_path)})
    wm.enqueue(request)
    wait_until((tmp_path / "pids").exists, what="the first attempt to start")
    old = wm.daemon.pid
    os.kill(old, signal.SIGKILL)
    _reap(old)
    info = wm.wait(request, timeout=30)
    assert info.state is WorkState.SUCCEEDED and info.output_data["seen"] == 1
    for pid in read_ints(tmp_path / "pids"):
        wait_until(lambda pid=pid: is_dead(pid), what=f"orphan {pid} to be killed")


def test_a_worker_that_kills_itself_is_retried_then_failed_after_three_crashes(wm):
    request = OneTimeWorkRequest(helpers.kill_myself, backoff_delay=0)
    wm.enqueue(request)
    info = wm.wait(request, timeout=60)
    assert info.state is WorkState.FAILED
    assert "worker process died: signal 9" in info.error
    assert "3 times in a row" in info.error
    assert info.run_attempt_count == 3


def _run_script(path, *args) -> str:
    done = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                          timeout=120, cwd=str(path.parent))
    assert done.returncode == 0, done.stderr
    return done.stdout


MAIN_SCRIPT = '''
import os, sys, time
from nbwork import OneTimeWorkRequest, Result, WorkManager, Worker

STORE, GATE = sys.argv[1], sys.argv[2]
SUFFIX = "!"

class Shout(Worker):
    """Defined in __main__ of a process that is gone when this runs."""
    def do_work(self):
        while not os.path.exists(GATE):
            time.sleep(0.01)
        return Result.success({"word": self.input_data["word"].upper() + SUFFIX})

def double(word: str) -> dict:
    return {"word": word * 2}

wm = WorkManager(STORE)
a = OneTimeWorkRequest(Shout, input_data={"word": "hey"})
b = OneTimeWorkRequest(double)
wm.begin_with(a).then(b).enqueue()
print(a.id, b.id, os.getpid())
'''


@pytest.mark.slow
def test_workers_from_main_of_a_client_that_exited_still_run(wm, tmp_path):
    script = tmp_path / "client.py"
    script.write_text(MAIN_SCRIPT)
    gate = tmp_path / "gate"
    a, b, client_pid = _run_script(script, wm.store_path, str(gate)).split()
    assert is_dead(int(client_pid))
    assert wm.get_work_info_by_id(a).state in (WorkState.ENQUEUED, WorkState.RUNNING)
    helpers.touch(gate)
    infos = {i.id: i for i in wm.wait([a, b], timeout=60)}
    assert infos[a].state is WorkState.SUCCEEDED and infos[a].output_data == {"word": "HEY!"}
    assert infos[b].state is WorkState.SUCCEEDED
    assert infos[b].output_data == {"word": "HEY!HEY!"}
    assert infos[a].worker_name == "__main__.Shout"


HELPER_MODULE = '''
from nbwork import Result, Worker

FACTOR = 3

def triple(value: int) -> dict:
    return {"value": value * FACTOR, "module": __name__}

class AddOne(Worker):
    def do_work(self):
        return Result.success({"value": self.input_data["value"] + 1})
'''

HELPER_SCRIPT = '''
import os, sys, time
from nbwork import OneTimeWorkRequest, WorkManager
import beside

STORE, GATE = sys.argv[1], sys.argv[2]

def wait_for_gate(value: int) -> dict:
    while not os.path.exists(GATE):
        time.sleep(0.01)
    return {"value": value}

wm = WorkManager(STORE)
first = OneTimeWorkRequest(wait_for_gate, input_data={"value": 2})
second = OneTimeWorkRequest(beside.triple)
third = OneTimeWorkRequest(beside.AddOne)
wm.begin_with(first).then(second).then(third).enqueue()
print(first.id, second.id, third.id)
'''


@pytest.mark.slow
def test_workers_from_a_module_beside_the_script_run_after_it_is_deleted(wm, tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "beside.py").write_text(HELPER_MODULE)
    script = folder / "client.py"
    script.write_text(HELPER_SCRIPT)
    gate = tmp_path / "gate"
    first, second, third = _run_script(script, wm.store_path, str(gate)).split()
    # The module is gone before its workers run: they must not need it.
    (folder / "beside.py").unlink()
    shutil.rmtree(folder / "__pycache__", ignore_errors=True)
    helpers.touch(gate)
    infos = {i.id: i for i in wm.wait([first, second, third], timeout=60)}
    assert [infos[i].state for i in (first, second, third)] == [WorkState.SUCCEEDED] * 3
    assert infos[second].output_data == {"value": 6, "module": "beside"}
    assert infos[third].output_data == {"value": 7}
    assert infos[third].worker_name == "beside.AddOne"


def test_a_wait_in_progress_replaces_a_scheduler_that_died(wm, tmp_path, monkeypatch):
    # No supervisor (it would restart the scheduler by itself, see test_reliability.py):
    # this is the path after a reboot, where the next client call starts one.
    monkeypatch.setenv("NBWORK_SUPERVISE", "0")
    gate = tmp_path / "gate"
    request = OneTimeWorkRequest(helpers.GateWorker, input_data={"gate": str(gate), "value": 1})
    wm.enqueue(request)
    wait_until(lambda: _state(wm, request) is WorkState.RUNNING, what="the work to run")
    outcome = []
    waiter = threading.Thread(target=lambda: outcome.append(wm.wait(request, timeout=60)))
    waiter.start()
    try:
        wait_until(lambda: wm._waits_in_progress, what="wait() to be waiting")  # internal
        old = wm.daemon.pid
        os.kill(old, signal.SIGKILL)
        _reap(old)
        helpers.touch(gate)
    finally:
        waiter.join(90)
    assert outcome and outcome[0].state is WorkState.SUCCEEDED
    assert wm.daemon.pid not in (None, old)
