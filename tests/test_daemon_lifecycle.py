"""The scheduler's life cycle under faults: stops that reach a scheduler still starting,
commands that only look and never start one, a hung (SIGSTOPped) scheduler, schedulers that
keep dying, a full disk at start, and what killed schedulers leave in /tmp.

Processes are real; each test stops what it started by PID (``stop_scheduler``).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import psutil
import pytest

from nbwork import OneTimeWorkRequest, SchedulerWarning, WorkManager, WorkState, _daemon, cli
from nbwork._daemon import Daemon, store_processes
from nbwork._liveness import read_beat
from nbwork._lock import holder_pid
from nbwork._store import Store
from nbwork._supervisor import FORMER_SCHEDULER_CODES
from tests.conftest import wait_until
from tests.helpers import is_dead, stop_scheduler, touch
from tests.reliability import (
    DELAYED,
    RecordThenWait,
    fill_disk,
    noop,
    read_pid_lines,
    scheduler_log,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def path(store_path):
    yield store_path
    stop_scheduler(store_path)


def _gated(tmp_path) -> OneTimeWorkRequest:
    return OneTimeWorkRequest(RecordThenWait, input_data={
        "dir": str(tmp_path), "gate": str(tmp_path / "gate")})


def _session_members(session: int) -> list[int]:
    """The live processes of a session (a supervisor started in a session of its own: its
    schedulers, their fork servers and worker processes, what their attempts started)."""
    members = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.getsid(int(pid)) == session and not is_dead(int(pid)):
                    members.append(int(pid))
            except OSError:
                continue
    return members


def _live_children() -> list[subprocess.Popen]:
    return [c for c in _daemon._children if c.poll() is None]


def _nbwork(path: str, *args: str, capsys) -> tuple[int, str]:
    code = cli.main(["--store", path, *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# --- stop -------------------------------------------------------------------------------------


def test_stop_right_after_an_enqueue_stops_the_scheduler_that_is_still_starting(path):
    wm = WorkManager(path)
    wm.enqueue(OneTimeWorkRequest(noop, initial_delay=DELAYED))
    assert wm.daemon.pid is None, "the scheduler just spawned cannot hold the store yet"
    assert wm.daemon.stop() is True
    # It does not come up a second later to idle for ten minutes: its processes are gone.
    assert store_processes(path) == [] and _live_children() == []
    assert holder_pid(path) is None
    assert wm.daemon.stop() is False


def test_read_only_commands_and_stop_never_start_a_scheduler(path, capsys):
    wm = WorkManager(path)
    request = OneTimeWorkRequest(noop, initial_delay=DELAYED)
    wm.enqueue(request)
    wait_until(lambda: wm.daemon.pid, what="the scheduler")
    assert _nbwork(path, "daemon", "stop", capsys=capsys) == (0, "scheduler stopped\n")
    assert store_processes(path) == [] and _live_children() == []

    for args in (["list"], ["show", request.id], ["logs", request.id], ["daemon", "status"],
                 ["daemon", "stop"], ["daemon", "stop"]):
        code, out = _nbwork(path, *args, capsys=capsys)
        assert code == 0, out
        assert store_processes(path) == [] and _live_children() == [], \
            f"'nbwork {' '.join(args)}' started a scheduler"
    assert "scheduler: not running" in _nbwork(path, "daemon", "status", capsys=capsys)[1]
    assert _nbwork(path, "daemon", "stop", capsys=capsys)[1] == "no scheduler was running\n"
    assert wm.get_work_info_by_id(request.id).state is WorkState.ENQUEUED


def test_daemon_stop_works_without_opening_a_garbled_database(path, capsys):
    wm = WorkManager(path)
    wm.enqueue(OneTimeWorkRequest(noop, initial_delay=DELAYED))
    pid = wait_until(lambda: wm.daemon.pid, what="the scheduler")
    database = os.path.join(path, "db", "cache.db")
    with open(database, "r+b") as f:  # garbled pages: "file is not a database"
        f.write(os.urandom(8192))
    code, out = _nbwork(path, "daemon", "stop", capsys=capsys)
    assert (code, out) == (0, "scheduler stopped\n")
    assert is_dead(pid) and store_processes(path) == []


# --- a hung scheduler -------------------------------------------------------------------------


def test_a_stopped_scheduler_is_reported_then_replaced_never_two_at_once(
        path, tmp_path, monkeypatch):
    monkeypatch.setenv("NBWORK_HUNG_AFTER", "6")  # inherited by the supervisor
    wm = WorkManager(path)
    request = _gated(tmp_path)
    wm.enqueue(request)
    wait_until(lambda: len(read_pid_lines(tmp_path)) == 1, what="the first attempt")
    old = wm.daemon.pid
    status = wm.daemon.status()
    assert status.pid == old and status.responding and status.heartbeat_age < 3
    os.kill(old, signal.SIGSTOP)
    try:
        late = wait_until(lambda: (s := wm.daemon.status()).pid == old and not s.responding
                          and s, what="status to say the scheduler does not respond")
        assert "NOT RESPONDING" in late.describe()
        # Its supervisor kills it (a stopped process dies of SIGKILL) and starts another
        # only once it is dead: the store's lock is never held by two.
        new = wait_until(lambda: (p := holder_pid(path)) not in (None, old) and p,
                         timeout=30, what="a new scheduler")
        assert is_dead(old)
    finally:
        if not is_dead(old):
            os.kill(old, signal.SIGCONT)
    wait_until(lambda: len(read_pid_lines(tmp_path)) == 2, what="the work to run again")
    touch(tmp_path / "gate")
    wait_until(lambda: wm.get_work_info_by_id(request.id).state.is_finished, what="the work")
    assert wm.get_work_info_by_id(request.id).state is WorkState.SUCCEEDED
    assert wm.daemon.pid == new and wm.daemon.status().responding
    log = scheduler_log(path)
    assert f"scheduler {old} has not turned its loop for" in log
    assert f"scheduler {old} killed by signal 9 (SIGKILL) (hung); restarting it" in log


# --- schedulers that keep dying ---------------------------------------------------------------


def test_a_scheduler_that_keeps_dying_without_a_result_is_given_up_and_clients_say_so(
        path, tmp_path, capsys):
    wm = WorkManager(path)
    request = _gated(tmp_path)
    wm.enqueue(request)
    # This test runs the supervisor itself, with short pauses, and plays the out-of-memory
    # killer on every scheduler it starts.
    wm.daemon.stop()
    assert store_processes(path) == []
    code = ("import sys, nbwork._supervisor as s; s.RESTART_PAUSE = 0.01; "
            "s.MAX_DEATHS = 3; sys.exit(s.supervise(sys.argv[1:]))")
    # Its stderr goes to a file: read from a pipe, it waited for every process that
    # inherited the pipe (once, past the test's 120 s on a slow machine). That every
    # process of the supervisor's session ends is checked below, by name.
    errors = tmp_path / "supervisor.err"
    with open(errors, "w") as sink:
        supervisor = subprocess.Popen([sys.executable, "-c", code, "--store", path],
                                      stderr=sink, text=True, start_new_session=True)
    try:
        killed = []
        for _ in range(3):
            pid = wait_until(lambda: (p := holder_pid(path)) not in (None, *killed) and p,
                             what="a scheduler to kill")
            wait_until(lambda p=pid: (b := read_beat(path)) and b.pid == p, what="a heartbeat")
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        assert supervisor.wait(60) == 1
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
    stderr = errors.read_text()
    try:
        wait_until(lambda: not _session_members(supervisor.pid),
                   what="every process the supervisor's schedulers started to end")
    except AssertionError:
        left = [" ".join(psutil.Process(p).cmdline())[:120] for p in
                _session_members(supervisor.pid) if psutil.pid_exists(p)]
        raise AssertionError(f"still running after the supervisor gave up: {left}") from None
    assert "died 3 times in a row without recording a result" in stderr
    assert stderr.count("restarting it in") == 2

    status = wm.daemon.status()
    assert status.pid is None and "died 3 times in a row" in status.gave_up
    out = _nbwork(path, "daemon", "status", capsys=capsys)[1]
    assert "scheduler: not running: scheduler" in out and "supervisor gave up at" in out
    # A client does not restart it by itself: it warns, once.
    with pytest.warns(SchedulerWarning, match="died 3 times in a row") as caught:
        client = WorkManager(path)
    assert caught[0].filename == __file__
    assert _live_children() == [] and holder_pid(path) is None
    # Asked explicitly, it tries again.
    assert client.daemon.start() > 0
    assert client.daemon.status().gave_up is None
    touch(tmp_path / "gate")
    wait_until(lambda: client.get_work_info_by_id(request.id).state.is_finished,
               what="the work")
    assert client.get_work_info_by_id(request.id).state is WorkState.SUCCEEDED


def test_kills_of_schedulers_that_record_results_never_add_up_to_a_give_up(path, tmp_path):
    wm = WorkManager(path)
    requests = [OneTimeWorkRequest(RecordThenWait, input_data={
        "dir": str(tmp_path / f"w{i}"), "gate": str(tmp_path / f"gate{i}")}) for i in range(4)]
    for i in range(4):
        os.makedirs(tmp_path / f"w{i}")
    wm.begin_with(requests[0]).then(requests[1]).then(requests[2]).then(requests[3]).enqueue()
    wm.daemon.stop()
    code = ("import sys, nbwork._supervisor as s; s.RESTART_PAUSE = 0.01; "
            "s.MAX_DEATHS = 2; sys.exit(s.supervise(sys.argv[1:]))")
    supervisor = subprocess.Popen([sys.executable, "-c", code, "--store", path],
                                  stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for i, request in enumerate(requests):
            touch(tmp_path / f"gate{i}")
            wait_until(lambda r=request: wm.get_work_info_by_id(r.id).state.is_finished,
                       what=f"work {i}")
            pid = holder_pid(path)
            wait_until(lambda p=pid: (b := read_beat(path)) and b.pid == p and b.recorded,
                       what="the heartbeat to count the result")
            os.kill(pid, signal.SIGKILL)  # after it recorded a result
            wait_until(lambda: holder_pid(path), what="the scheduler to be restarted")
        assert supervisor.poll() is None
    finally:
        supervisor.terminate()
        supervisor.wait(30)
    assert "not restarted" not in supervisor.stderr.read()
    assert all(wm.get_work_info_by_id(r.id).state is WorkState.SUCCEEDED for r in requests)


# --- a full disk when a scheduler starts ------------------------------------------------------




def test_a_scheduler_that_starts_on_a_full_disk_waits_and_resumes_with_no_client_call(
        small_disk, tmp_path):
    path = str(small_disk / "store")
    wm = WorkManager(path)
    request = _gated(tmp_path)
    wm.enqueue(request)
    wait_until(lambda: len(read_pid_lines(tmp_path)) == 1, what="the first attempt")
    old = wm.daemon.pid
    filler = str(small_disk / "filler")
    fill_disk(filler)
    os.kill(old, signal.SIGKILL)  # dies while the disk is full; its supervisor restarts it

    def waiting():
        status = Daemon(path).status()
        return status.state and "waiting for the store" in status.state and status
    status = wait_until(waiting, what="the new scheduler to wait for the store")
    assert "is full" in status.state and "waiting for the store" in status.describe()

    os.unlink(filler)  # space returns: no client call follows
    wait_until(lambda: len(read_pid_lines(tmp_path)) == 2, timeout=60,
               what="the work to run again")
    touch(tmp_path / "gate")
    store = Store(path)
    wait_until(lambda: store.get(request.id).state.is_finished, what="the work")
    assert store.get(request.id).state is WorkState.SUCCEEDED
    log = scheduler_log(path)
    assert "is full" in log and "waiting and trying again" in log  # held, written late
    assert "it is not restarted" not in log


# --- what killed schedulers leave behind --------------------------------------------------------


def test_a_new_scheduler_removes_the_temp_folder_of_the_one_that_was_killed(
        path, tmp_path, monkeypatch):
    temp = tempfile.mkdtemp(prefix="nbw")  # short: a socket path goes in it
    monkeypatch.setenv("TMPDIR", temp)  # for the scheduler processes only
    try:
        wm = WorkManager(path)
        request = _gated(tmp_path)
        wm.enqueue(request)
        wait_until(lambda: len(read_pid_lines(tmp_path)) == 1, what="the first attempt")
        [left_behind] = glob.glob(os.path.join(temp, "pymp-*"))
        old = wm.daemon.pid
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: len(read_pid_lines(tmp_path)) == 2, what="the work to run again")
        assert holder_pid(path) not in (None, old)
        assert not os.path.exists(left_behind)
        assert len(glob.glob(os.path.join(temp, "pymp-*"))) == 1  # the live scheduler's
        touch(tmp_path / "gate")
        wait_until(lambda: wm.get_work_info_by_id(request.id).state.is_finished,
                   what="the work")
    finally:
        stop_scheduler(path)
        shutil.rmtree(temp, ignore_errors=True)


# --- a worker that calls sys.exit(0) ---------------------------------------------------------


def exits_zero() -> dict:
    sys.exit(0)


def test_a_worker_that_calls_sys_exit_0_fails_and_says_why(path):
    wm = WorkManager(path)
    request = OneTimeWorkRequest(exits_zero)
    wm.enqueue(request)
    info = wm.wait(request, timeout=60)
    assert info.state is WorkState.FAILED
    assert info.error.startswith("worker called sys.exit(0): a work succeeds only by returning")


def test_a_scheduler_started_under_its_former_name_runs_and_is_found_and_stopped(path):
    """A supervisor started before an upgrade restarts its scheduler by the former program
    (``from nbwork._daemon import main``): that still runs the scheduler, and stop and
    status still find it by its command line."""
    Store(path).close()
    process = subprocess.Popen([sys.executable, "-c", FORMER_SCHEDULER_CODES[0], "--store", path],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        wait_until(lambda: holder_pid(path) == process.pid or process.poll() is not None,
                   what="the scheduler to take the store")
        assert holder_pid(path) == process.pid
        assert [p.pid for p in store_processes(path)] == [process.pid]
        assert Daemon(path).stop()
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
