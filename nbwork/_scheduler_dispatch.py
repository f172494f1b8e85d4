"""The dispatcher: hands due ENQUEUED work to the executor while it has room.

Due works start earliest first; works due at the same moment start in enqueue order (a
list passed to ``enqueue`` starts in list order), as WorkManager's queries list them.
The state index holds only id -> due time, so the enqueue order of works due at the same
moment is read from their records once per work and kept (it never changes).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
from collections import deque
from collections.abc import Iterator
from operator import countOf, itemgetter
from typing import Any

from . import _rules
from ._executors.base import AttemptSpec, Executor
from ._rules import Outcome, OutcomeKind
from ._scheduler_gate import Admission, ConstraintGate, gating
from ._scheduler_records import RecordCache
from ._scheduler_reports import ReportBuffer, Reports, ReportWriter
from ._spec import WorkSpec
from ._store import Store
from ._time import Clock
from .info import WorkState

log = logging.getLogger("nbwork.scheduler")

OrderKey = tuple[float, int]
_UNKNOWN_ORDER: OrderKey = (math.inf, 0)  # a record gone meanwhile: it will not start anyway
_due_time = itemgetter(1)
HOLD_READ = 4096
"""Records of tied due works kept from the read that ranks them, for the transactions that
start them (the rest are read again when their turn comes). A batch of 2,000 works enqueued
at once is all tied: with 1,024 held, its other half was read again, one record at a time
inside the write transactions that start them (half a read per work)."""


def attempt_tokens() -> Iterator[str]:
    """Fencing tokens for attempts, 32 hex digits: a random half drawn once per scheduler
    (64 bits: no two schedulers share it), then a count; without the system call and the
    UUID object a random UUID per attempt cost."""
    prefix = os.urandom(8).hex()
    return (f"{prefix}{n:016x}" for n in itertools.count())


def order_key(spec: WorkSpec) -> OrderKey:
    """Where a work stands among those due at the same moment (fixed at its enqueue)."""
    return (spec.enqueue_time, spec.enqueue_order)

class Dispatcher:
    def __init__(self, store: Store, executor: Executor, clock: Clock, records: RecordCache,
                 gate: ConstraintGate, attempts: dict[str, str], reports: ReportBuffer) -> None:
        self._store = store
        self._executor = executor
        self._clock = clock
        self._records = records
        self._gate = gate
        self._attempts = attempts
        self._reports = reports
        self._order: dict[str, OrderKey] = {}
        self._tokens = attempt_tokens()
        # The works due at one moment, in enqueue order, while more of them are due than
        # there is room for (a list of a thousand works enqueued at once): ranked once,
        # then taken from the front.
        self._ranked_time: float | None = None
        self._ranked: deque[str] = deque()
        self._first_due_memo: tuple[dict[str, float], frozenset[str], float | None] | None = None
        set_code_source = getattr(executor, "set_code_source", None)
        # An executor with a code source reads each blob itself, once per worker process
        # that lacks it; the others get one copy shared by a batch (see _start_one).
        self._code_source_set = set_code_source is not None
        if set_code_source is not None:
            set_code_source(store.open_code)

    def room(self) -> int:
        """How many attempts the executor takes now (``room()`` if it batches short work)."""
        room = getattr(self._executor, "room", None)
        if room is not None:
            return room()
        return self._executor.capacity - len(self._executor.running())

    def start_due_work(self, reports: Reports | None = None,
                       writer: ReportWriter | None = None) -> list[str] | None:
        """Start due works while the executor has room. ``reports`` (taken from ``writer``)
        are written in the same transaction, if any work is due: one commit per turn, and
        the RUNNING index shards written once, not twice. Returns the tokens of the outcomes
        recorded then; None when nothing was due (the caller writes the reports)."""
        free = self.room()
        if free <= 0:
            return None
        now = self._clock.now()
        enqueued = self._store.state_index(WorkState.ENQUEUED)
        # Enough of the earliest to fill the free slots even if every work already known to
        # wait for its constraints comes first.
        candidates = self._earliest_due(enqueued, now, free + len(self._gate.waiting))
        self._records.look(self._store.change_counter())
        known = self._records.constraints
        admission = Admission(self._gate)
        due: list[str] = []
        for work_id in candidates:
            if len(due) >= free:
                break
            constraints = known.get(work_id)
            # Works not read before are looked at in the transaction (one read each).
            if constraints is None or not admission.blocks(work_id, constraints):
                due.append(work_id)
        self._gate.waiting = admission.waiting  # the same set: the transaction adds to it
        if not due:
            return None
        self._read_ahead(due)
        attempts, gates, recorded = self._start(due, now, admission, reports, writer)
        self._submit(attempts, gates)
        return recorded

    def _read_ahead(self, due: list[str]) -> None:
        """Read the records of due works not held in one statement, before the transaction
        that starts them: it adopts them if nobody wrote meanwhile (one diskcache read per
        work inside the write transaction, which blocks clients, before)."""
        missing = [wid for wid in due if not self._records.holds(wid)]
        if missing:
            counter = self._store.change_counter()
            self._records.read(counter, self._store.get_many(missing))

    def _earliest_due(self, enqueued: dict[str, float], now: float, want: int) -> list[str]:
        """Up to ``want`` due works, the earliest first, ties in enqueue order."""
        unreadable = self._store.unreadable
        firsts = [(wid, t) for wid, t in heapq.nsmallest(want + 1 + len(unreadable),
                                                          enqueued.items(), key=_due_time)
                  if t <= now and wid not in unreadable]
        if len(firsts) > want and firsts[want - 1][1] == firsts[want][1]:
            # More are due at the last moment taken than there is room for.
            last = firsts[want - 1][1]
            before = [(wid, t) for wid, t in firsts if t < last]
            tied = self._ranked_at(last, enqueued, unreadable, want - len(before))
        else:
            before, tied = firsts[:want], []
        if len({t for _, t in before}) < len(before):  # ties among those taken
            self._hold(self._learn_order([wid for wid, _ in before]))
            order = self._order
            before.sort(key=lambda p: (p[1], order.get(p[0], _UNKNOWN_ORDER)))
        return [wid for wid, _ in before] + tied

    def _ranked_at(self, time: float, enqueued: dict[str, float], unreadable: Any,
                   count: int) -> list[str]:
        """The first ``count`` works due at ``time``, in enqueue order."""
        ranked = self._ranked
        while ranked and enqueued.get(ranked[0]) != time:  # started (or cancelled) since
            ranked.popleft()
        present = countOf(enqueued.values(), time) - sum(
            1 for wid in unreadable if enqueued.get(wid) == time)
        if self._ranked_time != time or len(ranked) != present:  # others came or went
            group = [wid for wid, t in enqueued.items() if t == time and wid not in unreadable]
            read = self._learn_order(group)
            order = self._order
            group.sort(key=lambda wid: order.get(wid, _UNKNOWN_ORDER))
            self._hold(read, group[:HOLD_READ])
            ranked = deque(group)
            self._ranked_time, self._ranked = time, ranked
        taken: list[str] = []
        for wid in ranked:
            if len(taken) >= count:
                break
            if enqueued.get(wid) == time and wid not in unreadable:
                taken.append(wid)
        return taken

    def _learn_order(self, work_ids: list[str]) -> tuple[int, dict[str, WorkSpec]]:
        """Read the enqueue order of the works not read before (once per work); the change
        counter read before, and the records read."""
        missing = [wid for wid in work_ids if wid not in self._order]
        if not missing:
            return -1, {}
        if len(self._order) > 4096 + 2 * len(missing):  # works cancelled meanwhile
            enqueued = self._store.state_index(WorkState.ENQUEUED)
            self._order = {wid: k for wid, k in self._order.items() if wid in enqueued}
        counter = self._store.change_counter()
        read = {spec.id: spec for spec in self._store.get_many(missing)}
        for spec in read.values():
            self._order[spec.id] = order_key(spec)
        return counter, read

    def _hold(self, learnt: tuple[int, dict[str, WorkSpec]], ids: list[str] | None = None
              ) -> None:
        """Give the record cache what ``_learn_order`` read (of ``ids`` only, if given): the
        transaction that starts those works need not read them again."""
        counter, read = learnt
        if read:
            self._records.read(counter, [read[w] for w in (read if ids is None else ids)
                                         if w in read])

    def first_due(self, enqueued: dict[str, float]) -> float | None:
        """The earliest run time of the enqueued works not waiting for constraints; kept
        while the index and that set stay the same (the loop may turn thousands of times
        a second in a flood of short works, and the index may hold thousands)."""
        # (Unreadable works never run: counting them would make the loop spin.)
        waiting = frozenset(self._gate.waiting) | frozenset(self._store.unreadable)
        memo = self._first_due_memo
        # The index itself is kept in the memo: an index is a new object after any change,
        # and holding it keeps its id from being reused by another.
        if memo is not None and memo[0] is enqueued and memo[1] == waiting:
            return memo[2]
        first = min((t for wid, t in enqueued.items() if wid not in waiting), default=None)
        self._first_due_memo = (enqueued, waiting, first)
        return first

    def _start(self, due: list[str], now: float, admission: Admission,
               reports: Reports | None = None, writer: ReportWriter | None = None
               ) -> tuple[list[AttemptSpec], dict[str, dict[str, Any]], list[str] | None]:
        """Mark the due works RUNNING in one transaction (after writing ``reports``, if
        given): their attempts in start order, the constraints each runs under (by token),
        and the tokens of the outcomes recorded (None without reports)."""
        known = self._records.constraints
        attempts: list[AttemptSpec] = []
        gates: dict[str, dict[str, Any]] = {}
        started: list[WorkSpec] = []
        payloads: dict[str, bytes | None] = {}
        written: list[WorkSpec] = []
        ended: list[str] = []
        try:
            with self._store.transaction() as txn:
                if reports is not None and writer is not None:
                    written, ended = writer.record(txn, reports, now)
                for work_id in due:
                    spec = self._records.current(txn, work_id)
                    if spec is None:
                        continue
                    self._order[work_id] = order_key(spec)  # (an id enqueued again after a prune)
                    if work_id not in known:
                        known[work_id] = gating(spec)
                        if admission.blocks(work_id, known[work_id]):
                            continue
                    if not _rules.is_due(spec, now):
                        continue
                    attempt = self._start_one(txn, spec, now, payloads)
                    if attempt is not None:
                        started.append(spec)
                        attempts.append(attempt)
                        gates[attempt.token] = gating(spec)
        except BaseException as exc:
            self._records.failed()  # held records it changed are not the store's
            if reports is not None and writer is not None:
                writer.failed(reports, exc)
            raise
        self._records.committed(txn, [*written, *started], ended)
        for spec in started:
            self._order.pop(spec.id, None)
        recorded = writer.done(reports, txn) if reports is not None and writer is not None else None
        return attempts, gates, recorded

    def _start_one(self, txn: Any, spec: WorkSpec, now: float,
                   payloads: dict[str, bytes | None]) -> AttemptSpec | None:
        token = next(self._tokens)
        try:
            input_data = _rules.merged_input(spec, txn).to_dict()
        except Exception as exc:  # a merge error fails this work only
            _rules.start_attempt(spec, token, now)
            _rules.finish_attempt(txn, spec, _failure(
                f"cannot build the input of this work: {exc}"), now)
            return None
        # Never a copy of the code per attempt: a worker that captured a 100 MiB global,
        # queued 300 times, took the scheduler to gigabytes and the OOM killer.
        if self._code_source_set:
            payload = None
            present = txn.has_code(spec.code_key)
        else:
            if spec.code_key not in payloads:
                payloads[spec.code_key] = txn.get_value(f"code:{spec.code_key}")
            payload = payloads[spec.code_key]
            present = payload is not None
        seen_count = _rules.start_attempt(spec, token, now)
        if not present:
            _rules.finish_attempt(txn, spec, _failure(
                "the worker code of this work is missing from the store; enqueue it again"),
                now)
            return None
        txn.put(spec)
        return AttemptSpec(
            work_id=spec.id, token=token, worker_name=spec.worker_name,
            code_key=spec.code_key, payload=payload, input_data=input_data,
            tags=spec.tags, run_attempt_count=seen_count, generation=spec.generation,
            log_path=self._store.log_path(spec.id),
            extra=({"triggered_content_paths": spec.content["paths"]}
                   if spec.content.get("paths") else {}),
        )

    def _submit(self, attempts: list[AttemptSpec], gates: dict[str, dict[str, Any]]) -> None:
        for attempt in attempts:
            self._attempts[attempt.token] = attempt.work_id
            self._gate.started(attempt.token, gates[attempt.token])
            try:
                self._executor.submit(attempt)
            except Exception as exc:
                log.exception("could not start attempt of %s", attempt.work_id)
                self._reports.finished(attempt.token, Outcome(
                    OutcomeKind.CRASH, error=f"the worker process could not be started: {exc}"))


def _failure(error: str) -> Outcome:
    return Outcome(OutcomeKind.FAILURE, error=error)
