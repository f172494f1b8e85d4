"""The executor's reports (started, progress, outcomes) on their way to the store.

While other attempts are still in flight, reports wait up to ``RECORD_DELAY`` seconds, or
until ``RECORD_BATCH`` outcomes are in, to be written in one transaction: a flood of short
works would otherwise cost a transaction per work. A report with nothing else in flight is
written at once (no delay in a work's latency). Nothing that could not be written is lost:
on a store fault every report waits for the next try.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from . import _rules
from ._rules import Outcome
from ._scheduler_records import RecordCache
from ._spec import WorkSpec
from ._store import Store
from ._time import Clock
from .errors import StoreError
from .info import WorkState

log = logging.getLogger("nbwork.scheduler")

RECORD_DELAY = 0.005
RECORD_BATCH = 64
PID_RECORD_AFTER = 0.05
"""Seconds an attempt has been handed to its process before that process is written into
its record (unless a progress or an outcome of it is written first). A short attempt ends
sooner, and its record is then written once, when it ends, not once more for the process:
in a flood of no-ops that was a sixth of the scheduler's record writes. A scheduler that
dies meanwhile loses nothing by it: its successor ends every process it started, recorded
or not (``_executors/leftovers``), before any of its work runs again."""


@dataclass
class Reports:
    started: dict[str, tuple[int | None, float | None]] = field(default_factory=dict)
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    since: float | None = None  # monotonic time of the oldest unwritten one

    def __bool__(self) -> bool:
        return bool(self.started or self.progress or self.outcomes)


class ReportBuffer:
    """The sink the executor reports to: reports wait here until ``take()``."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._reports = Reports()
        # token -> (pid, its create time, when reported): started reports not yet due
        # (see PID_RECORD_AFTER)
        self._early: dict[str, tuple[int | None, float | None, float]] = {}

    def started(self, token: str, pid: int | None, pid_create_time: float | None) -> None:
        self._early[token] = (pid, pid_create_time, self._clock.monotonic())

    def progress(self, token: str, progress: dict[str, Any]) -> None:
        self._reports.progress[token] = progress
        self._note()

    def finished(self, token: str, outcome: Outcome) -> None:
        self._reports.outcomes[token] = outcome
        self._note()

    def _note(self) -> None:
        if self._reports.since is None:
            self._reports.since = self._clock.monotonic()

    def _promote(self, everything: bool = False) -> None:
        """Move the started reports that are due into the reports to write (those of an
        attempt with an outcome are dropped: its record then no longer names a process)."""
        if not self._early:
            return
        reports, now = self._reports, self._clock.monotonic()
        for token, (pid, create_time, at) in list(self._early.items()):
            if token in reports.outcomes:
                del self._early[token]
            elif everything or token in reports.progress or now - at >= PID_RECORD_AFTER:
                del self._early[token]
                reports.started[token] = (pid, create_time)
                if reports.since is None:
                    reports.since = at

    def ripe(self, in_flight: int) -> bool:
        """Write now, or let a few more join (see RECORD_DELAY)? ``in_flight``: attempts
        not yet recorded as finished."""
        self._promote()
        reports = self._reports
        if reports.since is None:
            return False
        return (len(reports.outcomes) >= min(RECORD_BATCH, in_flight)
                or self._clock.monotonic() - reports.since >= RECORD_DELAY)

    def deadline(self) -> float | None:
        """The monotonic time by which the waiting reports must be written."""
        since = self._reports.since
        times = [] if since is None else [since + RECORD_DELAY]
        if self._early:
            times.append(min(at for _, _, at in self._early.values()) + PID_RECORD_AFTER)
        return min(times, default=None)

    def take(self, everything: bool = False) -> Reports:
        """The reports to write; with ``everything``, started reports not yet due too."""
        self._promote(everything)
        reports, self._reports = self._reports, Reports()
        return reports

    def put_back(self, reports: Reports) -> None:
        """Reports that could not be written, ahead of any that came since (newer ones of
        the same attempt win)."""
        newer = self._reports
        self._reports = Reports(
            started={**reports.started, **newer.started},
            progress={**reports.progress, **newer.progress},
            outcomes={**reports.outcomes, **newer.outcomes},
            since=reports.since)

    def drop_outcomes(self) -> None:
        self._reports.outcomes.clear()


class ReportWriter:
    """Writes the buffered reports of this scheduler's attempts (``attempts``: token -> work
    id, shared with the loop and the dispatcher) in one transaction."""

    def __init__(self, store: Store, clock: Clock, records: RecordCache,
                 attempts: dict[str, str]) -> None:
        self._store = store
        self._clock = clock
        self._records = records
        self._attempts = attempts
        self.buffer = ReportBuffer(clock)
        self._pending_logged: set[str] = set()  # tokens of outcomes not yet recorded
        self.made_due = False  # see done

    def take(self, force: bool = False) -> Reports | None:
        """The reports to write now, if they are ripe (or ``force``), out of the buffer:
        the caller writes them (``record``) and then calls ``done`` or ``failed``."""
        if self.buffer.deadline() is None:  # nothing waits
            return None
        if not (force or self.buffer.ripe(len(self._attempts))):
            return None
        return self.buffer.take(everything=force)

    def write(self, force: bool = False) -> list[str]:
        """Write the reports if they are ripe (or ``force``) in a transaction of their own;
        the tokens of the outcomes recorded. Raises StoreError with every report kept for
        the next try."""
        reports = self.take(force)
        return [] if reports is None else self.write_taken(reports)

    def write_taken(self, reports: Reports) -> list[str]:
        """Write reports ``take`` gave, in a transaction of their own (see ``write``)."""
        try:
            with self._store.transaction() as txn:
                written, ended = self.record(txn, reports, self._clock.now())
        except BaseException as exc:
            self.failed(reports, exc)
            raise
        self._records.committed(txn, written, ended)
        return self.done(reports, txn)

    def failed(self, reports: Reports, exc: BaseException) -> None:
        """The transaction that was to write ``reports`` did not commit."""
        self._records.failed()
        if not isinstance(exc, StoreError):
            return
        # Nothing was written (a full disk): keep every report for the next try. Dropped,
        # an outcome was lost for good and its work stayed RUNNING until a restart.
        self.buffer.put_back(reports)
        if reports.outcomes.keys() - self._pending_logged:  # say so once per attempt
            log.warning("%d finished attempt(s) wait until the store can be written",
                        len(reports.outcomes))
            self._pending_logged.update(reports.outcomes)

    def done(self, reports: Reports, txn: Any) -> list[str]:
        """``reports`` were committed in ``txn``: the tokens of the outcomes recorded."""
        # Works that commit made ENQUEUED (unblocked dependents, retries, next periods)
        # may be due at once: the scheduler then looks for due work again in this turn.
        self.made_due = any(now is WorkState.ENQUEUED for _, now, _, _ in txn.index_moves)
        for token in reports.outcomes:  # only once recorded (see above)
            self._pending_logged.discard(token)
            self._attempts.pop(token, None)
        return list(reports.outcomes)

    def record(self, txn: Any, reports: Reports, now: float
               ) -> tuple[list[WorkSpec], list[str]]:
        """Write ``reports`` in ``txn`` (the scheduler's turn may claim due works in the same
        transaction: one commit per turn); the records of running attempts written, and the
        works whose attempt ended, for ``RecordCache.committed``."""
        updated: list[WorkSpec] = []
        ended: list[str] = []
        for token in set(reports.progress) | set(reports.started):
            spec = self._current(txn, token)
            if spec is None:
                continue
            if token in reports.started and spec.attempt is not None:
                spec.attempt.pid, spec.attempt.pid_create_time = reports.started[token]
            if token in reports.progress:
                spec.progress = reports.progress[token]
            txn.put(spec)
            updated.append(spec)
        for token, outcome in reports.outcomes.items():
            work_id = self._attempts.get(token)
            if work_id is not None:
                ended.append(work_id)
            spec = self._current(txn, token, work_id)
            if spec is None:
                # Cancelled (or updated) while running: the late result is ignored.
                if work_id is not None:
                    _clear_attempt(txn, work_id, token)
                continue
            _rules.finish_attempt(txn, spec, outcome, now)
        finished = set(ended)
        return [s for s in updated if s.id not in finished], ended

    def _current(self, txn: Any, token: str, work_id: str | None = None) -> WorkSpec | None:
        """The work an attempt belongs to, if that attempt is still its current one."""
        work_id = work_id or self._attempts.get(token)
        if work_id is None:
            return None
        spec = self._records.current(txn, work_id)
        if spec is None or spec.state is not WorkState.RUNNING:
            return None
        if spec.attempt is None or spec.attempt.token != token:
            return None
        return spec


def _clear_attempt(txn: Any, work_id: str, token: str) -> None:
    spec = txn.get(work_id)
    if spec is not None and spec.attempt is not None and spec.attempt.token == token:
        spec.attempt = None
        spec.progress = {}
        txn.put(spec)
