"""One commit per scheduler turn: the outcomes the executor reported and the due works the
turn starts are written in one transaction (stepped, with a manual clock)."""

from __future__ import annotations

import os

import pytest

from nbwork import OneTimeWorkRequest, WorkState
from nbwork._executors.inline import InlineExecutor
from nbwork._rules import Outcome
from nbwork._scheduler import Scheduler
from nbwork._store import Store
from nbwork.errors import StoreError
from tests import helpers


def _started(client, clock):
    """A scheduler whose executor holds 2 attempts, running 2 of 3 works."""
    executor = InlineExecutor(capacity=2, hold=True)
    sched = Scheduler(Store(client.store_path), executor=executor, clock=clock)
    requests = [OneTimeWorkRequest(helpers.echo) for _ in range(3)]
    client.enqueue(requests)
    sched.step()
    assert len(executor.submitted) == 2
    return sched, executor, requests


def _states(client, requests):
    return [client.get_work_info_by_id(r.id).state for r in requests]


def test_a_turn_records_outcomes_and_starts_due_work_in_one_commit(client, clock):
    sched, executor, requests = _started(client, clock)
    first, second = executor.submitted
    executor.finish(first.token, Outcome("success", output={"done": 1}))
    executor.finish(second.token, Outcome("success"))  # none in flight: written at once
    clock.advance(1)
    before = sched.store.change_counter()
    sched.step()
    assert _states(client, requests) == [WorkState.SUCCEEDED, WorkState.SUCCEEDED,
                                         WorkState.RUNNING]
    assert client.get_work_info_by_id(requests[0].id).output_data == {"done": 1}
    assert sched.store.change_counter() == before + 1  # one transaction, not two
    assert [a.work_id for a in executor.submitted] == [r.id for r in requests]


def test_a_turn_that_cannot_commit_loses_no_outcome_and_starts_nothing(
        client, clock, monkeypatch):
    sched, executor, requests = _started(client, clock)
    first, second = executor.submitted
    executor.finish(first.token, Outcome("success", output={"done": 1}))
    executor.finish(second.token, Outcome("success"))
    clock.advance(1)

    def disk_full(_txn):  # nothing of this transaction is written
        raise StoreError("database or disk is full")

    helpers.NextTransactionHook(monkeypatch, sched.store, inside=disk_full)
    with pytest.raises(StoreError):
        sched.step()
    assert _states(client, requests) == [WorkState.RUNNING, WorkState.RUNNING,
                                         WorkState.ENQUEUED]
    assert len(executor.submitted) == 2  # the third was not handed to the executor
    sched.step()  # the outcomes were kept for the next try
    assert _states(client, requests) == [WorkState.SUCCEEDED, WorkState.SUCCEEDED,
                                         WorkState.RUNNING]
    assert client.get_work_info_by_id(requests[0].id).output_data == {"done": 1}


def test_outcomes_with_nothing_due_are_written_on_their_own(client, clock):
    sched, executor, requests = _started(client, clock)
    for attempt in list(executor.submitted):
        executor.finish(attempt.token, Outcome("success"))
    sched.step()  # records both, starts the third
    (third,) = [a for a in executor.submitted if a.work_id == requests[2].id]
    executor.finish(third.token, Outcome("success"))
    before = sched.store.change_counter()
    sched.step()
    assert _states(client, requests) == [WorkState.SUCCEEDED] * 3
    assert sched.store.change_counter() == before + 1


def test_a_large_batch_due_at_once_is_started_without_reading_records_again(
        client, clock, monkeypatch):
    from nbwork._store import transaction

    executor = InlineExecutor(capacity=300, hold=True)
    sched = Scheduler(Store(client.store_path), executor=executor, clock=clock)
    requests = [OneTimeWorkRequest(helpers.echo) for _ in range(1200)]
    client.enqueue(requests)  # all due at the same moment: ranked once, by enqueue order
    reads: list[str] = []
    original = transaction.read_spec
    monkeypatch.setattr(transaction, "read_spec",
                        lambda cache, id, *a: reads.append(id) or original(cache, id, *a))
    while len(executor.submitted) < len(requests):
        for attempt in executor.submitted[-300:]:
            executor.finish(attempt.token, Outcome("success"))
        sched.step()
    # The transactions that start them adopt the records the ranking read.
    assert reads == []
    assert [a.work_id for a in executor.submitted] == [r.id for r in requests]


# --- which process runs an attempt: written only once it has run for a while ----------------


def _buffer(clock):
    from nbwork._scheduler_reports import ReportBuffer

    return ReportBuffer(clock)


def test_a_short_attempt_never_has_its_process_written(clock):
    """Its record is written when it is claimed and when it ends, not once more between
    the two for the process that runs it (a sixth of a flood's record writes)."""
    from nbwork._scheduler_reports import PID_RECORD_AFTER

    buffer = _buffer(clock)
    buffer.started("short", 4321, 10.0)
    assert not buffer.ripe(in_flight=1)
    assert buffer.deadline() == clock.monotonic() + PID_RECORD_AFTER  # wake then to write it
    clock.advance(PID_RECORD_AFTER / 2)
    buffer.finished("short", Outcome("success"))
    assert buffer.ripe(in_flight=1)
    reports = buffer.take()
    assert reports.started == {} and list(reports.outcomes) == ["short"]
    assert buffer.deadline() is None  # nothing left to write


def test_a_longer_attempt_has_its_process_written_once_it_ran_for_a_while(clock):
    from nbwork._scheduler_reports import PID_RECORD_AFTER

    buffer = _buffer(clock)
    buffer.started("long", 4321, 10.0)
    clock.advance(PID_RECORD_AFTER)
    assert buffer.ripe(in_flight=1)
    assert buffer.take().started == {"long": (4321, 10.0)}
    buffer.started("reports", 99, 1.0)  # with its first progress, at once
    buffer.progress("reports", {"p": 1})
    assert buffer.take().started == {"reports": (99, 1.0)}
    buffer.started("stopping", 7, 2.0)  # and everything when the scheduler stops
    assert buffer.take(everything=True).started == {"stopping": (7, 2.0)}


@pytest.mark.slow
def test_a_long_running_work_has_the_process_that_runs_it_written(wm, tmp_path):
    """With a real scheduler: the process written once the attempt has run for a while is
    the live worker process that runs it (by pid and start time), not the scheduler."""
    import psutil

    from tests.conftest import wait_until

    request = OneTimeWorkRequest(helpers.GateWorker, input_data={
        "gate": str(tmp_path / "gate"), "started": str(tmp_path / "started")})
    wm.enqueue(request)
    wait_until(lambda: (tmp_path / "started").exists(), what="the attempt to begin")

    def attempt():
        spec = wm._store.get(request.id)
        return spec.attempt if spec is not None else None

    wait_until(lambda: attempt() is not None and attempt().pid is not None,
               what="the process of the running attempt to be written")
    process = psutil.Process(attempt().pid)
    assert process.create_time() == pytest.approx(attempt().pid_create_time, abs=0.01)
    assert process.pid not in (wm.daemon.pid, os.getpid())
    (tmp_path / "gate").touch()
    assert wm.wait(request.id, timeout=30).state is WorkState.SUCCEEDED
