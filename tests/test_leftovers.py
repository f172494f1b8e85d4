"""Processes an attempt leaves behind: a helper started with ``start_new_session=True``
leaves its worker's process group, yet it ends on every path (the attempt returns, its
process calls ``os._exit``, it ignores a cancel, its scheduler is SIGKILLed, with or
without its worker process), and a work re-run after a scheduler's death never runs beside
its first run's helper. Each path runs with a cgroup per worker process (where this machine
allows one) and without (``NBWORK_CGROUPS=0``: subreapers, the child list and the store's
mark in the environment)."""

from __future__ import annotations

import os
import signal
import subprocess

import psutil
import pytest

from nbwork import BackoffPolicy, OneTimeWorkRequest, WorkManager, WorkState
from nbwork._executors.leftovers import MARK, Cgroups, end_leftovers
from nbwork._lock import holder_pid
from tests.conftest import wait_until
from tests.helpers import stop_scheduler
from tests.reliability import (
    LeavesAHelper,
    helper_lines,
    is_running,
    kill_helpers,
    read_lines,
)

pytestmark = pytest.mark.slow


@pytest.fixture(params=["cgroups", "no-cgroups"])
def lwm(request, store_path, tmp_path, monkeypatch):
    monkeypatch.setenv("NBWORK_CGROUPS", "1" if request.param == "cgroups" else "0")
    monkeypatch.setenv("NBWORK_STOP_GRACE", "0.5")
    manager = WorkManager(store_path)
    yield manager
    stop_scheduler(store_path)
    kill_helpers(tmp_path)


def _enqueue(wm, folder, how: str, **extra) -> OneTimeWorkRequest:
    request = OneTimeWorkRequest(LeavesAHelper, backoff_policy=BackoffPolicy.LINEAR,
                                 backoff_delay=extra.pop("backoff_delay", 3600),
                                 input_data={"dir": str(folder), "how": how, **extra})
    wm.enqueue(request)
    return request


def _helper_ends(folder, index: int = 0) -> None:
    wait_until(lambda: len(helper_lines(folder)) > index,
               what="the attempt to start its helper")
    _, helper, created = helper_lines(folder)[index]
    wait_until(lambda: not is_running(helper, created), timeout=20,
               what=f"helper {helper} (in a session of its own) to be killed")


def test_a_helper_ends_when_its_attempt_returns(lwm, tmp_path):
    request = _enqueue(lwm, tmp_path, "return")
    assert lwm.wait(request.id, timeout=60).state is WorkState.SUCCEEDED
    _, helper, created = helper_lines(tmp_path)[0]
    assert not is_running(helper, created)  # killed before the result was recorded


def test_a_helper_ends_when_its_worker_process_exits(lwm, tmp_path):
    request = _enqueue(lwm, tmp_path, "exit")
    wait_until(lambda: lwm.get_work_info_by_id(request.id).run_attempt_count == 1
               and lwm.get_work_info_by_id(request.id).state is WorkState.ENQUEUED,
               what="the crash to be recorded")
    assert "exited with code 3" in lwm._store.get(request.id).error
    _helper_ends(tmp_path)


def test_a_helper_ends_when_its_attempt_ignores_a_cancel(lwm, tmp_path):
    request = _enqueue(lwm, tmp_path, "ignore")
    wait_until(lambda: helper_lines(tmp_path), what="the attempt to start its helper")
    lwm.cancel_work_by_id(request.id)
    wait_until(lambda: lwm.get_work_info_by_id(request.id).state is WorkState.CANCELLED,
               what="the cancel")
    _helper_ends(tmp_path)


@pytest.mark.parametrize("worker_too", [False, True], ids=["scheduler", "scheduler+worker"])
def test_after_a_scheduler_sigkill_the_work_never_runs_beside_its_first_helper(
        lwm, tmp_path, worker_too):
    """The scheduler is SIGKILLed mid-attempt (with ``worker_too``, its worker process is
    frozen first and SIGKILLed after it, so it can do nothing itself); the supervisor's new
    scheduler re-runs the work, and the re-run must not find the first helper alive."""
    gate = tmp_path / "gate"
    request = _enqueue(lwm, tmp_path, "wait", gate=str(gate), backoff_delay=0)
    scheduler = lwm.daemon.start()
    wait_until(lambda: helper_lines(tmp_path), what="the first attempt to start its helper")
    worker, helper, created = helper_lines(tmp_path)[0]
    if worker_too:
        os.kill(worker, signal.SIGSTOP)
    os.kill(scheduler, signal.SIGKILL)
    if worker_too:
        os.kill(worker, signal.SIGKILL)
    wait_until(lambda: len(helper_lines(tmp_path)) >= 2, timeout=30,
               what="the new scheduler to run the work again")
    gate.touch()
    assert lwm.wait(request.id, timeout=60).state is WorkState.SUCCEEDED
    assert holder_pid(lwm.store_path) not in (None, scheduler)
    assert read_lines(os.path.join(tmp_path, "overlaps")) == []
    assert not is_running(helper, created)


def test_worker_processes_get_cgroups_of_their_own_where_the_machine_allows(
        store_path, tmp_path, monkeypatch):
    monkeypatch.setenv("NBWORK_CGROUPS", "1")
    probe = Cgroups("probe")
    allowed = probe.enabled
    probe.close()
    wm = WorkManager(store_path)
    try:
        request = _enqueue(wm, tmp_path, "wait", gate=str(tmp_path / "gate"))
        wait_until(lambda: helper_lines(tmp_path), what="the attempt to start its helper")
        worker, helper, _ = helper_lines(tmp_path)[0]
        with open(f"/proc/{worker}/cgroup") as f:
            worker_cgroup = f.read()
        with open(f"/proc/{helper}/cgroup") as f:
            helper_cgroup = f.read()
        (tmp_path / "gate").touch()
        wm.wait(request.id, timeout=60)
    finally:
        stop_scheduler(store_path)
        kill_helpers(tmp_path)
    if allowed:
        assert f"/worker-{worker}" in worker_cgroup and "/nbwork-" in worker_cgroup
        assert helper_cgroup == worker_cgroup
    else:  # this machine allows none: the other nets are tested by the no-cgroups cases
        assert "nbwork-" not in worker_cgroup


def test_a_new_scheduler_ends_processes_marked_with_its_store_only(tmp_path):
    mine = subprocess.Popen(["sleep", "600"], env={**os.environ, MARK: "/the/store"},
                            start_new_session=True)
    other = subprocess.Popen(["sleep", "600"], env={**os.environ, MARK: "/another/store"},
                             start_new_session=True)
    try:
        wait_until(lambda: psutil.Process(mine.pid).environ().get(MARK) == "/the/store",
                   what="the marked process to start")
        assert end_leftovers("/the/store") >= 1
        assert mine.wait(10) == -signal.SIGKILL
        assert other.poll() is None
    finally:
        for process in (mine, other):
            process.kill()
            process.wait()
