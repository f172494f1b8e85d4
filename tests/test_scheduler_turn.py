"""One commit per scheduler turn: the outcomes the executor reported and the due works the
turn starts are written in one transaction (stepped, with a manual clock)."""

from __future__ import annotations

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
