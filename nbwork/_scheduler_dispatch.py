"""The dispatcher: hands due ENQUEUED work to the executor while it has room, earliest
first."""

from __future__ import annotations

import heapq
import logging
import uuid
from typing import Any

from . import _rules
from ._executors.base import AttemptSpec, Executor
from ._rules import Outcome
from ._scheduler_gate import Admission, ConstraintGate, gating
from ._scheduler_records import RecordCache
from ._scheduler_reports import ReportBuffer
from ._spec import WorkSpec
from ._store import Store
from ._time import Clock
from .info import WorkState

log = logging.getLogger("nbwork.scheduler")

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
        self._first_due_memo: tuple[dict[str, float], frozenset[str], float | None] | None = None
        set_code_source = getattr(executor, "set_code_source", None)
        # An executor with a code source reads each blob itself, once per worker process
        # that lacks it; the others get one copy shared by a batch (see _start_in).
        self._code_source_set = set_code_source is not None
        if set_code_source is not None:
            set_code_source(store.open_code)

    def room(self) -> int:
        """How many attempts the executor takes now (``room()`` if it batches short work)."""
        room = getattr(self._executor, "room", None)
        if room is not None:
            return room()
        return self._executor.capacity - len(self._executor.running())

    def start_due_work(self) -> None:
        free = self.room()
        if free <= 0:
            return
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
        if due:
            self._submit(*self._start(due, now, admission))

    def _earliest_due(self, enqueued: dict[str, float], now: float, want: int) -> list[str]:
        """Up to ``want`` due works, the earliest first."""
        unreadable = self._store.unreadable
        firsts = heapq.nsmallest(want, ((t, wid) for wid, t in enqueued.items()
                                        if t <= now and wid not in unreadable))
        return [wid for _, wid in firsts]

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

    def _start(self, due: list[str], now: float, admission: Admission
               ) -> tuple[list[AttemptSpec], dict[str, dict[str, Any]]]:
        """Mark the due works RUNNING in one transaction: their attempts in start order, and
        the constraints each runs under (by token)."""
        known = self._records.constraints
        attempts: list[AttemptSpec] = []
        gates: dict[str, dict[str, Any]] = {}
        started: list[WorkSpec] = []
        payloads: dict[str, bytes | None] = {}
        # (The records read here are fresh, none of the record cache's: a failed
        # transaction leaves those as they were.)
        with self._store.transaction() as txn:
            for work_id in due:
                spec = txn.get(work_id)
                if spec is None:
                    continue
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
        self._records.committed(txn, started)
        return attempts, gates

    def _start_one(self, txn: Any, spec: WorkSpec, now: float,
                   payloads: dict[str, bytes | None]) -> AttemptSpec | None:
        token = uuid.uuid4().hex
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
                    "crash", error=f"the worker process could not be started: {exc}"))


def _failure(error: str) -> Outcome:
    return Outcome("failure", error=error)
