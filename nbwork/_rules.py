"""WorkManager's rules as functions of records and ``now``: no I/O, no processes.

Every function works on a ``WorkSet`` — something that hands out the mutable ``WorkSpec``
of an id and is told which ones changed. The store's transaction is one; tests use
``MemoryWorkSet``. Callers do the I/O; these functions decide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from ._content import CONTENT_WAIT, content_due, has_triggers, waits_for_content
from ._spec import WorkSpec
from .data import MERGERS, Data
from .errors import InvalidRequestError
from .info import StopReason, WorkState
from .request import MAX_BACKOFF_DELAY, ExistingPeriodicWorkPolicy, ExistingWorkPolicy, RunAfter

MAX_CONSECUTIVE_CRASHES = 3
"""A work whose worker process dies this many times in a row fails (no endless crash loop)."""

DEFAULT_PRUNE_AGE = 24 * 3600.0
"""Finished work older than this plus its ``keep_results_for`` is pruned (WorkManager: 1 day)."""


class WorkSet(Protocol):
    def get(self, id: str) -> WorkSpec | None: ...

    def put(self, spec: WorkSpec) -> None: ...


class MemoryWorkSet:
    """A dict-backed ``WorkSet`` (for tests and for planning without a store)."""

    def __init__(self, specs: Iterable[WorkSpec] = ()) -> None:
        self.specs = {s.id: s for s in specs}
        self.changed: set[str] = set()

    def get(self, id: str) -> WorkSpec | None:
        return self.specs.get(id)

    def put(self, spec: WorkSpec) -> None:
        self.specs[spec.id] = spec
        self.changed.add(spec.id)


# --- arithmetic -------------------------------------------------------------------------


def backoff_seconds(policy: str, delay: float, attempts: int) -> float:
    """The wait before the next attempt; ``attempts`` = stored count after the attempt (≥ 1)."""
    n = max(1, attempts)
    if policy == "LINEAR":
        seconds = delay * n
    else:
        seconds = delay * 2.0 ** min(n - 1, 64)
    return min(seconds, MAX_BACKOFF_DELAY)


def backoff_run_at(spec: WorkSpec) -> float:
    """When a work that asked for a retry runs again: its last enqueue (the retry) plus
    the backoff of its (current) spec."""
    return spec.last_enqueue_time + backoff_seconds(
        spec.backoff_policy, spec.backoff_delay, spec.run_attempt_count)


def first_run_at(spec: WorkSpec, now: float) -> float:
    """When a work that just became ENQUEUED is due (initial delay; flex for periodic)."""
    if waits_for_content(spec):
        return CONTENT_WAIT
    due = now if spec.initial_delay_met else now + spec.initial_delay
    if has_triggers(spec) and spec.content.get("last") and not spec.constraints_met:
        # Triggered while it was still BLOCKED: its update delay still holds.
        constraints = spec.constraints
        due = max(due, content_due(spec.content["first"], spec.content["last"],
                                   float(constraints.get("trigger_content_update_delay") or 0),
                                   constraints.get("trigger_content_max_delay")))
    if (spec.is_periodic and spec.flex_interval is not None
            and spec.flex_interval != spec.repeat_interval):
        due += spec.repeat_interval - spec.flex_interval
    return due


def next_period_at(spec: WorkSpec, finished_at: float) -> float:
    """Each later period is due one interval after the previous run finished."""
    return finished_at + (spec.repeat_interval or 0.0)


# --- enqueue ----------------------------------------------------------------------------


def state_from_prerequisites(prerequisites: Iterable[WorkSpec],
                             run_after: str = RunAfter.ALL_SUCCEEDED.value) -> WorkState:
    """WorkManager's rule: FAILED if any failed (wins), else CANCELLED if any was, else
    ENQUEUED if all succeeded, else BLOCKED. With ``run_after`` ALL_FINISHED: ENQUEUED once
    all are finished (whatever they ended as), else BLOCKED."""
    states = [p.state for p in prerequisites]
    if run_after == RunAfter.ALL_FINISHED.value:
        return WorkState.ENQUEUED if all(s.is_finished for s in states) else WorkState.BLOCKED
    if WorkState.FAILED in states:
        return WorkState.FAILED
    if WorkState.CANCELLED in states:
        return WorkState.CANCELLED
    if all(s is WorkState.SUCCEEDED for s in states):
        return WorkState.ENQUEUED
    return WorkState.BLOCKED


def runs_after_all_finished(spec: WorkSpec) -> bool:
    """Whether ``spec`` waits for its prerequisites to finish, not to succeed: their
    failure or cancellation never finishes it (``RunAfter.ALL_FINISHED``)."""
    return spec.run_after == RunAfter.ALL_FINISHED.value


def insert_new(works: WorkSet, spec: WorkSpec, now: float) -> None:
    """Add a new work whose prerequisites are already in ``works``; link and set its state."""
    prerequisites = []
    for pid in spec.prerequisites:
        parent = works.get(pid)
        if parent is None:
            raise InvalidRequestError(
                f"prerequisite {pid} of work {spec.id} is not in the store (was it pruned?)"
            )
        prerequisites.append(parent)
        parent.dependents = (*parent.dependents, spec.id)
        works.put(parent)
    spec.enqueue_time = now
    spec.state = state_from_prerequisites(prerequisites, spec.run_after)
    if spec.state is WorkState.ENQUEUED:
        _enqueue(spec, now)
    elif spec.state.is_finished:
        spec.finish_time = now
        if spec.state is WorkState.FAILED:
            failed = next(p for p in prerequisites if p.state is WorkState.FAILED)
            spec.error = failed_because(failed, failed)
    works.put(spec)


def failed_because(prerequisite: WorkSpec, origin: WorkSpec) -> str:
    """The error of a work failed because ``prerequisite`` failed (itself because of
    ``origin``, a work further up the chain, when that is another): it names them."""
    def name(spec: WorkSpec) -> str:
        return f"{spec.id[:8]} ({spec.worker_name.rsplit('.', 1)[-1]})"

    text = f"not run: its prerequisite {name(prerequisite)} failed"
    if origin.id != prerequisite.id:
        text += f", because {name(origin)} before it failed"
    return text


# --- unique work ------------------------------------------------------------------------


@dataclass
class UniquePlan:
    """What enqueueing unique work does to the work already under its name."""

    drop_new: bool = False
    cancel: list[str] = field(default_factory=list)
    detach: list[str] = field(default_factory=list)
    prerequisites: list[str] = field(default_factory=list)
    update: str | None = None


def plan_unique(existing: list[WorkSpec], policy: ExistingWorkPolicy) -> UniquePlan:
    """WorkManager's ``EnqueueRunnable`` for one-time unique work."""
    if not existing:
        return UniquePlan()
    unfinished = [s.id for s in existing if not s.is_finished]
    everything = [s.id for s in existing]
    if policy in (ExistingWorkPolicy.APPEND, ExistingWorkPolicy.APPEND_OR_REPLACE):
        leaves = [s for s in existing if not s.dependents]
        broken = any(s.state in (WorkState.FAILED, WorkState.CANCELLED) for s in leaves)
        if policy is ExistingWorkPolicy.APPEND_OR_REPLACE and broken:
            return UniquePlan(cancel=unfinished, detach=everything)
        return UniquePlan(prerequisites=[s.id for s in leaves])
    if policy is ExistingWorkPolicy.KEEP and any(
        s.state in (WorkState.ENQUEUED, WorkState.RUNNING) for s in existing
    ):
        return UniquePlan(drop_new=True)
    return UniquePlan(cancel=unfinished, detach=everything)


def plan_unique_periodic(existing: list[WorkSpec], policy: ExistingPeriodicWorkPolicy,
                         name: str) -> UniquePlan:
    """``enqueue_unique_periodic_work``: KEEP, UPDATE (same id, generation + 1) or
    CANCEL_AND_REENQUEUE."""
    unfinished = [s for s in existing if not s.is_finished]
    everything = [s.id for s in existing]
    if policy is ExistingPeriodicWorkPolicy.KEEP and unfinished:
        return UniquePlan(drop_new=True)
    if policy is ExistingPeriodicWorkPolicy.UPDATE:
        # As WorkManager: cancelled work is replaced; anything else must be one periodic work.
        live = [s for s in existing if s.state is not WorkState.CANCELLED]
        if len(live) > 1:
            raise InvalidRequestError(
                f"unique work {name!r} is a chain of {len(live)} works; UPDATE can only update "
                "a single periodic work. Use CANCEL_AND_REENQUEUE or another name"
            )
        if live and not live[0].is_periodic:
            raise InvalidRequestError(
                f"unique work {name!r} holds one-time work; UPDATE only updates periodic work "
                "(an update must keep the worker's type). Use CANCEL_AND_REENQUEUE or another "
                "name"
            )
        if live:
            return UniquePlan(update=live[0].id)
    return UniquePlan(cancel=[s.id for s in unfinished], detach=everything)


# --- running and finishing --------------------------------------------------------------


def is_due(spec: WorkSpec, now: float) -> bool:
    return spec.state is WorkState.ENQUEUED and spec.next_run_at <= now


def start_attempt(spec: WorkSpec, token: str, now: float) -> int:
    """ENQUEUED → RUNNING; returns the ``run_attempt_count`` the worker sees (before +1)."""
    from ._spec import Attempt

    seen = spec.run_attempt_count
    spec.state = WorkState.RUNNING
    spec.run_attempt_count += 1
    spec.start_time = now
    spec.stop_reason = None
    spec.backing_off = False
    # Progress is not cleared here: after a constraint stop the last one stays until the
    # next result (WorkManager keeps it), so a progress bar does not drop to 0.
    spec.attempt = Attempt(token=token, started_at=now)
    return seen


def merged_input(spec: WorkSpec, works: WorkSet) -> Data:
    """The input an attempt runs with: its merger over own input + prerequisites' outputs.

    As WorkManager's ``WorkerWrapper``: periodic work takes its input as is; one-time work
    always goes through its merger, even with no prerequisites (so ``ArrayCreatingInputMerger``
    turns its own scalars into lists too).
    """
    if spec.is_periodic:
        return Data(spec.input)
    inputs = [Data(spec.input)]
    for pid in spec.prerequisites:
        parent = works.get(pid)
        if parent is not None:
            inputs.append(Data(parent.output))
    return MERGERS[spec.input_merger].merge(inputs)


class OutcomeKind(str, Enum):
    """How an attempt ended. A ``str`` whose value is the form it travels in between
    processes (and the plain strings older code passed): ``OutcomeKind("success")`` reads it."""

    SUCCESS = "success"
    FAILURE = "failure"
    RETRY = "retry"
    CRASH = "crash"
    """The worker process died (a signal, ``os._exit``): retried, failed after a few in a row."""
    STOPPED = "stopped"
    """Stopped (a cancel, an unmet constraint, a scheduler restart): ``stop_reason`` says why."""
    NOT_STARTED = "not_started"
    """Handed to a worker process but never begun: as if it had never left the queue."""


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as the executor saw it. ``kind`` may be given as its string."""

    kind: OutcomeKind
    output: dict = field(default_factory=dict)
    error: str | None = None
    stop_reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", OutcomeKind(self.kind))


def _counting_crashes(spec: WorkSpec, kind: OutcomeKind,
                      error: str | None) -> tuple[OutcomeKind, str | None]:
    """A crash is retried, until the worker process died MAX_CONSECUTIVE_CRASHES times in a
    row: then the work fails, so it cannot crash forever. Any other outcome resets the count."""
    if kind is not OutcomeKind.CRASH:
        spec.consecutive_crashes = 0
        return kind, error
    spec.consecutive_crashes += 1
    spec.error = error
    if spec.consecutive_crashes < MAX_CONSECUTIVE_CRASHES:
        return OutcomeKind.RETRY, error
    return OutcomeKind.FAILURE, (
        f"{error}\nnbwork: the worker process died {spec.consecutive_crashes} "
        "times in a row; the work is failed so it cannot crash forever")


def finish_attempt(works: WorkSet, spec: WorkSpec, outcome: Outcome, now: float) -> None:
    """Apply an attempt's outcome to a RUNNING work and propagate to its dependents."""
    spec.attempt = None
    kind = OutcomeKind(outcome.kind)  # also one unpickled from an older nbwork (a str)
    if kind not in (OutcomeKind.STOPPED, OutcomeKind.NOT_STARTED):
        spec.progress = {}  # a result clears it; a stop keeps it for the next attempt
    if kind is OutcomeKind.NOT_STARTED:
        # Handed to a worker process but never begun (queued behind an attempt that died,
        # or taken back for an idle process): as if it had never left the queue.
        spec.state = WorkState.ENQUEUED
        spec.run_attempt_count = max(0, spec.run_attempt_count - 1)
        spec.next_run_at = now
        works.put(spec)
        return
    kind, error = _counting_crashes(spec, kind, outcome.error)
    if kind is OutcomeKind.STOPPED:
        # A stop for a constraint is not a failure: back to the queue at once.
        spec.state = WorkState.ENQUEUED
        spec.stop_reason = outcome.stop_reason
        spec.next_run_at = now
    elif kind is OutcomeKind.RETRY:
        spec.state = WorkState.ENQUEUED
        # As WorkManager: a backed-off work is due its backoff after its last enqueue.
        spec.last_enqueue_time = now
        spec.backing_off = True
        spec.next_run_at = backoff_run_at(spec)
    elif spec.is_periodic:
        # Periodic work never finishes by itself: success or failure, it waits for the next period.
        spec.error = error
        spec.state = WorkState.ENQUEUED
        spec.period_count += 1
        spec.run_attempt_count = 0
        spec.last_enqueue_time = now
        spec.next_run_at = next_period_at(spec, now)
    elif kind is OutcomeKind.SUCCESS:
        spec.state = WorkState.SUCCEEDED
        spec.output = dict(outcome.output)
        spec.error = None
        spec.finish_time = now
        works.put(spec)
        _unblock_dependents(works, spec, now)
    else:
        spec.state = WorkState.FAILED
        spec.output = dict(outcome.output)
        spec.error = error
        spec.finish_time = now
        works.put(spec)
        _finish_dependents(works, spec, WorkState.FAILED, now)
    works.put(spec)


def _enqueue(spec: WorkSpec, now: float) -> None:
    """A new or BLOCKED work becomes ENQUEUED: its initial delay counts from now."""
    spec.state = WorkState.ENQUEUED
    spec.last_enqueue_time = now
    spec.next_run_at = first_run_at(spec, now)


def _may_run(works: WorkSet, spec: WorkSpec) -> bool:
    """Whether the prerequisites of a BLOCKED work now let it run.

    Read the first prerequisite, then from the last back, stopping at the first that still
    holds it: prerequisites tend to finish in the order they were enqueued (the last is the
    one left) or in the reverse (the first is), and while many are unfinished one is found
    in a few reads in any order; so a wide join (a batch's contact sheet) reads a few
    records per finish of a prerequisite, not all of them (that was quadratic in the batch:
    33 s of reads for 1,000 images finishing in the reverse order)."""
    join = runs_after_all_finished(spec)
    prerequisites = spec.prerequisites
    for pid in (*prerequisites[:1], *reversed(prerequisites[1:])):
        parent = works.get(pid)
        if parent is None:
            if join:
                continue  # gone (an unreadable record, removed): it never runs, so finished
            return False  # a prerequisite that cannot be read never succeeds: stays BLOCKED
        # (A BLOCKED work of the default rule has no FAILED or CANCELLED prerequisite: that
        # would have finished it. So it may run once all succeeded.)
        if not (parent.is_finished if join else parent.state is WorkState.SUCCEEDED):
            return False
    return True


def unblock(works: WorkSet, ids: Iterable[str], now: float) -> None:
    """Each of ``ids`` that is BLOCKED becomes ENQUEUED if its prerequisites now let it."""
    for wid in dict.fromkeys(ids):
        spec = works.get(wid)
        if spec is not None and spec.state is WorkState.BLOCKED and _may_run(works, spec):
            _enqueue(spec, now)
            works.put(spec)


def _unblock_dependents(works: WorkSet, spec: WorkSpec, now: float) -> None:
    unblock(works, spec.dependents, now)


def _finish_dependents(works: WorkSet, spec: WorkSpec, state: WorkState, now: float) -> list[str]:
    """Every unfinished dependent, transitively, takes ``state``; returns the RUNNING ones.

    A dependent that runs after all its prerequisites *finished* is neither failed nor
    cancelled: it may run now, and its own dependents wait for its own result."""
    running: list[str] = []
    pending = [(did, spec) for did in spec.dependents]
    seen: set[str] = set()
    joins: list[str] = []
    while pending:
        child_id, parent = pending.pop()
        if child_id in seen:
            continue
        seen.add(child_id)
        child = works.get(child_id)
        if child is None:
            continue
        if runs_after_all_finished(child):
            joins.append(child_id)
            continue
        # A finished dependent stays as it is, but its own dependents are still reached.
        pending.extend((did, child) for did in child.dependents)
        if child.is_finished:
            continue
        if child.state is WorkState.RUNNING:
            running.append(child.id)
            child.stop_reason = StopReason.CANCELLED_BY_APP.value
        child.state = state
        child.finish_time = now
        if state is WorkState.FAILED:
            # Name the failed prerequisite: "FAILED" alone sends users looking for a bug
            # in a work that never ran.
            child.error = failed_because(
                parent if parent.state is WorkState.FAILED else spec, spec)
        works.put(child)
    # Only now: a join's other prerequisites may have been finished further on in this walk.
    unblock(works, joins, now)
    return running


def cancel(works: WorkSet, ids: Iterable[str], now: float, *,
           from_finished: bool = True) -> list[str]:
    """Cancel each unfinished target and its unfinished dependents, transitively.

    A finished target is untouched; with ``from_finished`` (a cancel by id) its unfinished
    dependents are still cancelled, without it (by tag or unique name, which WorkManager
    selects among unfinished work only) it is skipped. Returns the ids that were RUNNING
    (their processes must be stopped).
    """
    running: list[str] = []
    for wid in ids:
        spec = works.get(wid)
        if spec is None or (spec.is_finished and not from_finished):
            continue
        if not spec.is_finished:
            if spec.state is WorkState.RUNNING:
                running.append(spec.id)
                spec.stop_reason = StopReason.CANCELLED_BY_APP.value
            spec.state = WorkState.CANCELLED
            spec.finish_time = now
            works.put(spec)
        running.extend(_finish_dependents(works, spec, WorkState.CANCELLED, now))
    return running


def recover(spec: WorkSpec, now: float) -> None:
    """A work left RUNNING by a dead scheduler goes back to ENQUEUED (at-least-once)."""
    spec.state = WorkState.ENQUEUED
    spec.attempt = None
    spec.progress = {}
    spec.stop_reason = StopReason.SCHEDULER_RESTARTED.value
    spec.next_run_at = now


def expiry_time(spec: WorkSpec) -> float | None:
    """When a finished work's retention ends (None while it is not finished): from then on
    it may be pruned, once no unfinished work depends on it."""
    if not spec.is_finished:
        return None
    return (spec.finish_time or 0.0) + DEFAULT_PRUNE_AGE + (spec.keep_results_for or 0.0)


def is_prunable(spec: WorkSpec, works: WorkSet, now: float | None) -> bool:
    """Finished, with no unfinished dependent; with ``now``, also past its retention."""
    if not spec.is_finished:
        return False
    if now is not None and (expiry_time(spec) or 0.0) > now:
        return False
    for did in spec.dependents:
        child = works.get(did)
        if child is not None and not child.is_finished:
            return False
    return True
