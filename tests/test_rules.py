"""Unit tests of ``nbwork._rules``: WorkManager's state machine over in-memory records."""

from __future__ import annotations

import dataclasses
import random

import pytest

from nbwork._rules import (
    DEFAULT_PRUNE_AGE,
    MAX_CONSECUTIVE_CRASHES,
    MemoryWorkSet,
    Outcome,
    UniquePlan,
    backoff_run_at,
    backoff_seconds,
    cancel,
    finish_attempt,
    first_run_at,
    insert_new,
    is_due,
    is_prunable,
    merged_input,
    next_period_at,
    plan_unique,
    plan_unique_periodic,
    recover,
    start_attempt,
    state_from_prerequisites,
    unblock,
)
from nbwork._spec import Attempt, WorkSpec
from nbwork.data import Data
from nbwork.errors import DataError, InvalidRequestError
from nbwork.info import StopReason, WorkInfo, WorkState
from nbwork.request import (
    MAX_BACKOFF_DELAY,
    ExistingPeriodicWorkPolicy,
    ExistingWorkPolicy,
    RunAfter,
)

ENQUEUED, RUNNING, SUCCEEDED = WorkState.ENQUEUED, WorkState.RUNNING, WorkState.SUCCEEDED
FAILED, BLOCKED, CANCELLED = WorkState.FAILED, WorkState.BLOCKED, WorkState.CANCELLED

NOW = 1_000_000.0


def make(id: str, state: WorkState = ENQUEUED, **fields) -> WorkSpec:
    """A hand-built record (not linked to anything)."""
    return WorkSpec(id=id, worker_name=f"tests.{id}", code_key="code", state=state, **fields)


def add(works: MemoryWorkSet, id: str, *prerequisites: str, now: float = NOW,
        **fields) -> WorkSpec:
    """Insert a new work after ``prerequisites`` the way enqueue does."""
    spec = make(id, prerequisites=tuple(prerequisites), **fields)
    insert_new(works, spec, now)
    return spec


def attempt(works: MemoryWorkSet, id: str, outcome: Outcome, now: float = NOW) -> WorkSpec:
    """Run one attempt of ``id`` from ENQUEUED to ``outcome``."""
    spec = works.get(id)
    assert spec is not None and spec.state is ENQUEUED, spec
    start_attempt(spec, f"token-{spec.run_attempt_count}", now)
    finish_attempt(works, spec, outcome, now)
    return spec


def states(works: MemoryWorkSet) -> dict[str, WorkState]:
    return {wid: spec.state for wid, spec in works.specs.items()}


SUCCESS = Outcome("success")
FAILURE = Outcome("failure", error="Traceback: boom")
RETRY = Outcome("retry")


# --- state_from_prerequisites -----------------------------------------------------------


@pytest.mark.parametrize(
    ("prerequisite_states", "expected"),
    [
        ([], ENQUEUED),
        ([SUCCEEDED], ENQUEUED),
        ([SUCCEEDED, SUCCEEDED], ENQUEUED),
        ([ENQUEUED], BLOCKED),
        ([RUNNING], BLOCKED),
        ([BLOCKED], BLOCKED),
        ([SUCCEEDED, RUNNING], BLOCKED),
        ([FAILED], FAILED),
        ([CANCELLED], CANCELLED),
        ([CANCELLED, FAILED], FAILED),
        ([FAILED, CANCELLED], FAILED),
        ([SUCCEEDED, CANCELLED, BLOCKED], CANCELLED),
        ([ENQUEUED, FAILED], FAILED),
    ],
    ids=lambda v: "-".join(s.value for s in v) if isinstance(v, list) else v.value,
)
def test_state_from_prerequisites(prerequisite_states, expected):
    specs = [make(f"p{i}", state) for i, state in enumerate(prerequisite_states)]
    assert state_from_prerequisites(specs) is expected
    assert state_from_prerequisites(iter(specs)) is expected  # any iterable


# --- insert_new -------------------------------------------------------------------------


def test_insert_without_prerequisites_is_enqueued_and_due_after_its_initial_delay():
    works = MemoryWorkSet()
    spec = add(works, "a", initial_delay=5)
    assert spec.state is ENQUEUED
    assert spec.enqueue_time == spec.last_enqueue_time == NOW
    assert spec.next_run_at == NOW + 5
    assert spec.finish_time is None
    assert works.get("a") is spec
    assert works.changed == {"a"}
    assert not is_due(spec, NOW + 4.999)
    assert is_due(spec, NOW + 5)


def test_insert_links_dependents_and_blocks_on_unfinished_prerequisites():
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "b")
    works.changed.clear()
    c = add(works, "c", "a", "b", now=NOW + 1, initial_delay=3)
    d = add(works, "d", "a", now=NOW + 2)
    assert works.get("a").dependents == ("c", "d")
    assert works.get("b").dependents == ("c",)
    assert c.state is d.state is BLOCKED
    assert c.enqueue_time == NOW + 1
    assert c.next_run_at == 0.0 and not is_due(c, NOW + 100)
    assert c.finish_time is None
    assert works.changed == {"a", "b", "c", "d"}


def test_insert_after_succeeded_prerequisites_is_enqueued_at_once():
    works = MemoryWorkSet([make("a", SUCCEEDED, output={"x": 1})])
    spec = add(works, "b", "a", initial_delay=2)
    assert spec.state is ENQUEUED
    assert spec.next_run_at == NOW + 2
    assert works.get("a").dependents == ("b",)


@pytest.mark.parametrize(
    ("parents", "expected"),
    [((FAILED,), FAILED), ((CANCELLED,), CANCELLED), ((CANCELLED, FAILED), FAILED),
     ((SUCCEEDED, CANCELLED), CANCELLED)],
    ids=lambda v: "-".join(s.value for s in v) if isinstance(v, tuple) else v.value,
)
def test_insert_after_a_failed_or_cancelled_prerequisite_finishes_at_once(parents, expected):
    works = MemoryWorkSet([make(f"p{i}", state) for i, state in enumerate(parents)])
    spec = add(works, "new", *[f"p{i}" for i in range(len(parents))])
    assert spec.state is expected
    assert spec.finish_time == NOW
    assert not is_due(spec, NOW + 1e9)


def test_insert_after_a_missing_prerequisite_is_an_error():
    works = MemoryWorkSet()
    with pytest.raises(InvalidRequestError) as caught:
        add(works, "b", "gone")
    assert "prerequisite gone of work b is not in the store" in str(caught.value)
    assert "pruned" in str(caught.value)


# --- delays -----------------------------------------------------------------------------


def test_first_run_of_one_time_work_is_after_its_initial_delay():
    assert first_run_at(make("a", initial_delay=7), NOW) == NOW + 7
    assert first_run_at(make("a"), NOW) == NOW


def test_first_run_of_periodic_work_is_shifted_by_interval_minus_flex():
    plain = make("p", repeat_interval=60.0, flex_interval=60.0, initial_delay=5)
    flexed = make("p", repeat_interval=60.0, flex_interval=10.0, initial_delay=5)
    no_flex = make("p", repeat_interval=60.0, flex_interval=None)
    assert first_run_at(plain, NOW) == NOW + 5
    assert first_run_at(flexed, NOW) == NOW + 5 + 50
    assert first_run_at(no_flex, NOW) == NOW
    assert next_period_at(flexed, NOW) == NOW + 60


@pytest.mark.parametrize(
    ("policy", "delay", "attempts", "expected"),
    [
        ("LINEAR", 10, 1, 10),
        ("LINEAR", 10, 2, 20),
        ("LINEAR", 10, 5, 50),
        ("EXPONENTIAL", 10, 1, 10),
        ("EXPONENTIAL", 10, 2, 20),
        ("EXPONENTIAL", 10, 3, 40),
        ("EXPONENTIAL", 10, 4, 80),
        ("EXPONENTIAL", 30, 10, 30 * 512),
        ("EXPONENTIAL", 30, 11, MAX_BACKOFF_DELAY),  # 30 × 1024 s is over five hours
        ("EXPONENTIAL", 1, 10_000, MAX_BACKOFF_DELAY),  # no overflow
        ("LINEAR", 1000, 19, MAX_BACKOFF_DELAY),
        ("LINEAR", 1000, 18, 18_000),
        ("LINEAR", 0, 3, 0),
        ("EXPONENTIAL", 0, 3, 0),
        ("EXPONENTIAL", 10, 0, 10),  # never less than one attempt
    ],
)
def test_backoff_seconds(policy, delay, attempts, expected):
    assert backoff_seconds(policy, delay, attempts) == expected


def test_backoff_cap_is_five_hours():
    assert MAX_BACKOFF_DELAY == 18_000


# --- start_attempt ----------------------------------------------------------------------


def test_start_attempt_returns_the_count_before_the_attempt_and_counts_it():
    spec = make("a", stop_reason="CONSTRAINT_CHARGING", progress={"p": 1})
    assert start_attempt(spec, "t1", NOW) == 0
    assert spec.state is RUNNING
    assert spec.run_attempt_count == 1
    assert spec.start_time == NOW
    assert spec.stop_reason is None
    assert spec.progress == {"p": 1}     # kept from the stopped attempt until a result
    assert spec.attempt == Attempt(token="t1", started_at=NOW)
    spec.state = ENQUEUED
    assert start_attempt(spec, "t2", NOW + 1) == 1
    assert spec.run_attempt_count == 2
    assert spec.attempt.token == "t2"


# --- finish_attempt: success ------------------------------------------------------------


def test_success_stores_output_and_clears_the_attempt():
    works = MemoryWorkSet()
    add(works, "a")
    spec = works.get("a")
    start_attempt(spec, "t", NOW)
    spec.progress = {"percent": 50}
    spec.error = "an earlier attempt failed"
    finish_attempt(works, spec, Outcome("success", output={"uri": "out.png"}), NOW + 3)
    assert spec.state is SUCCEEDED
    assert spec.output == {"uri": "out.png"}
    assert spec.error is None
    assert spec.progress == {}
    assert spec.attempt is None
    assert spec.finish_time == NOW + 3
    assert spec.run_attempt_count == 1
    assert "a" in works.changed


def test_success_unblocks_a_dependent_only_when_all_its_prerequisites_succeeded():
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "b")
    add(works, "c", "a", "b")
    add(works, "d", "a")
    attempt(works, "a", SUCCESS, NOW + 1)
    assert states(works) == {"a": SUCCEEDED, "b": ENQUEUED, "c": BLOCKED, "d": ENQUEUED}
    attempt(works, "b", SUCCESS, NOW + 2)
    assert states(works)["c"] is ENQUEUED


def test_a_dependents_initial_delay_counts_from_when_it_is_unblocked():
    works = MemoryWorkSet()
    add(works, "a")
    b = add(works, "b", "a", initial_delay=30)
    attempt(works, "a", SUCCESS, NOW + 100)
    assert b.state is ENQUEUED
    assert b.last_enqueue_time == NOW + 100
    assert b.next_run_at == NOW + 130
    assert b.enqueue_time == NOW


def test_success_leaves_dependents_that_are_not_blocked_alone():
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "b", "a")
    cancel(works, ["b"], NOW)
    attempt(works, "a", SUCCESS, NOW + 1)
    assert works.get("b").state is CANCELLED
    assert works.get("b").finish_time == NOW


def test_success_does_not_unblock_grandchildren():
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "b", "a")
    add(works, "c", "b")
    attempt(works, "a", SUCCESS, NOW + 1)
    assert states(works) == {"a": SUCCEEDED, "b": ENQUEUED, "c": BLOCKED}


# --- finish_attempt: failure ------------------------------------------------------------


def test_failure_fails_every_dependent_transitively_and_leaves_finished_ones_alone():
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "other")
    add(works, "b", "a")
    add(works, "c", "b")
    add(works, "d", "a", "other")
    add(works, "e", "c", "d")  # a diamond below a
    add(works, "x", "b")
    cancel(works, ["x"], NOW + 1)
    attempt(works, "a", Outcome("failure", output={"why": "bad"}, error="Traceback: boom"),
            NOW + 2)
    a = works.get("a")
    assert a.state is FAILED
    assert a.output == {"why": "bad"}
    assert a.error == "Traceback: boom"
    assert a.finish_time == NOW + 2
    assert states(works) == {"a": FAILED, "other": ENQUEUED, "b": FAILED, "c": FAILED,
                             "d": FAILED, "e": FAILED, "x": CANCELLED}
    for wid in "bcde":
        assert works.get(wid).finish_time == NOW + 2
    assert works.get("x").finish_time == NOW + 1
    # Each work failed by propagation names the prerequisite that failed, and the origin.
    assert works.get("b").error == "not run: its prerequisite a (a) failed"
    assert works.get("d").error == "not run: its prerequisite a (a) failed"
    assert works.get("c").error == (
        "not run: its prerequisite b (b) failed, because a (a) before it failed")
    assert works.get("e").error.startswith("not run: its prerequisite ")
    assert works.get("x").error is None


def test_work_enqueued_after_a_failed_prerequisite_names_it():
    works = MemoryWorkSet()
    add(works, "ok")
    add(works, "bad")
    attempt(works, "ok", SUCCESS)
    attempt(works, "bad", FAILURE)
    late = add(works, "late", "ok", "bad")
    assert late.state is FAILED
    assert late.error == "not run: its prerequisite bad (bad) failed"


def test_failure_resets_the_crash_count():
    works = MemoryWorkSet()
    add(works, "a")
    attempt(works, "a", Outcome("crash", error="killed"))
    assert works.get("a").consecutive_crashes == 1
    attempt(works, "a", FAILURE)
    assert works.get("a").consecutive_crashes == 0


# --- finish_attempt: retry and crash ----------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "waits"),
    [("LINEAR", [10, 20, 30, 40]), ("EXPONENTIAL", [10, 20, 40, 80])],
)
def test_retry_waits_the_backoff_of_the_stored_attempt_count(policy, waits):
    works = MemoryWorkSet()
    add(works, "a", backoff_policy=policy, backoff_delay=10)
    add(works, "b", "a")
    now = NOW
    for n, wait in enumerate(waits, start=1):
        spec = works.get("a")
        assert start_attempt(spec, f"t{n}", now) == n - 1  # what the worker sees
        finish_attempt(works, spec, RETRY, now)
        assert spec.state is ENQUEUED
        assert spec.run_attempt_count == n
        assert spec.next_run_at == now + wait
        assert spec.attempt is None
        assert works.get("b").state is BLOCKED
        now = spec.next_run_at
    attempt(works, "a", SUCCESS, now)
    assert works.get("a").run_attempt_count == len(waits) + 1
    assert works.get("b").state is ENQUEUED


def test_a_retry_is_the_last_enqueue_of_a_backing_off_work():
    works = MemoryWorkSet()
    add(works, "a", backoff_policy="LINEAR", backoff_delay=10)
    spec = attempt(works, "a", RETRY, NOW + 5)
    assert spec.backing_off and spec.last_enqueue_time == NOW + 5
    assert backoff_run_at(spec) == spec.next_run_at == NOW + 15
    spec.backoff_delay = 60                          # as update_work gives it a new spec
    assert backoff_run_at(spec) == NOW + 65
    start_attempt(spec, "t2", NOW + 15)
    assert not spec.backing_off


def test_retry_backoff_is_capped_at_five_hours():
    works = MemoryWorkSet()
    add(works, "a", backoff_policy="EXPONENTIAL", backoff_delay=3600, run_attempt_count=5)
    spec = attempt(works, "a", RETRY)
    assert spec.next_run_at == NOW + 5 * 3600


def test_a_crash_is_retried_with_backoff_until_too_many_then_fails_clearly():
    works = MemoryWorkSet()
    add(works, "a", backoff_policy="LINEAR", backoff_delay=1)
    add(works, "b", "a")
    now = NOW
    for n in range(1, MAX_CONSECUTIVE_CRASHES):
        spec = attempt(works, "a", Outcome("crash", error=f"exit code -9 (#{n})"), now)
        assert spec.state is ENQUEUED
        assert spec.consecutive_crashes == n
        assert spec.error == f"exit code -9 (#{n})"
        assert spec.next_run_at == now + n  # LINEAR backoff of n attempts
        assert works.get("b").state is BLOCKED
        now = spec.next_run_at
    spec = attempt(works, "a", Outcome("crash", error="exit code -9 (last)"), now)
    assert spec.state is FAILED
    assert spec.finish_time == now
    assert spec.consecutive_crashes == MAX_CONSECUTIVE_CRASHES == 3
    assert spec.error.startswith("exit code -9 (last)")
    assert f"died {MAX_CONSECUTIVE_CRASHES} times in a row" in spec.error
    assert works.get("b").state is FAILED


def test_a_completed_attempt_resets_the_crash_count():
    works = MemoryWorkSet()
    add(works, "a", backoff_delay=0)
    for _ in range(MAX_CONSECUTIVE_CRASHES - 1):
        attempt(works, "a", Outcome("crash", error="killed"))
    attempt(works, "a", RETRY)
    assert works.get("a").consecutive_crashes == 0
    for _ in range(MAX_CONSECUTIVE_CRASHES - 1):
        attempt(works, "a", Outcome("crash", error="killed"))
    assert works.get("a").state is ENQUEUED


# --- finish_attempt: stopped ------------------------------------------------------------


def test_a_stopped_attempt_goes_back_to_the_queue_keeping_its_stop_reason():
    works = MemoryWorkSet()
    add(works, "a", initial_delay=50)
    add(works, "b", "a")
    spec = works.get("a")
    start_attempt(spec, "t", NOW + 50)
    spec.progress = {"percent": 10}
    finish_attempt(works, spec, Outcome("stopped", stop_reason="CONSTRAINT_CHARGING"), NOW + 60)
    assert spec.state is ENQUEUED
    assert spec.stop_reason == "CONSTRAINT_CHARGING"
    assert spec.next_run_at == NOW + 60  # due again at once (no backoff, no initial delay)
    assert spec.run_attempt_count == 1  # the attempt still counts
    assert spec.attempt is None
    assert spec.finish_time is None
    assert works.get("b").state is BLOCKED
    assert spec.to_info().stop_reason is StopReason.CONSTRAINT_CHARGING
    # The last progress stays (WorkManager keeps it) until the next result.
    assert spec.to_info().progress == {"percent": 10}
    start_attempt(spec, "t2", NOW + 61)
    finish_attempt(works, spec, Outcome("retry"), NOW + 62)
    assert spec.progress == {} and spec.to_info().progress == {}


def test_an_attempt_that_never_began_leaves_no_trace():
    works = MemoryWorkSet()
    add(works, "a")
    spec = works.get("a")
    spec.consecutive_crashes = 1
    start_attempt(spec, "t", NOW + 1)
    finish_attempt(works, spec, Outcome("not_started"), NOW + 2)
    assert spec.state is ENQUEUED and spec.next_run_at == NOW + 2
    assert spec.run_attempt_count == 0  # it never ran: not an attempt
    assert spec.consecutive_crashes == 1  # nor a success that clears the crash count
    assert spec.stop_reason is None and spec.attempt is None and spec.finish_time is None


# --- finish_attempt: periodic -----------------------------------------------------------


@pytest.mark.parametrize("outcome", [Outcome("success", output={"n": 1}), FAILURE],
                         ids=["success", "failure"])
def test_periodic_work_returns_to_the_queue_one_interval_after_it_finished(outcome):
    works = MemoryWorkSet()
    spec = add(works, "p", repeat_interval=60.0, flex_interval=60.0)
    assert spec.next_run_at == NOW
    start_attempt(spec, "t", NOW + 3)
    finish_attempt(works, spec, outcome, NOW + 8)
    assert spec.state is ENQUEUED
    assert spec.next_run_at == NOW + 8 + 60
    assert spec.last_enqueue_time == NOW + 8
    assert spec.run_attempt_count == 0
    assert spec.period_count == 1
    assert spec.output == {}  # periodic work stores no output
    assert spec.finish_time is None
    assert spec.error == outcome.error


def test_periodic_flex_shifts_only_the_first_run():
    works = MemoryWorkSet()
    spec = add(works, "p", repeat_interval=100.0, flex_interval=30.0, initial_delay=5)
    assert spec.next_run_at == NOW + 5 + 70
    start_attempt(spec, "t", spec.next_run_at)
    finish_attempt(works, spec, SUCCESS, NOW + 80)
    assert spec.next_run_at == NOW + 80 + 100
    start_attempt(spec, "t", spec.next_run_at)
    finish_attempt(works, spec, SUCCESS, NOW + 200)
    assert spec.next_run_at == NOW + 300
    assert spec.period_count == 2


def test_periodic_attempt_count_resets_between_periods_but_retries_count():
    works = MemoryWorkSet()
    spec = add(works, "p", repeat_interval=60.0, flex_interval=60.0, backoff_policy="LINEAR",
               backoff_delay=2)
    attempt(works, "p", RETRY, NOW)
    assert spec.state is ENQUEUED
    assert spec.run_attempt_count == 1
    assert spec.next_run_at == NOW + 2
    attempt(works, "p", RETRY, NOW + 2)
    assert spec.next_run_at == NOW + 2 + 4
    assert start_attempt(spec, "t", NOW + 6) == 2
    finish_attempt(works, spec, SUCCESS, NOW + 7)
    assert spec.run_attempt_count == 0
    assert spec.next_run_at == NOW + 67
    assert spec.period_count == 1


def test_periodic_work_that_keeps_crashing_is_never_finished():
    works = MemoryWorkSet()
    spec = add(works, "p", repeat_interval=60.0, backoff_delay=0)
    for _ in range(MAX_CONSECUTIVE_CRASHES + 1):
        attempt(works, "p", Outcome("crash", error="killed"))
        assert spec.state is ENQUEUED
    assert spec.error is not None and "killed" in spec.error


# --- cancel -----------------------------------------------------------------------------


def test_cancel_cancels_targets_and_their_dependents_transitively():
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "b", "a")
    add(works, "c", "b")
    add(works, "other")
    running = cancel(works, ["a"], NOW + 5)
    assert running == []
    assert states(works) == {"a": CANCELLED, "b": CANCELLED, "c": CANCELLED, "other": ENQUEUED}
    for wid in "abc":
        assert works.get(wid).finish_time == NOW + 5
        assert works.get(wid).stop_reason is None


def test_cancel_does_not_touch_prerequisites():
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "b", "a")
    add(works, "c", "b")
    cancel(works, ["b"], NOW)
    assert states(works) == {"a": ENQUEUED, "b": CANCELLED, "c": CANCELLED}


def test_cancel_returns_running_ids_and_marks_them_cancelled_by_the_app():
    works = MemoryWorkSet()
    add(works, "a")
    start_attempt(works.get("a"), "t", NOW)
    assert cancel(works, ["a"], NOW + 1) == ["a"]
    spec = works.get("a")
    assert spec.state is CANCELLED
    assert spec.stop_reason == StopReason.CANCELLED_BY_APP.value


def test_cancelling_finished_work_leaves_it_but_cancels_its_unfinished_dependents():
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "b", "a")
    add(works, "c", "b")
    add(works, "d", "c")
    add(works, "side", "a")
    attempt(works, "a", SUCCESS, NOW + 1)
    attempt(works, "b", SUCCESS, NOW + 2)
    start_attempt(works.get("c"), "t", NOW + 3)
    before = {wid: works.get(wid).to_dict() for wid in "ab"}
    running = cancel(works, ["a"], NOW + 4)
    assert running == ["c"]
    assert states(works) == {"a": SUCCEEDED, "b": SUCCEEDED, "c": CANCELLED, "d": CANCELLED,
                             "side": CANCELLED}
    assert {wid: works.get(wid).to_dict() for wid in "ab"} == before
    assert works.get("c").stop_reason == "CANCELLED_BY_APP"
    assert works.get("d").stop_reason is None


def test_a_cancel_by_tag_or_name_does_not_start_from_finished_work():
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "b", "a")
    add(works, "c")
    attempt(works, "a", SUCCESS, NOW + 1)
    assert cancel(works, ["a", "c"], NOW + 2, from_finished=False) == []
    assert states(works) == {"a": SUCCEEDED, "b": ENQUEUED, "c": CANCELLED}


def test_cancelling_failed_or_cancelled_work_changes_nothing():
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "b", "a")
    attempt(works, "a", FAILURE, NOW + 1)
    works.changed.clear()
    assert cancel(works, ["a", "b"], NOW + 2) == []
    assert states(works) == {"a": FAILED, "b": FAILED}
    assert works.get("b").finish_time == NOW + 1
    assert works.changed == set()


def test_cancel_ignores_unknown_ids_and_handles_diamonds_and_repeats():
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "b", "a")
    add(works, "c", "a")
    add(works, "d", "b", "c")
    start_attempt(works.get("a"), "t", NOW)
    assert cancel(works, ["nope", "a", "d", "a"], NOW) == ["a"]
    assert set(states(works).values()) == {CANCELLED}


def test_cancel_of_a_running_periodic_work_finishes_it():
    works = MemoryWorkSet()
    add(works, "p", repeat_interval=60.0)
    start_attempt(works.get("p"), "t", NOW)
    assert cancel(works, ["p"], NOW) == ["p"]
    assert works.get("p").state is CANCELLED


# --- recover ----------------------------------------------------------------------------


def test_recover_puts_running_work_back_in_the_queue():
    works = MemoryWorkSet()
    spec = add(works, "a", initial_delay=100)
    start_attempt(spec, "t", NOW + 100)
    spec.progress = {"percent": 70}
    recover(spec, NOW + 500)
    assert spec.state is ENQUEUED
    assert spec.attempt is None
    assert spec.progress == {}
    assert spec.stop_reason == StopReason.SCHEDULER_RESTARTED.value
    assert spec.next_run_at == NOW + 500
    assert spec.run_attempt_count == 1  # the interrupted attempt counts
    assert is_due(spec, NOW + 500)


# --- is_prunable ------------------------------------------------------------------------


def test_unfinished_work_is_never_prunable():
    works = MemoryWorkSet()
    for state in (ENQUEUED, RUNNING, BLOCKED):
        spec = make(f"x-{state.value}", state, finish_time=0.0)
        assert not is_prunable(spec, works, None)
        assert not is_prunable(spec, works, NOW + 1e9)


@pytest.mark.parametrize("state", [SUCCEEDED, FAILED, CANCELLED])
def test_finished_work_is_prunable_unless_an_unfinished_dependent_needs_it(state):
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "b", "a")
    a = works.get("a")
    a.state = state
    assert not is_prunable(a, works, None)
    works.get("b").state = SUCCEEDED
    assert is_prunable(a, works, None)
    a.dependents = ("b", "pruned-already")
    assert is_prunable(a, works, None)


def test_retention_keeps_finished_work_one_day_plus_keep_results_for():
    works = MemoryWorkSet()
    plain = make("a", SUCCEEDED, finish_time=NOW)
    kept = make("b", FAILED, finish_time=NOW, keep_results_for=3600.0)
    assert DEFAULT_PRUNE_AGE == 24 * 3600
    assert not is_prunable(plain, works, NOW + DEFAULT_PRUNE_AGE - 1)
    assert is_prunable(plain, works, NOW + DEFAULT_PRUNE_AGE)
    assert not is_prunable(kept, works, NOW + DEFAULT_PRUNE_AGE + 3599)
    assert is_prunable(kept, works, NOW + DEFAULT_PRUNE_AGE + 3600)
    # Without ``now`` (prune_work()), retention does not matter.
    assert is_prunable(kept, works, None)


# --- merged_input -----------------------------------------------------------------------


def test_merged_input_without_prerequisites_still_goes_through_the_merger():
    # As WorkManager's WorkerWrapper: one-time work always runs its input merger.
    works = MemoryWorkSet()
    spec = make("a", input={"x": 1, "l": [1]}, input_merger="ArrayCreatingInputMerger")
    assert merged_input(spec, works) == {"x": [1], "l": [1]}
    assert isinstance(merged_input(spec, works), Data)
    plain = make("b", input={"x": 1, "l": [1]})
    assert merged_input(plain, works) == {"x": 1, "l": [1]}


def test_merged_input_overwriting_lets_prerequisite_outputs_win_in_order():
    works = MemoryWorkSet([
        make("p1", SUCCEEDED, output={"uri": "one.png", "level": 1}),
        make("p2", SUCCEEDED, output={"uri": "two.png"}),
    ])
    spec = add(works, "c", "p1", "p2", input={"uri": "own.png", "own": True})
    assert merged_input(spec, works) == {"uri": "two.png", "level": 1, "own": True}


def test_merged_input_array_creating_collects_every_value():
    works = MemoryWorkSet([
        make("p1", SUCCEEDED, output={"uri": "one.png", "sizes": [1, 2]}),
        make("p2", SUCCEEDED, output={"uri": "two.png", "sizes": 3}),
    ])
    spec = add(works, "c", "p1", "p2", input={"uri": "own.png"},
               input_merger="ArrayCreatingInputMerger")
    assert merged_input(spec, works) == {"uri": ["own.png", "one.png", "two.png"],
                                         "sizes": [1, 2, 3]}


def test_merged_input_array_creating_rejects_mixed_types():
    works = MemoryWorkSet([make("p1", SUCCEEDED, output={"n": True}),
                           make("p2", SUCCEEDED, output={"n": 1})])
    spec = add(works, "c", "p1", "p2", input_merger="ArrayCreatingInputMerger")
    with pytest.raises(DataError, match="'n'"):
        merged_input(spec, works)


def test_merged_input_skips_pruned_prerequisites():
    works = MemoryWorkSet([make("p1", SUCCEEDED, output={"a": 1})])
    spec = make("c", prerequisites=("p1", "gone"), input={"b": 2})
    assert merged_input(spec, works) == {"a": 1, "b": 2}


# --- RunAfter.ALL_FINISHED: runs once its prerequisites finished, whatever they ended as -


JOIN = {"run_after": RunAfter.ALL_FINISHED.value}
"""The record fields of a work that runs after all its prerequisites finished."""


@pytest.mark.parametrize(
    ("prerequisite_states", "expected"),
    [
        ([], ENQUEUED),
        ([SUCCEEDED, FAILED, CANCELLED], ENQUEUED),
        ([FAILED, BLOCKED], BLOCKED),
        ([CANCELLED, RUNNING], BLOCKED),
        ([SUCCEEDED, ENQUEUED], BLOCKED),
    ],
)
def test_state_from_prerequisites_when_all_must_finish(prerequisite_states, expected):
    parents = [make(f"p{i}", s) for i, s in enumerate(prerequisite_states)]
    assert state_from_prerequisites(parents, RunAfter.ALL_FINISHED.value) is expected


def test_a_join_is_blocked_while_a_prerequisite_runs_then_enqueued_with_its_delay():
    works = MemoryWorkSet()
    for wid in "abc":
        add(works, wid)
    join = add(works, "j", "a", "b", "c", initial_delay=5, **JOIN)
    assert join.state is BLOCKED
    attempt(works, "a", FAILURE, now=NOW + 1)
    cancel(works, ["b"], NOW + 2)
    assert works.get("j").state is BLOCKED       # c is not finished yet
    attempt(works, "c", SUCCESS, now=NOW + 3)
    join = works.get("j")
    assert join.state is ENQUEUED and join.error is None
    assert (join.last_enqueue_time, join.next_run_at) == (NOW + 3, NOW + 8)


def test_a_failure_up_the_chain_reaches_a_join_and_lets_it_run():
    """a fails -> b (after a) FAILED -> the join after b and c runs: it is not failed, even
    though the failure reached it through b; found in either order of the walk."""
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "b", "a")
    add(works, "c", "a")
    add(works, "j", "b", "c", **JOIN)
    attempt(works, "a", FAILURE)
    assert states(works) == {"a": FAILED, "b": FAILED, "c": FAILED, "j": ENQUEUED}
    assert works.get("j").error is None


@pytest.mark.parametrize("outcome", [SUCCESS, FAILURE], ids=["succeeds", "fails"])
def test_a_joins_own_dependents_follow_its_own_result(outcome):
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "j", "a", **JOIN)
    add(works, "after", "j")
    attempt(works, "a", FAILURE)
    assert states(works) == {"a": FAILED, "j": ENQUEUED, "after": BLOCKED}
    attempt(works, "j", outcome)
    assert works.get("after").state is (ENQUEUED if outcome is SUCCESS else FAILED)


def test_only_a_cancel_that_selects_a_join_cancels_it():
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "b")
    add(works, "j", "a", "b", **JOIN)
    add(works, "after", "j")
    cancel(works, ["a"], NOW)                     # by id: a's dependents, not the join
    assert states(works) == {"a": CANCELLED, "b": ENQUEUED, "j": BLOCKED, "after": BLOCKED}
    cancel(works, ["b"], NOW, from_finished=False)
    assert states(works) == {"a": CANCELLED, "b": CANCELLED, "j": ENQUEUED, "after": BLOCKED}
    cancel(works, ["j"], NOW, from_finished=False)  # selected (by its tag, say): cancelled
    assert states(works) == {"a": CANCELLED, "b": CANCELLED, "j": CANCELLED, "after": CANCELLED}


def test_cancelling_every_unfinished_work_cancels_the_join_in_any_order():
    for order in (["a", "j"], ["j", "a"]):
        works = MemoryWorkSet()
        add(works, "a")
        add(works, "j", "a", **JOIN)
        cancel(works, order, NOW)
        assert states(works) == {"a": CANCELLED, "j": CANCELLED}, order


def test_a_cancel_from_a_finished_work_stops_at_a_finished_join():
    """Cancel by id starts from a finished work and reaches through finished dependents,
    but not through a join: the join's dependents wait for the join's own result."""
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "j", "a", **JOIN)
    add(works, "other")
    add(works, "after", "j", "other")
    attempt(works, "a", SUCCESS)
    attempt(works, "j", SUCCESS)
    cancel(works, ["a"], NOW)
    assert states(works) == {"a": SUCCEEDED, "j": SUCCEEDED, "other": ENQUEUED,
                             "after": BLOCKED}


@pytest.mark.parametrize(("parents", "expected"), [
    ([FAILED], ENQUEUED), ([CANCELLED, SUCCEEDED], ENQUEUED), ([FAILED, RUNNING], BLOCKED)])
def test_a_join_enqueued_after_finished_prerequisites_is_enqueued_at_once(parents, expected):
    works = MemoryWorkSet([make(f"p{i}", s) for i, s in enumerate(parents)])
    join = add(works, "j", *(f"p{i}" for i in range(len(parents))), **JOIN)
    assert join.state is expected
    assert join.error is None and join.finish_time is None
    if expected is ENQUEUED:
        assert join.next_run_at == NOW


def test_append_of_a_join_onto_a_failed_leaf_runs_it():
    existing = [make("a", FAILED)]
    plan = plan_unique(existing, ExistingWorkPolicy.APPEND)
    works = MemoryWorkSet(existing)
    assert add(works, "j", *plan.prerequisites, **JOIN).state is ENQUEUED


def test_a_joins_input_merges_every_prerequisites_output_failures_too():
    works = MemoryWorkSet()
    add(works, "ok")
    add(works, "bad")
    add(works, "gone")
    add(works, "j", "ok", "bad", "gone", input={"own": 1}, **JOIN,
        input_merger="ArrayCreatingInputMerger")
    attempt(works, "ok", Outcome("success", output={"uri": "ok.png"}))
    attempt(works, "bad", Outcome("failure", output={"uri": "bad.png", "why": "broken"}))
    cancel(works, ["gone"], NOW)
    assert merged_input(works.get("j"), works) == {
        "own": [1], "uri": ["ok.png", "bad.png"], "why": ["broken"]}


def test_a_finished_prerequisite_of_a_waiting_join_is_not_prunable():
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "b")
    add(works, "j", "a", "b", **JOIN)
    attempt(works, "a", FAILURE)
    assert not is_prunable(works.get("a"), works, None)
    attempt(works, "b", SUCCESS)
    attempt(works, "j", SUCCESS)
    assert is_prunable(works.get("a"), works, None)


def test_unblock_lets_a_join_run_without_a_prerequisite_that_is_gone_but_not_others():
    works = MemoryWorkSet()
    add(works, "a")
    add(works, "j", "a", **JOIN)
    add(works, "plain", "a")
    del works.specs["a"]                          # an unreadable record, removed
    unblock(works, ["j", "plain"], NOW)
    assert works.get("j").state is ENQUEUED
    assert works.get("plain").state is BLOCKED


class CountingWorkSet(MemoryWorkSet):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, id):
        self.reads += 1
        return super().get(id)


@pytest.mark.parametrize("order", ["enqueued", "reversed", "random"])
@pytest.mark.parametrize("run_after", ["ALL_FINISHED", "ALL_SUCCEEDED"])
def test_a_wide_join_reads_a_few_prerequisites_per_finish_not_all(run_after, order):
    """A batch's join waits for every branch: each branch's finish must not read all the
    others (a full read made a 1,000-image batch's finishes quadratic), whether the
    branches finish in the order they were enqueued, the reverse or any."""
    works = CountingWorkSet()
    branches = [f"b{i:03}" for i in range(200)]
    for wid in branches:
        add(works, wid)
    add(works, "j", *branches, run_after=run_after)
    works.reads = 0
    finishing = {"enqueued": branches, "reversed": branches[::-1],
                 "random": random.Random(7).sample(branches, len(branches))}[order]
    for wid in finishing:
        attempt(works, wid, SUCCESS)
    assert works.get("j").state is ENQUEUED
    assert works.reads < 10 * len(branches), works.reads


def test_a_joins_rule_round_trips_and_old_records_read_as_the_default():
    join = make("j", **JOIN)
    assert WorkSpec.from_dict(join.to_dict()).run_after == "ALL_FINISHED"
    assert join.to_info().run_after is RunAfter.ALL_FINISHED
    old = WorkSpec.from_dict({"id": "a", "worker_name": "w", "code_key": "k", "v": 1})
    assert old.run_after == "ALL_SUCCEEDED"
    assert old.to_info().run_after is RunAfter.ALL_SUCCEEDED


# --- unique work: plan_unique -----------------------------------------------------------


def enqueue_unique(works: MemoryWorkSet, name: str, policy: ExistingWorkPolicy,
                   *chain: str, now: float = NOW) -> UniquePlan:
    """Apply a plan the way enqueue does: cancel, detach, then insert the new chain."""
    existing = [s for s in works.specs.values() if s.unique_name == name]
    plan = plan_unique(existing, policy)
    if plan.drop_new:
        return plan
    cancel(works, plan.cancel, now)
    for wid in plan.detach:
        works.get(wid).unique_name = None
    before = tuple(plan.prerequisites)
    for wid in chain:
        add(works, wid, *before, now=now, unique_name=name)
        before = (wid,)
    return plan


def named(works: MemoryWorkSet, name: str) -> list[str]:
    return [wid for wid, s in works.specs.items() if s.unique_name == name]


@pytest.mark.parametrize("policy", list(ExistingWorkPolicy))
def test_unique_work_with_no_existing_work_is_a_new_chain(policy):
    assert plan_unique([], policy) == UniquePlan()
    works = MemoryWorkSet()
    enqueue_unique(works, "n", policy, "a", "b")
    assert states(works) == {"a": ENQUEUED, "b": BLOCKED}
    assert named(works, "n") == ["a", "b"]


def test_replace_cancels_unfinished_existing_work_and_removes_all_from_the_name():
    works = MemoryWorkSet()
    enqueue_unique(works, "n", ExistingWorkPolicy.REPLACE, "a", "b", "c")
    attempt(works, "a", SUCCESS)
    start_attempt(works.get("b"), "t", NOW)
    existing = [works.get(w) for w in "abc"]
    plan = plan_unique(existing, ExistingWorkPolicy.REPLACE)
    assert plan == UniquePlan(cancel=["b", "c"], detach=["a", "b", "c"])
    enqueue_unique(works, "n", ExistingWorkPolicy.REPLACE, "new")
    assert states(works) == {"a": SUCCEEDED, "b": CANCELLED, "c": CANCELLED, "new": ENQUEUED}
    assert named(works, "n") == ["new"]
    assert works.get("new").prerequisites == ()


@pytest.mark.parametrize("active", [ENQUEUED, RUNNING])
def test_keep_drops_the_new_work_while_existing_work_is_enqueued_or_running(active):
    works = MemoryWorkSet()
    enqueue_unique(works, "n", ExistingWorkPolicy.KEEP, "a", "b")
    if active is RUNNING:
        start_attempt(works.get("a"), "t", NOW)
    plan = enqueue_unique(works, "n", ExistingWorkPolicy.KEEP, "new")
    assert plan == UniquePlan(drop_new=True)
    assert works.get("new") is None
    assert states(works) == {"a": active, "b": BLOCKED}
    assert named(works, "n") == ["a", "b"]


def test_keep_replaces_existing_work_that_is_only_blocked():
    works = MemoryWorkSet([make("done", SUCCEEDED, unique_name="n")])
    add(works, "outside")  # an unfinished prerequisite outside the name
    add(works, "b", "outside", unique_name="n")
    existing = [works.get("done"), works.get("b")]
    assert works.get("b").state is BLOCKED
    assert plan_unique(existing, ExistingWorkPolicy.KEEP) == UniquePlan(
        cancel=["b"], detach=["done", "b"])
    enqueue_unique(works, "n", ExistingWorkPolicy.KEEP, "new")
    assert states(works) == {"done": SUCCEEDED, "outside": ENQUEUED, "b": CANCELLED,
                             "new": ENQUEUED}
    assert named(works, "n") == ["new"]


@pytest.mark.parametrize("finished", [SUCCEEDED, FAILED, CANCELLED])
def test_keep_replaces_existing_work_that_is_finished(finished):
    works = MemoryWorkSet([make("old", finished, unique_name="n")])
    assert plan_unique([works.get("old")], ExistingWorkPolicy.KEEP) == UniquePlan(
        cancel=[], detach=["old"])
    enqueue_unique(works, "n", ExistingWorkPolicy.KEEP, "new")
    assert states(works) == {"old": finished, "new": ENQUEUED}
    assert named(works, "n") == ["new"]


def test_append_chains_the_new_work_after_every_leaf():
    works = MemoryWorkSet()
    enqueue_unique(works, "n", ExistingWorkPolicy.REPLACE, "a", "b")
    add(works, "c", "a", unique_name="n")  # a second leaf under the name
    existing = [works.get(w) for w in "abc"]
    assert plan_unique(existing, ExistingWorkPolicy.APPEND) == UniquePlan(prerequisites=["b", "c"])
    enqueue_unique(works, "n", ExistingWorkPolicy.APPEND, "d", "e")
    assert works.get("d").prerequisites == ("b", "c")
    assert works.get("e").prerequisites == ("d",)
    assert works.get("b").dependents == ("d",) and works.get("c").dependents == ("d",)
    assert states(works) == {"a": ENQUEUED, "b": BLOCKED, "c": BLOCKED, "d": BLOCKED,
                             "e": BLOCKED}
    assert named(works, "n") == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("leaves", "expected"),
    [((FAILED,), FAILED), ((CANCELLED,), CANCELLED), ((CANCELLED, FAILED), FAILED),
     ((FAILED, CANCELLED), FAILED), ((SUCCEEDED, CANCELLED), CANCELLED),
     ((SUCCEEDED, RUNNING), BLOCKED)],
    ids=lambda v: "-".join(s.value for s in v) if isinstance(v, tuple) else v.value,
)
def test_append_onto_failed_or_cancelled_leaves(leaves, expected):
    works = MemoryWorkSet([make(f"leaf{i}", s, unique_name="n") for i, s in enumerate(leaves)])
    plan = enqueue_unique(works, "n", ExistingWorkPolicy.APPEND, "new", "after")
    assert plan.prerequisites == [f"leaf{i}" for i in range(len(leaves))]
    assert plan.cancel == [] and plan.detach == []
    assert works.get("new").state is expected
    expected_after = BLOCKED if expected is BLOCKED else expected
    assert works.get("after").state is expected_after
    assert named(works, "n") == [*(f"leaf{i}" for i in range(len(leaves))), "new", "after"]


def test_append_onto_succeeded_leaves_is_enqueued_at_once_with_their_outputs():
    works = MemoryWorkSet()
    enqueue_unique(works, "n", ExistingWorkPolicy.APPEND, "a")
    attempt(works, "a", Outcome("success", output={"image_uri": "blurred.png"}))
    enqueue_unique(works, "n", ExistingWorkPolicy.APPEND, "save", now=NOW + 10)
    save = works.get("save")
    assert save.prerequisites == ("a",)
    assert save.state is ENQUEUED
    assert save.next_run_at == NOW + 10
    assert merged_input(save, works) == {"image_uri": "blurred.png"}


def test_append_ignores_non_leaves_even_if_they_failed():
    works = MemoryWorkSet()
    enqueue_unique(works, "n", ExistingWorkPolicy.APPEND, "a", "b")
    attempt(works, "a", SUCCESS)
    existing = [works.get(w) for w in "ab"]
    assert plan_unique(existing, ExistingWorkPolicy.APPEND).prerequisites == ["b"]


def test_append_or_replace_appends_onto_healthy_leaves():
    works = MemoryWorkSet()
    enqueue_unique(works, "n", ExistingWorkPolicy.APPEND_OR_REPLACE, "a")
    attempt(works, "a", SUCCESS)
    add(works, "b", unique_name="n")  # a running second leaf
    start_attempt(works.get("b"), "t", NOW)
    plan = enqueue_unique(works, "n", ExistingWorkPolicy.APPEND_OR_REPLACE, "new")
    assert plan == UniquePlan(prerequisites=["a", "b"])
    assert works.get("new").state is BLOCKED
    assert named(works, "n") == ["a", "b", "new"]


@pytest.mark.parametrize("broken", [FAILED, CANCELLED])
def test_append_or_replace_starts_a_fresh_chain_after_a_failed_or_cancelled_leaf(broken):
    works = MemoryWorkSet([make("bad", broken, unique_name="n")])
    add(works, "live", unique_name="n")
    plan = enqueue_unique(works, "n", ExistingWorkPolicy.APPEND_OR_REPLACE, "new", "next")
    assert plan == UniquePlan(cancel=["live"], detach=["bad", "live"])
    assert works.get("new").prerequisites == ()
    assert states(works) == {"bad": broken, "live": CANCELLED, "new": ENQUEUED,
                             "next": BLOCKED}
    assert named(works, "n") == ["new", "next"]


# --- unique periodic work: plan_unique_periodic -----------------------------------------


def periodic(id: str, state: WorkState = ENQUEUED, **fields) -> WorkSpec:
    return make(id, state, repeat_interval=60.0, flex_interval=60.0, unique_name="sync",
                **fields)


@pytest.mark.parametrize("policy", list(ExistingPeriodicWorkPolicy))
def test_unique_periodic_with_no_existing_work_enqueues(policy):
    assert plan_unique_periodic([], policy, "sync") == UniquePlan()


@pytest.mark.parametrize("state", [ENQUEUED, RUNNING])
def test_periodic_keep_drops_the_new_request_while_the_existing_one_is_unfinished(state):
    assert plan_unique_periodic([periodic("p", state)], ExistingPeriodicWorkPolicy.KEEP,
                                "sync") == UniquePlan(drop_new=True)


def test_periodic_keep_enqueues_when_the_existing_work_was_cancelled():
    plan = plan_unique_periodic([periodic("p", CANCELLED)], ExistingPeriodicWorkPolicy.KEEP,
                                "sync")
    assert plan == UniquePlan(cancel=[], detach=["p"])


@pytest.mark.parametrize("state", [ENQUEUED, RUNNING])
def test_periodic_update_keeps_the_existing_work_and_does_not_stop_it(state):
    plan = plan_unique_periodic([periodic("p", state)], ExistingPeriodicWorkPolicy.UPDATE,
                                "sync")
    assert plan == UniquePlan(update="p")
    assert plan.cancel == [] and not plan.drop_new


def test_periodic_update_of_cancelled_work_enqueues_the_new_request():
    plan = plan_unique_periodic([periodic("p", CANCELLED)], ExistingPeriodicWorkPolicy.UPDATE,
                                "sync")
    assert plan.update is None and not plan.drop_new
    assert plan.detach == ["p"]


@pytest.mark.parametrize(
    "existing",
    [[make("one", ENQUEUED, unique_name="sync")],
     [make("one", BLOCKED, unique_name="sync")],
     [make("one", SUCCEEDED, unique_name="sync")]],
    ids=["enqueued", "blocked", "succeeded"],
)
def test_periodic_update_of_one_time_work_is_an_error(existing):
    with pytest.raises(InvalidRequestError) as caught:
        plan_unique_periodic(existing, ExistingPeriodicWorkPolicy.UPDATE, "sync")
    message = str(caught.value)
    assert "'sync'" in message
    assert "UPDATE only updates periodic work" in message
    assert "CANCEL_AND_REENQUEUE" in message


def test_periodic_update_of_a_chain_is_an_error():
    chain = [make("one", SUCCEEDED, unique_name="sync"), make("two", RUNNING, unique_name="sync")]
    with pytest.raises(InvalidRequestError, match="chain of 2 works"):
        plan_unique_periodic(chain, ExistingPeriodicWorkPolicy.UPDATE, "sync")


def test_periodic_update_ignores_cancelled_history_under_the_name():
    existing = [periodic("p1", CANCELLED), periodic("p2", ENQUEUED)]
    plan = plan_unique_periodic(existing, ExistingPeriodicWorkPolicy.UPDATE, "sync")
    assert plan.update == "p2"


@pytest.mark.parametrize("state", [ENQUEUED, RUNNING, CANCELLED])
def test_periodic_cancel_and_reenqueue_cancels_and_removes_the_existing_work(state):
    plan = plan_unique_periodic([periodic("p", state)],
                                ExistingPeriodicWorkPolicy.CANCEL_AND_REENQUEUE, "sync")
    expected_cancel = [] if state is CANCELLED else ["p"]
    assert plan == UniquePlan(cancel=expected_cancel, detach=["p"])


def test_periodic_cancel_and_reenqueue_stops_a_running_work():
    works = MemoryWorkSet([periodic("p")])
    start_attempt(works.get("p"), "t", NOW)
    plan = plan_unique_periodic([works.get("p")], ExistingPeriodicWorkPolicy.CANCEL_AND_REENQUEUE,
                                "sync")
    assert cancel(works, plan.cancel, NOW) == ["p"]
    assert works.get("p").state is CANCELLED


# --- records ----------------------------------------------------------------------------


def test_work_spec_round_trips_through_a_dict_and_ignores_unknown_keys():
    works = MemoryWorkSet()
    add(works, "a")
    spec = add(works, "b", "a", tags=("t",), input={"x": [1]})
    start_attempt(works.get("a"), "tok", NOW)
    a = works.get("a")
    values = a.to_dict()
    assert values["state"] == "RUNNING"
    assert values["attempt"] == {"token": "tok", "started_at": NOW, "pid": None,
                                 "pid_create_time": None}
    values["from_the_future"] = 1
    back = WorkSpec.from_dict(values)
    assert back == a
    assert back.copy() == a and back.copy() is not back
    spec_back = WorkSpec.from_dict({**spec.to_dict(), "tags": ["t"], "prerequisites": ["a"]})
    assert spec_back == spec


def test_work_spec_from_an_old_record_takes_defaults():
    spec = WorkSpec.from_dict({"id": "a", "worker_name": "w", "code_key": "k", "v": 0})
    assert spec.state is ENQUEUED
    assert spec.dependents == ()
    assert spec.backoff_delay == 30.0


def test_work_info_shows_progress_only_while_running_and_the_schedule_only_when_enqueued():
    spec = make("a", next_run_at=NOW + 10)
    info = spec.to_info()
    assert info.next_schedule_time is not None
    assert info.next_schedule_time.timestamp() == NOW + 10
    start_attempt(spec, "t", NOW)
    spec.progress = {"percent": 5}
    info = spec.to_info()
    assert info.state is RUNNING
    assert info.progress == {"percent": 5}
    assert info.next_schedule_time is None
    finish_attempt(MemoryWorkSet([spec]), spec, Outcome("success", output={"o": 1}), NOW)
    info = spec.to_info()
    assert info.progress == Data()
    assert info.output_data == {"o": 1}
    assert info.run_attempt_count == 1


def test_a_work_info_is_made_with_every_field_of_its_class():
    """``to_info`` fills a WorkInfo's fields itself (not through its slow frozen
    ``__init__``): one it forgot would fall back to the class default unnoticed."""
    spec = make("a", tags=("t",))
    info = spec.to_info(log_dir="/logs")
    assert sorted(vars(info)) == sorted(f.name for f in dataclasses.fields(WorkInfo))
    assert info == WorkInfo(**vars(info))
    assert hash(info) == hash(WorkInfo(**vars(info)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.state = RUNNING  # type: ignore[misc]
