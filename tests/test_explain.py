"""``nbwork.explain``: why a work waits and what its error says, from ``WorkInfo`` alone."""

from __future__ import annotations

import traceback
from datetime import datetime, timedelta

import pytest

from nbwork import (
    Constraints,
    NetworkType,
    OneTimeWorkRequest,
    RunAfter,
    WorkInfo,
    WorkState,
)
from nbwork.explain import constraint_words, error_headline, why_waiting
from nbwork.info import StopReason
from tests.helpers import echo

NOW = datetime(2026, 1, 2, 12, 0, 0)


def info(state: WorkState = WorkState.ENQUEUED, **kwargs) -> WorkInfo:
    return WorkInfo(id="a" * 32, state=state, worker_name="pkg.BlurWorker", **kwargs)


def test_blocked_work_names_the_unfinished_prerequisite_and_its_state():
    done = WorkInfo(id="b" * 32, state=WorkState.SUCCEEDED, worker_name="pkg.CleanupWorker")
    running = WorkInfo(id="c" * 32, state=WorkState.RUNNING, worker_name="pkg.BlurWorker")
    blocked = info(WorkState.BLOCKED, prerequisites=(done.id, running.id))
    found = {done.id: done, running.id: running}
    assert why_waiting(blocked, found) == "waits for prerequisite BlurWorker cccccccc (RUNNING)"
    assert why_waiting(blocked, found.get) == why_waiting(blocked, found)  # a function too
    assert why_waiting(blocked) == "waits for prerequisites bbbbbbbb, cccccccc"


def test_a_join_waiting_after_a_failed_prerequisite_says_it_runs_whatever_they_end_as():
    failed = WorkInfo(id="b" * 32, state=WorkState.FAILED, worker_name="pkg.BlurWorker")
    running = WorkInfo(id="c" * 32, state=WorkState.RUNNING, worker_name="pkg.BlurWorker")
    join = info(WorkState.BLOCKED, prerequisites=(failed.id, running.id),
                run_after=RunAfter.ALL_FINISHED)
    assert why_waiting(join, {failed.id: failed, running.id: running}) == (
        "waits for prerequisite BlurWorker cccccccc (RUNNING) (it runs whatever they end as)")


def test_enqueued_work_names_its_delay_and_when_it_ends():
    later = NOW + timedelta(minutes=5)
    first = info(next_schedule_time=later, initial_delay=300)
    assert why_waiting(first, now=NOW) == "initial delay until 2026-01-02 12:05:00"
    retried = info(next_schedule_time=later, run_attempt_count=2)
    assert why_waiting(retried, now=NOW) == "backoff after 2 attempts until 2026-01-02 12:05:00"
    period = info(next_schedule_time=later, is_periodic=True, start_time=NOW)
    assert why_waiting(period, now=NOW).startswith("next period until")
    # Once the time has passed, the work is simply due.
    assert why_waiting(first, now=later + timedelta(seconds=1)) == \
        "due: waits for a free worker process"


def test_enqueued_work_names_the_conditions_it_needs():
    charging = info(constraints=Constraints(requires_charging=True,
                                            network_type=NetworkType.UNMETERED))
    assert why_waiting(charging, now=NOW) == \
        "runs only with an unmetered network, the charger plugged in"
    stopped = info(constraints=Constraints(requires_charging=True),
                   stop_reason=StopReason.CONSTRAINT_CHARGING)
    assert "CONSTRAINT_CHARGING" in why_waiting(stopped, now=NOW)
    assert constraint_words(Constraints()) == []


def test_running_and_finished_work_does_not_wait():
    for state in (WorkState.RUNNING, WorkState.SUCCEEDED, WorkState.FAILED,
                  WorkState.CANCELLED):
        assert why_waiting(info(state)) is None


@pytest.mark.slow
def test_the_store_gives_infos_what_why_waiting_needs(wm):
    request = OneTimeWorkRequest(echo, initial_delay=3600,
                                 constraints=Constraints(requires_charging=True))
    wm.enqueue(request)
    stored = wm.get_work_info_by_id(request.id)
    assert stored.constraints == Constraints(requires_charging=True)
    assert stored.initial_delay == 3600
    why = why_waiting(stored)
    assert why.startswith("initial delay until ") and "the charger plugged in" in why
    wm.cancel_work_by_id(request.id)


def _traceback() -> str:
    def inner():
        raise ValueError("cannot blur 'x.png': no such file\nsecond line of the message")

    try:
        inner()
    except ValueError:
        return traceback.format_exc()
    raise AssertionError


def test_error_headline_is_the_exception_line_not_what_follows():
    error = _traceback()
    assert error_headline(error) == "ValueError: cannot blur 'x.png': no such file"
    assert error_headline(error + "ran on the Dask worker tcp://10.0.0.2:4000\n") == \
        "ValueError: cannot blur 'x.png': no such file"
    assert error_headline("a prerequisite failed") == "a prerequisite failed"
    assert error_headline(None) == error_headline("") == ""


def test_due_work_says_the_scheduler_waits_for_the_cluster_when_it_does():
    due = info(next_schedule_time=NOW - timedelta(seconds=1))
    waiting = "waiting for the cluster: the Dask cluster at dask://h:1 has no worker"
    assert why_waiting(due, now=NOW, scheduler_state=waiting) == f"due: {waiting}"
    assert why_waiting(due, now=NOW, scheduler_state="running") == (
        "due: waits for a free worker process")
    # A work that waits for its delay still says so first: the cluster is not its reason.
    later = info(next_schedule_time=NOW + timedelta(minutes=5))
    assert "initial delay" in why_waiting(later, now=NOW, scheduler_state=waiting)


def test_daemon_state_is_what_a_live_scheduler_beats_and_nothing_otherwise(tmp_path,
                                                                          monkeypatch):
    """``Daemon.state()`` (what widgets and the Work panel pass as ``scheduler_state``) reads
    the heartbeat alone: the state of a live, recent beat; None with no beat, a beat of a
    dead process or one older than NBWORK_HUNG_AFTER."""
    import subprocess
    import sys

    from nbwork._daemon import Daemon
    from nbwork._liveness import BeatWriter

    store = str(tmp_path)
    daemon = Daemon(store)
    assert daemon.state() is None
    beat = BeatWriter(store)
    try:
        beat.state = "waiting for the cluster: the Dask cluster at dask://x:1 has no worker"
        beat.beat()
        assert daemon.state() == beat.state
        monkeypatch.setenv("NBWORK_HUNG_AFTER", "1")
        monkeypatch.setattr("time.monotonic", lambda real=__import__("time").monotonic:
                            real() + 5)
        assert daemon.state() is None  # too old: a hung scheduler says nothing true
        monkeypatch.undo()
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
        monkeypatch.setattr("os.getpid", lambda: int(dead.stdout))
        beat.beat()
        assert daemon.state() is None  # its process is gone
    finally:
        beat.close()
