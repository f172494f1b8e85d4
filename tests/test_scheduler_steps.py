"""The scheduler's logic step by step, with no daemon: ``Scheduler.step()`` with an inline
executor (running attempts at once, or holding them until the test ends them) and a manual
clock. Deterministic: time moves only when the test moves it."""

from __future__ import annotations

from datetime import datetime

import pytest

from nbwork import BackoffPolicy, OneTimeWorkRequest, StopReason, WorkState
from nbwork._executors.inline import InlineExecutor
from nbwork._rules import DEFAULT_PRUNE_AGE, Outcome
from nbwork._scheduler import PRUNE_INTERVAL, Scheduler
from nbwork._store import Store
from tests import helpers
from tests.helpers import read_ints


def holding_executor() -> InlineExecutor:
    """Attempts 'run' until the test finishes them (``finish``); stop requests are noted."""
    return InlineExecutor(capacity=2, hold=True)


def _scheduler(client, clock, executor=None, **options) -> Scheduler:
    return Scheduler(Store(client.store_path), executor=executor or InlineExecutor(),
                     clock=clock, **options)


def _states(client, *requests):
    return [client.get_work_info_by_id(r.id).state for r in requests]


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts)


def test_a_chain_is_promoted_one_step_at_a_time(client, clock):
    sched = _scheduler(client, clock)
    a = OneTimeWorkRequest(helpers.emit, input_data={"key": "a", "value": 1})
    b = OneTimeWorkRequest(helpers.echo, input_data={"own": 2})
    c = OneTimeWorkRequest(helpers.echo)
    client.begin_with(a).then(b).then(c).enqueue()
    assert _states(client, a, b, c) == [WorkState.ENQUEUED, WorkState.BLOCKED,
                                        WorkState.BLOCKED]
    sched.step()       # runs a (inline: its result is reported at the next poll)
    assert _states(client, a, b, c) == [WorkState.RUNNING, WorkState.BLOCKED, WorkState.BLOCKED]
    clock.advance(1)
    sched.step()       # records a, unblocks b and starts it
    assert _states(client, a, b, c) == [WorkState.SUCCEEDED, WorkState.RUNNING,
                                        WorkState.BLOCKED]
    clock.advance(1)
    sched.step()
    assert _states(client, a, b, c) == [WorkState.SUCCEEDED, WorkState.SUCCEEDED,
                                        WorkState.RUNNING]
    clock.advance(1)
    sched.step()
    assert _states(client, a, b, c) == [WorkState.SUCCEEDED] * 3
    sched.step()       # nothing left to do
    assert [s.work_id for s in sched.executor.submitted] == [a.id, b.id, c.id]
    assert sched.executor.submitted[1].input_data == {"own": 2, "a": 1}
    info_c = client.get_work_info_by_id(c.id)
    assert info_c.output_data == {"own": 2, "a": 1}
    start = 1_000_000.0
    assert info_c.enqueue_time == _at(start)
    assert info_c.start_time == _at(start + 2) and info_c.finish_time == _at(start + 3)


def test_initial_delay_is_waited_on_the_scheduler_clock(client, clock):
    sched = _scheduler(client, clock)
    request = OneTimeWorkRequest(helpers.echo, initial_delay=30)
    client.enqueue(request)
    info = client.get_work_info_by_id(request.id)
    assert info.next_schedule_time == _at(clock.now() + 30)
    clock.advance(29.999)
    sched.step()
    assert sched.executor.submitted == []
    clock.advance(0.001)
    sched.step()
    sched.step()
    assert _states(client, request) == [WorkState.SUCCEEDED]


@pytest.mark.parametrize("policy, delay, waits", [
    (BackoffPolicy.EXPONENTIAL, 10, [10, 20]),     # delay × 2^(n-1)
    (BackoffPolicy.LINEAR, 7, [7, 14]),            # delay × n
])
def test_retry_backoff_is_timed_by_the_policy(client, clock, tmp_path, policy, delay, waits):
    sched = _scheduler(client, clock)
    record = str(tmp_path / "attempts")
    request = OneTimeWorkRequest(helpers.RetryTwice, input_data={"record": record},
                                 backoff_policy=policy, backoff_delay=delay)
    client.enqueue(request)
    sched.step()                      # attempt 1 runs
    for n, wait in enumerate(waits, start=1):
        sched.step()                  # its retry is recorded
        info = client.get_work_info_by_id(request.id)
        assert info.state is WorkState.ENQUEUED and info.run_attempt_count == n
        assert info.next_schedule_time == _at(clock.now() + wait)
        clock.advance(wait - 0.001)
        sched.step()
        assert len(sched.executor.submitted) == n          # not yet
        clock.advance(0.001)
        sched.step()                  # due: attempt n + 1 runs
        assert len(sched.executor.submitted) == n + 1
    sched.step()
    info = client.get_work_info_by_id(request.id)
    assert info.state is WorkState.SUCCEEDED and info.run_attempt_count == 3
    assert read_ints(record) == [0, 1, 2]
    assert [s.run_attempt_count for s in sched.executor.submitted] == [0, 1, 2]


def test_a_cancel_committed_right_after_a_scheduler_commit_still_stops_the_attempt(
        client, clock, monkeypatch):
    executor = holding_executor()
    sched = _scheduler(client, clock, executor)
    request = OneTimeWorkRequest(helpers.echo)
    client.enqueue(request)
    # A client commits between the scheduler's commit and anything it does next.
    hook = helpers.NextTransactionHook(monkeypatch, sched.store,
                                       after=lambda: client.cancel_work_by_id(request.id))
    sched.step()                                  # starts the attempt; the cancel sneaks in
    assert hook.fired
    assert _states(client, request) == [WorkState.CANCELLED]
    sched.step()
    (attempt,) = executor.submitted
    assert executor.stopped == [(attempt.token, "CANCELLED_BY_APP")]


def test_a_result_after_a_cancel_is_ignored(client, clock):
    executor = holding_executor()
    sched = _scheduler(client, clock, executor)
    first = OneTimeWorkRequest(helpers.echo)
    second = OneTimeWorkRequest(helpers.echo)
    client.begin_with(first).then(second).enqueue()
    sched.step()
    client.cancel_work_by_id(first.id)
    sched.step()
    (attempt,) = executor.submitted
    assert executor.stopped == [(attempt.token, "CANCELLED_BY_APP")]
    executor.finish(attempt.token, Outcome("success", output={"late": True}))
    sched.step()
    info = client.get_work_info_by_id(first.id)
    assert info.state is WorkState.CANCELLED and info.output_data == {}
    assert _states(client, second) == [WorkState.CANCELLED]
    assert sched.store.get(first.id).attempt is None


def test_recover_puts_work_left_running_back_in_the_queue(client, clock):
    dead = _scheduler(client, clock, holding_executor())
    request = OneTimeWorkRequest(helpers.echo)
    client.enqueue(request)
    dead.step()
    assert _states(client, request) == [WorkState.RUNNING]
    successor = _scheduler(client, clock)
    successor.recover()
    info = client.get_work_info_by_id(request.id)
    assert info.state is WorkState.ENQUEUED
    assert info.stop_reason is StopReason.SCHEDULER_RESTARTED
    successor.step()
    successor.step()
    info = client.get_work_info_by_id(request.id)
    assert info.state is WorkState.SUCCEEDED and info.run_attempt_count == 2


def test_shutdown_returns_its_own_running_attempts_to_the_queue(client, clock):
    sched = _scheduler(client, clock, holding_executor())
    assert sched.lock.acquire()
    request = OneTimeWorkRequest(helpers.echo)
    client.enqueue(request)
    sched.step()
    assert _states(client, request) == [WorkState.RUNNING]
    sched._shutdown()
    info = client.get_work_info_by_id(request.id)
    assert info.state is WorkState.ENQUEUED
    assert info.stop_reason is StopReason.SCHEDULER_RESTARTED


def test_a_result_that_comes_during_shutdown_is_recorded_not_run_again(client, clock):
    executor = holding_executor()
    sched = _scheduler(client, clock, executor)
    assert sched.lock.acquire()
    finishing, stopping = OneTimeWorkRequest(helpers.echo), OneTimeWorkRequest(helpers.echo)
    client.enqueue([finishing, stopping])
    sched.step()
    assert _states(client, finishing, stopping) == [WorkState.RUNNING] * 2
    tokens = {a.work_id: a.token for a in executor.submitted}
    # Within the grace period one returns its result, the other stops.
    executor.finish(tokens[finishing.id], Outcome("success", output={"done": 1}))
    executor.finish(tokens[stopping.id], Outcome(
        "stopped", stop_reason=StopReason.SCHEDULER_RESTARTED.value))
    sched._shutdown()
    done = client.get_work_info_by_id(finishing.id)
    assert done.state is WorkState.SUCCEEDED and done.output_data == {"done": 1}
    back = client.get_work_info_by_id(stopping.id)
    assert back.state is WorkState.ENQUEUED
    assert back.stop_reason is StopReason.SCHEDULER_RESTARTED


def test_shutdown_after_letting_the_lock_go_leaves_other_schedulers_work_alone(client, clock):
    # The scheduler that runs the work now (it took the lock after an idle exit)...
    current = _scheduler(client, clock, holding_executor())
    request = OneTimeWorkRequest(helpers.echo)
    client.enqueue(request)
    current.step()
    # ...and the one that finishes exiting without the lock.
    leaving = _scheduler(client, clock, holding_executor())
    assert leaving.lock.fd is None
    leaving._shutdown()
    assert _states(client, request) == [WorkState.RUNNING]


def _run_one_at_a_time(sched: Scheduler, executor: InlineExecutor, count: int) -> list[str]:
    """Step until ``count`` attempts started, finishing each at once; their work ids in
    start order."""
    for _ in range(4 * count):
        if len(executor.submitted) >= count:
            break
        before = len(executor.submitted)
        sched.step()
        for attempt in executor.submitted[before:]:
            executor.finish(attempt.token, Outcome("success"))
    return [a.work_id for a in executor.submitted]


def test_works_due_at_the_same_moment_start_in_list_order(client, clock):
    executor = holding_executor()                  # room for two at a time
    sched = _scheduler(client, clock, executor)
    requests = [OneTimeWorkRequest(helpers.echo, input_data={"n": n}) for n in range(12)]
    client.enqueue(requests)
    assert _run_one_at_a_time(sched, executor, 12) == [r.id for r in requests]


def test_the_earlier_due_time_comes_first_and_ties_go_by_enqueue_order(client, clock):
    executor = holding_executor()
    sched = _scheduler(client, clock, executor)
    late = OneTimeWorkRequest(helpers.echo, initial_delay=5)
    first = [OneTimeWorkRequest(helpers.echo) for _ in range(3)]
    client.enqueue([late, *first])
    clock.advance(1)
    second = [OneTimeWorkRequest(helpers.echo) for _ in range(3)]
    client.enqueue(second)                        # a later call: after the first one's works
    clock.advance(10)                             # all due now, ``late`` since 6 s
    expected = [*first, *second, late]
    assert _run_one_at_a_time(sched, executor, 7) == [r.id for r in expected]


def test_one_step_starts_earlier_ties_then_the_first_of_a_later_tie_in_enqueue_order(
        client, clock):
    executor = InlineExecutor(capacity=4, hold=True)
    sched = _scheduler(client, clock, executor)
    earlier = [OneTimeWorkRequest(helpers.echo) for _ in range(2)]
    client.enqueue(earlier)
    clock.advance(1)
    later = [OneTimeWorkRequest(helpers.echo) for _ in range(3)]
    client.enqueue(later)
    sched.step()
    assert [a.work_id for a in executor.submitted] == [r.id for r in [*earlier, *later[:2]]]


def test_idle_exit_comes_when_the_clock_reaches_idle_exit(client, clock):
    sched = _scheduler(client, clock, idle_exit=30)
    request = OneTimeWorkRequest(helpers.echo)
    client.enqueue(request)
    assert not sched.idle_long_enough()           # work waits
    sched.step()
    assert not sched.idle_long_enough()           # an attempt in flight
    clock.advance(100)
    sched.step()
    assert _states(client, request) == [WorkState.SUCCEEDED]
    assert not sched.idle_long_enough()           # idle from now on
    clock.advance(29.999)
    sched.step()
    assert not sched.idle_long_enough()
    assert sched._sleep_time() == pytest.approx(0.001)   # it wakes up for the exit
    clock.advance(0.001)
    assert sched.idle_long_enough()
    client.enqueue(OneTimeWorkRequest(helpers.echo))
    assert not sched.idle_long_enough()           # new work: the idle time starts again
    sched.step()
    sched.step()
    clock.advance(29)
    assert not sched.idle_long_enough()


def test_expired_work_is_pruned_at_start_and_then_every_prune_interval(client, clock):
    sched = _scheduler(client, clock)
    request = OneTimeWorkRequest(helpers.echo, keep_results_for=0)
    client.enqueue(request)
    sched.step()                                  # starts it (and prunes: nothing to prune)
    sched.step()                                  # records it: finished at the start time
    expires = clock.now() + DEFAULT_PRUNE_AGE
    clock.advance(DEFAULT_PRUNE_AGE - 100)
    sched.step()                                  # a prune is due: nothing expired yet
    last_prune = clock.now()
    clock.advance(200)
    assert clock.now() > expires
    sched.step()                                  # expired, but the next prune is not due
    assert _states(client, request) == [WorkState.SUCCEEDED]
    clock.advance(last_prune + PRUNE_INTERVAL - clock.now() - 0.001)
    sched.step()
    assert _states(client, request) == [WorkState.SUCCEEDED]
    clock.advance(0.001)
    sched.step()
    assert client.get_work_info_by_id(request.id) is None


def test_the_loop_exits_idle_exit_seconds_after_the_last_work_on_the_clock(client, clock):
    sched = _scheduler(client, clock, idle_exit=30)
    assert sched.lock.acquire()
    request = OneTimeWorkRequest(helpers.echo, initial_delay=5)
    client.enqueue(request)
    slept: list[float] = []

    def sleep(timeout: float) -> None:            # a sleep moves the manual clock only
        slept.append(timeout)                     # as long as the loop decided
        clock.advance(timeout)

    sched._sleep = sleep
    start = clock.now()
    try:
        sched._loop()
    finally:
        sched._shutdown()
    assert _states(client, request) == [WorkState.SUCCEEDED]
    info = client.get_work_info_by_id(request.id)
    assert info.start_time == _at(start + 5)        # woken for the due time, not later
    # (The inline executor has nothing to wake the loop: its result is taken at the next
    # heartbeat.) Idle from that moment for exactly idle_exit, then gone.
    assert info.finish_time == _at(start + 6)
    assert clock.now() == start + 6 + 30
    assert sched.lock.fd is None
    assert max(slept) <= 1.0                       # never asleep past a heartbeat


def test_a_step_reads_the_change_counters_once_and_sees_what_came_before_it(
        client, clock, monkeypatch):
    executor = holding_executor()
    sched = _scheduler(client, clock, executor)
    first = OneTimeWorkRequest(helpers.echo)
    client.enqueue(first)
    sched.step()
    second = OneTimeWorkRequest(helpers.echo)
    client.enqueue(second)                        # another process's commit, before the turn
    cache = sched.store._cache
    reads: list[str] = []
    original_get = type(cache).get

    def get(self, key, *args, **kwargs):
        if key in ("counter", "counter:s"):
            reads.append(key)
        return original_get(self, key, *args, **kwargs)

    monkeypatch.setattr(type(cache), "get", get)
    clock.advance(1)
    sched.step()
    # One statement for the turn, not a get per look; only the transaction that starts the
    # work reads the counter (inside it: exact, see RecordCache).
    assert reads == ["counter"]
    assert _states(client, first, second) == [WorkState.RUNNING, WorkState.RUNNING]
    client.cancel_work_by_id(first.id)            # after the turn: seen by the next one
    sched.step()
    assert executor.stopped == [(executor.submitted[0].token, "CANCELLED_BY_APP")]


def test_due_records_are_read_before_the_transaction_that_starts_them(
        client, clock, monkeypatch):
    from nbwork._store.transaction import Transaction

    executor = holding_executor()
    sched = _scheduler(client, clock, executor)
    request = OneTimeWorkRequest(helpers.echo)
    client.enqueue(request)
    read_inside: list[str] = []
    original_get = Transaction.get
    monkeypatch.setattr(Transaction, "get",
                        lambda txn, wid: read_inside.append(wid) or original_get(txn, wid))
    sched.step()
    assert _states(client, request) == [WorkState.RUNNING]
    assert read_inside == []                      # adopted: read in one statement before


def test_a_cancel_between_the_read_ahead_and_the_start_is_not_run_over(
        client, clock, monkeypatch):
    executor = holding_executor()
    sched = _scheduler(client, clock, executor)
    request = OneTimeWorkRequest(helpers.echo)
    client.enqueue(request)
    original = sched.store.get_many

    def get_many(ids, memo=None):
        specs = original(ids, memo)
        client.cancel_work_by_id(request.id)      # commits right after the read
        return specs

    monkeypatch.setattr(sched.store, "get_many", get_many)
    sched.step()
    assert _states(client, request) == [WorkState.CANCELLED]
    assert executor.submitted == []
