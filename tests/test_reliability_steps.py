"""The fences behind "no double completion" and "nothing lost on a store fault", step by
step with no daemon (``Scheduler.step()``, an inline executor that holds attempts, a
manual clock)."""

from __future__ import annotations

import contextlib

import pytest

from nbwork import OneTimeWorkRequest, StoreError, WorkManager, WorkState
from nbwork._executors.inline import InlineExecutor
from nbwork._rules import Outcome
from nbwork._scheduler import Scheduler
from nbwork._store import Store
from nbwork._time import ManualClock
from tests import helpers
from tests.reliability import consistency_problems, succeeded_count


def holding_executor() -> InlineExecutor:
    """Attempts run until the test reports an outcome for a token (``finish``; any token: a
    report may come for an attempt that is not this executor's, as a late orphan's would)."""
    return InlineExecutor(capacity=2, hold=True)


@pytest.fixture
def client(store_path, monkeypatch):
    """A journaled store's WorkManager on a manual clock that never starts a scheduler."""
    Store(store_path).enable_journal()
    manager = WorkManager(store_path)
    manager.clock = ManualClock()
    monkeypatch.setattr(manager.daemon, "ensure_running", lambda: None)
    return manager


def _scheduler(client, executor) -> Scheduler:
    return Scheduler(Store(client.store_path), executor=executor, clock=client.clock)


def test_a_late_result_of_an_orphaned_attempt_cannot_complete_the_work(client):
    request = OneTimeWorkRequest(helpers.echo, input_data={"x": 1})
    client.enqueue(request)
    dead_executor = holding_executor()
    dead = _scheduler(client, dead_executor)
    dead.step()
    [orphan] = dead_executor.submitted              # its scheduler dies now
    successor_executor = holding_executor()
    successor = _scheduler(client, successor_executor)
    successor.recover()
    successor.step()
    [attempt] = successor_executor.submitted
    assert attempt.token != orphan.token and attempt.run_attempt_count == 1
    # The orphan's result reaches the new scheduler somehow: it is not its attempt.
    successor_executor.finish(orphan.token, Outcome("success", output={"from": "orphan"}))
    successor.step()
    spec = successor.store.get(request.id)
    assert spec.state is WorkState.RUNNING and spec.attempt.token == attempt.token
    # Nor can it, delivered to the dead scheduler's object (a stale process), after the
    # work moved on: its token is no longer the work's attempt.
    dead_executor.finish(orphan.token, Outcome("success", output={"from": "orphan"}))
    dead.step()
    assert successor.store.get(request.id).state is WorkState.RUNNING
    successor_executor.finish(attempt.token, Outcome("success", output={"from": "attempt"}))
    successor.step()
    spec = successor.store.get(request.id)
    assert spec.state is WorkState.SUCCEEDED and spec.output == {"from": "attempt"}
    assert succeeded_count(successor.store, request.id) == 1
    # A succeeded work is never started again, whatever reports or recoveries follow.
    successor_executor.finish(attempt.token, Outcome("success", output={"again": True}))
    successor.step()
    _scheduler(client, holding_executor()).recover()
    successor.step()
    assert len(successor_executor.submitted) == 1
    assert successor.store.get(request.id).output == {"from": "attempt"}
    assert succeeded_count(successor.store, request.id) == 1


def test_an_outcome_that_cannot_be_written_is_kept_until_it_can(client, monkeypatch):
    request = OneTimeWorkRequest(helpers.echo, input_data={"x": 2})
    client.enqueue(request)
    executor = holding_executor()
    sched = _scheduler(client, executor)
    sched.step()
    [attempt] = executor.submitted
    executor.finish(attempt.token, Outcome("success", output={"x": 2}))
    real = sched.store.transaction

    @contextlib.contextmanager
    def full_disk():
        raise StoreError("the disk holding the store is full; nothing was written")
        yield  # pragma: no cover

    monkeypatch.setattr(sched.store, "transaction", full_disk)
    for _ in range(3):
        with pytest.raises(StoreError):
            sched.step()
    assert sched.store.get(request.id).state is WorkState.RUNNING
    monkeypatch.setattr(sched.store, "transaction", real)   # space returns
    sched.step()
    spec = sched.store.get(request.id)
    assert spec.state is WorkState.SUCCEEDED and spec.output == {"x": 2}
    assert not sched._attempts                              # nothing left pending


def test_the_journal_holds_exactly_the_committed_transitions(client):
    store = client._store
    request = OneTimeWorkRequest(helpers.echo)
    client.enqueue(request)
    with contextlib.suppress(RuntimeError), store.transaction() as txn:
        spec = txn.get(request.id)
        spec.state = WorkState.SUCCEEDED
        txn.put(spec)
        raise RuntimeError("this transaction is rolled back")
    assert store.get(request.id).state is WorkState.ENQUEUED
    assert store.journal_of(request.id) == [[None, "ENQUEUED", 0]]
    client.cancel_work_by_id(request.id)
    assert store.journal_of(request.id) == [[None, "ENQUEUED", 0], ["ENQUEUED", "CANCELLED", 0]]
    assert consistency_problems(store) == []
