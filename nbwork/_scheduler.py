"""The scheduler: the one process per store that runs work.

Its loop: take what the executor reports (progress, outcomes) and record it; notice work
cancelled by clients and stop it; start due ENQUEUED work while the executor has room;
sleep until the next due time, a wake-up from a client (the FIFO) or an executor event.
It never busy-polls: with nothing due and nothing running it sleeps until woken.

On start it takes the store's lock (exactly one scheduler per store) and recovers work left
RUNNING by a dead predecessor: their orphaned processes are killed and the works go back
to ENQUEUED. It exits after ``idle_exit`` seconds with no unfinished work; the exit
protocol (release the lock, then look once more) guarantees that work committed by a
client that saw the lock held is never stranded.
"""

from __future__ import annotations

import heapq
import logging
import multiprocessing.util
import os
import signal
import time
import uuid
from multiprocessing.connection import wait as wait_for
from typing import Any

import psutil

from . import _ops, _rules
from ._conditions import (
    HOST_READ_INTERVAL,
    DeviceState,
    HostConditions,
    requires_anything,
    stops_running_work,
    unmet,
)
from ._executors import leftovers
from ._executors.base import AttemptSpec, Executor
from ._executors.local import DEFAULT_STOP_GRACE, LocalExecutor
from ._liveness import BeatWriter, read_beat, remove_dead_tmpdir
from ._lock import SchedulerLock
from ._rules import Outcome
from ._spec import WorkSpec
from ._store import Store
from ._time import Clock
from ._wake import WakeReceiver
from ._watch import ContentMonitor
from .errors import StoreError
from .info import WorkState

log = logging.getLogger("nbwork.scheduler")

DEFAULT_IDLE_EXIT = 600.0
"""Seconds without unfinished work after which the scheduler exits (a client restarts it)."""
HEARTBEAT_INTERVAL = 1.0
STORE_RETRY_INTERVAL = 1.0
"""Seconds between tries while the store cannot be written (a full disk)."""
PRUNE_INTERVAL = 600.0
RECORD_DELAY = 0.005
RECORD_BATCH = 64
"""While other attempts are still in flight, reports (started, progress, outcomes) wait up to
RECORD_DELAY seconds, or until RECORD_BATCH outcomes are in, to be written in one
transaction: a flood of short works would otherwise cost a transaction per work. A report
with nothing else in flight is written at once (no delay in a work's latency)."""


class Scheduler:
    def __init__(
        self,
        store: Store,
        executor: Executor | None = None,
        clock: Clock | None = None,
        idle_exit: float = DEFAULT_IDLE_EXIT,
        lock: SchedulerLock | None = None,
        beat: BeatWriter | None = None,
    ) -> None:
        self.store = store
        self.clock = clock or Clock()
        self.executor = executor or LocalExecutor()
        self.idle_exit = idle_exit
        self.lock = lock or SchedulerLock(store.dir.access)  # _scheduler_main takes it first
        self.beat = beat or BeatWriter(store.dir.access)
        self.token = uuid.uuid4().hex
        self._attempts: dict[str, str] = {}  # token -> work id
        self._progress: dict[str, dict] = {}
        self._outcomes: dict[str, Outcome] = {}
        self._started: dict[str, tuple[int | None, float | None]] = {}
        self._reports_since: float | None = None  # monotonic time of the oldest unwritten
        self._stopping = False
        self._faulted = False
        self._mark_before: str | None = None
        self._pending_logged: set[str] = set()  # tokens of outcomes not yet recorded
        self._last_counter = -1
        self._last_heartbeat = 0.0
        self._last_prune = -PRUNE_INTERVAL  # monotonic time may start near 0 after a boot
        self._idle_since: float | None = None
        self._wake: WakeReceiver | None = None
        self._host = HostConditions(store.path)
        self._constraints_cache: dict[str, dict[str, Any]] = {}
        self._constraints_counter = -1
        self._waiting_for_constraints: set[str] = set()
        # The records of our running attempts as we last wrote them, and the change counter
        # after that write: while nobody else has written, they are the store's records,
        # and the next transaction need not read them back (see _own_records).
        self._own: dict[str, WorkSpec] = {}
        self._own_counter = -1
        self._own_checked_in: Any = None
        self._first_due_cache: tuple[dict[str, float], frozenset[str], float | None] | None = None
        self._running_constraints: dict[str, dict[str, Any]] = {}  # token -> constraints
        set_code_source = getattr(self.executor, "set_code_source", None)
        self._code_source_set = set_code_source is not None
        if set_code_source is not None:
            set_code_source(self.store.open_code)
        # Content triggers and hot folders; a file event pokes our own wake-up FIFO.
        self._content = ContentMonitor(store, self.clock,
                                       lambda: self._wake.poke() if self._wake else None)

    # --- sink for the executor --------------------------------------------------------

    def started(self, token: str, pid: int | None, pid_create_time: float | None) -> None:
        self._started[token] = (pid, pid_create_time)
        self._note_report()

    def progress(self, token: str, progress: dict[str, Any]) -> None:
        self._progress[token] = progress
        self._note_report()

    def finished(self, token: str, outcome: Outcome) -> None:
        self._outcomes[token] = outcome
        self._note_report()

    def _note_report(self) -> None:
        if self._reports_since is None:
            self._reports_since = time.monotonic()

    def _reports_ripe(self) -> bool:
        """Write the reports now, or let a few more join them (see RECORD_DELAY)?"""
        if self._reports_since is None:
            return False
        return (len(self._outcomes) >= min(RECORD_BATCH, len(self._attempts))
                or time.monotonic() - self._reports_since >= RECORD_DELAY)

    # --- life cycle --------------------------------------------------------------------

    def run(self) -> int:
        """Run until idle or told to stop; 0 on a normal exit, 1 if another scheduler runs."""
        if self.lock.fd is None and not self.lock.acquire():
            log.info("another scheduler holds the lock of %s; exiting", self.store.path)
            return 1
        self._take_over_from_predecessor()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self._end_leftovers()
        self._wake = WakeReceiver(self.store.dir.access)
        try:
            recovered = False
            while True:
                try:
                    if not recovered:
                        self._heartbeat(force=True)
                        self.recover()
                        recovered = True
                    self.step()
                except StoreError as exc:
                    # A full disk (or a store locked for a minute) must not end the
                    # scheduler: nothing it could not write is lost (see _record_reports);
                    # it waits a little and tries again, and carries on when space returns.
                    self._store_fault(exc)
                    if self._stopping:
                        break
                    continue
                if self._faulted:
                    self._faulted = False
                    self.beat.state = "running"
                if self._stopping:
                    break
                if self._idle_long_enough() and self._leave_if_still_idle():
                    break
                self._sleep()
        finally:
            self._shutdown()
        return 0

    def _take_over_from_predecessor(self) -> None:
        """With the lock held (any predecessor is dead): remove the temp folder a killed one
        left behind, and say which is ours, for our successor."""
        own = multiprocessing.util.get_temp_dir()  # the forkserver's socket goes there
        removed = remove_dead_tmpdir(read_beat(self.store.path), own)
        if removed:
            log.info("removed %s, left behind by a scheduler that was killed", removed)
        self.beat.tmpdir = own
        self.beat.state = "running"
        self.beat.beat()

    def _end_leftovers(self) -> None:
        """Kill what the store's dead schedulers' attempts left running (a helper that left
        its worker's process group, a worker process whose scheduler died before it could
        act) before their work runs again; then mark every process this one starts, so its
        successor can do the same (see _executors/leftovers.py)."""
        try:
            killed = leftovers.end_leftovers(self.store.path)
        except Exception:  # best effort: never a reason not to run the store's work
            log.exception("could not look for processes left by a previous scheduler")
            killed = 0
        if killed:
            log.info("killed %d processes left running by a previous scheduler", killed)
        self._mark_before = os.environ.get(leftovers.MARK)
        leftovers.mark_children(self.store.path)

    def _store_fault(self, exc: StoreError) -> None:
        """Log a store fault (once per spell) and wait before the next try (or a wake-up)."""
        if not self._faulted:
            log.warning("the store cannot be written; trying again every second: %s", exc)
            self._faulted = True
            self.beat.state = f"waiting for the store: {exc}"
            self.beat.beat()
        if self._wake is not None and wait_for([self._wake], STORE_RETRY_INTERVAL):
            self._wake.drain()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stopping = True
        # The loop may be asleep in wait() for up to a heartbeat, and PEP 475 resumes that
        # wait after this handler: a byte in our own FIFO ends it now, so a stop is prompt.
        if self._wake is not None:
            self._wake.poke()

    def _shutdown(self) -> None:
        self._content.close()
        self.executor.shutdown(grace=getattr(self.executor, "stop_grace", DEFAULT_STOP_GRACE),
                               sink=self)
        if self.lock.fd is not None:
            # Reports held back for a batch (RECORD_DELAY) and what returned during the
            # grace period: a success is not run again.
            try:
                self._record_reports(force=True)
            except StoreError:
                pass
        # Attempts cut short by a stop go back to the queue, as after a crash. They are no
        # longer ours: forget them, or recover() would take them for live attempts and leave
        # them RUNNING with no scheduler.
        self._outcomes.clear()
        self._attempts.clear()
        # After an idle exit the lock is already released, and another scheduler may hold it
        # and run work by now: the RUNNING records are its own, not ours to recover.
        if self.lock.fd is not None:
            try:
                self.recover(whose="this scheduler, which is stopping")
            except StoreError as exc:  # a full disk: the next scheduler recovers them
                log.warning("could not put running work back in the queue: %s", exc)
        try:
            with self.store.transaction() as txn:
                lease = txn.get_value("lease")
                if lease and lease.get("token") == self.token:
                    txn.delete_value("lease")
        finally:
            wake, self._wake = self._wake, None  # the signal handler must not poke a closed fd
            if wake is not None:
                wake.close()
            self.beat.close()
            self.lock.release()
            if self._mark_before is None:  # a scheduler run inside another process (tests)
                os.environ.pop(leftovers.MARK, None)
            else:
                os.environ[leftovers.MARK] = self._mark_before

    def _heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_heartbeat < HEARTBEAT_INTERVAL:
            return
        self._last_heartbeat = now
        # The file first: it is what the supervisor's liveness check reads, and it is
        # written in place, even on a full disk.
        self.beat.beat()
        lease = {
            "pid": os.getpid(), "token": self.token, "heartbeat": self.clock.now(),
            "executor": type(self.executor).__name__, "capacity": self.executor.capacity,
            # what this process's connection really commits with, for status and tests
            "synchronous": self.store.synchronous(),
        }
        try:
            self.store.set_value("lease", lease)
        except StoreError:
            # The lease is for status only (the lock is what counts). Raising here, first
            # thing in each step, kept a full disk from ever reaching the executor's reports.
            pass

    def recover(self, whose: str = "a previous scheduler") -> None:
        """Work left RUNNING without a live attempt of ours goes back to ENQUEUED."""
        running = self.store.state_index(WorkState.RUNNING)
        mine = set(self._attempts.values()) if self._attempts else set()
        stale = [wid for wid in running if wid not in mine]
        if not stale:
            return
        now = self.clock.now()
        with self.store.transaction() as txn:
            for spec in txn.get_many(stale):
                if spec.state is not WorkState.RUNNING:
                    continue
                _kill_orphan(spec)
                log.info("recovering %s left RUNNING by %s", spec.id, whose)
                _rules.recover(spec, now)
                txn.put(spec)

    # --- one step ----------------------------------------------------------------------

    def step(self) -> None:
        self._heartbeat()
        self.executor.poll(self)
        self._record_reports()
        counter = self.store.change_counter()
        if counter != self._last_counter:
            self._last_counter = counter
            self._stop_cancelled()
        self._stop_where_constraints_fail()
        self._content.step()
        self._start_due_work()
        if time.monotonic() - self._last_prune >= PRUNE_INTERVAL:
            self._last_prune = time.monotonic()
            self._prune_expired()

    def _record_reports(self, force: bool = False) -> None:
        if not (self._progress or self._outcomes or self._started):
            self._reports_since = None
            return
        if not (force or self._reports_ripe()):
            return
        now = self.clock.now()
        progress, outcomes, started = self._progress, self._outcomes, self._started
        self._progress, self._outcomes, self._started = {}, {}, {}
        reports_since, self._reports_since = self._reports_since, None
        updated: list[WorkSpec] = []
        ended: list[str] = []
        try:
            with self.store.transaction() as txn:
                for token in set(progress) | set(started):
                    spec = self._current(txn, token)
                    if spec is None:
                        continue
                    if token in started and spec.attempt is not None:
                        spec.attempt.pid, spec.attempt.pid_create_time = started[token]
                    if token in progress:
                        spec.progress = progress[token]
                    txn.put(spec)
                    updated.append(spec)
                for token, outcome in outcomes.items():
                    work_id = self._attempts.get(token)
                    if work_id is not None:
                        ended.append(work_id)
                    spec = self._current(txn, token, work_id)
                    if spec is None:
                        # Cancelled (or updated) while running: the late result is ignored.
                        if work_id is not None:
                            self._clear_attempt(txn, work_id, token)
                        continue
                    _rules.finish_attempt(txn, spec, outcome, now)
            self._note_own_commit(txn)
            finished = set(ended)
            self._remember_own(txn, [s for s in updated if s.id not in finished], ended)
        except BaseException as exc:
            self._own = {}  # records may have been changed in a transaction that did not commit
            if not isinstance(exc, StoreError):
                raise
            # Nothing was written (a full disk): keep every report for the next try. Dropped,
            # an outcome was lost for good and its work stayed RUNNING until a restart.
            self._progress = {**progress, **self._progress}
            self._started = {**started, **self._started}
            self._outcomes = {**outcomes, **self._outcomes}
            self._reports_since = reports_since
            if outcomes.keys() - self._pending_logged:  # say so once per attempt
                log.warning("%d finished attempt(s) wait until the store can be written",
                            len(outcomes))
                self._pending_logged.update(outcomes)
            raise
        first = not self.beat.recorded
        self.beat.recorded += len(outcomes)
        if outcomes and first:
            # The first result this scheduler recorded: its supervisor counts a death after
            # it as one of a productive scheduler (not a crash loop), so say so now.
            self.beat.beat()
        for token in outcomes:  # only once recorded (see above)
            self._pending_logged.discard(token)
            self._attempts.pop(token, None)
            self._running_constraints.pop(token, None)
        # _last_counter is advanced only by _note_own_commit, which checks that no client
        # committed in between: a cancel committed just before our commit is still seen.

    def _own_records(self, txn: Any) -> dict[str, WorkSpec]:
        """The records we wrote last that are still current in ``txn`` (none if anybody
        else committed since: then every record is read from the store)."""
        if self._own_checked_in is not txn:  # once per transaction
            self._own_checked_in = txn
            if self._own and txn.change_counter() != self._own_counter:
                self._own = {}
        return self._own

    def _remember_own(self, txn: Any, running: list[WorkSpec], ended: list[str]) -> None:
        """After a commit: ``running`` are records as written, ``ended`` no longer ours."""
        if txn.counter_after is None:
            return
        if txn.counter_before != self._own_counter:
            self._own = {}
        for spec in running:
            self._own[spec.id] = spec
        for work_id in ended:
            self._own.pop(work_id, None)
        self._own_counter = txn.counter_after

    def _current(self, txn: Any, token: str, work_id: str | None = None) -> WorkSpec | None:
        """The work an attempt belongs to, if that attempt is still its current one."""
        work_id = work_id or self._attempts.get(token)
        if work_id is None:
            return None
        own = self._own_records(txn).get(work_id)
        spec = txn.adopt(own) if own is not None else txn.get(work_id)
        if spec is None or spec.state is not WorkState.RUNNING:
            return None
        if spec.attempt is None or spec.attempt.token != token:
            return None
        return spec

    @staticmethod
    def _clear_attempt(txn: Any, work_id: str, token: str) -> None:
        spec = txn.get(work_id)
        if spec is not None and spec.attempt is not None and spec.attempt.token == token:
            spec.attempt = None
            spec.progress = {}
            txn.put(spec)

    def _stop_cancelled(self) -> None:
        if not self._attempts:
            return
        for token, work_id in list(self._attempts.items()):
            spec = self.store.get(work_id)
            if spec is None or spec.state is not WorkState.RUNNING or (
                spec.attempt is not None and spec.attempt.token != token
            ):
                reason = (spec.stop_reason if spec else None) or "CANCELLED_BY_APP"
                self.executor.stop(token, reason)
            elif token in self._running_constraints:
                # The TestDriver (or an update) may have lifted the constraints meanwhile.
                gate = _gating(spec)
                if gate:
                    self._running_constraints[token] = gate
                else:
                    del self._running_constraints[token]

    # --- constraints ---------------------------------------------------------------------

    def _device_state(self) -> DeviceState:
        simulated = self.store.device_state()
        return DeviceState.from_dict(simulated) if simulated else self._host.read()

    def _known_constraints(self) -> dict[str, dict[str, Any]]:
        """work id -> the constraints that gate it ({} when none or overridden), for works
        read before; kept until someone else changes the store: with many works waiting for
        the charger, each wake-up must not reload every one of them."""
        counter = self.store.change_counter()
        if counter != self._constraints_counter:
            self._constraints_cache.clear()
            self._constraints_counter = counter
        return self._constraints_cache

    def _note_own_commit(self, txn: Any) -> None:
        """Take a commit of our own as seen, where nobody else wrote in between.

        Our commits change states, never constraints, and never cancel anything: the
        constraints cache stays valid, and running attempts need no new check for a stop.
        (The counter read inside the transaction makes "nobody else" exact: a client's
        commit just before ours shows as a gap and is looked at.)"""
        if txn.counter_after is None:
            return
        if txn.counter_before == self._constraints_counter:
            self._constraints_counter = txn.counter_after
        if txn.counter_before == self._last_counter:
            self._last_counter = txn.counter_after

    def _stop_where_constraints_fail(self) -> None:
        """Stop running attempts whose constraints stopped holding (not a failure: the work
        goes back to ENQUEUED with the reason in ``stop_reason``)."""
        if not self._running_constraints:
            return
        device = self._device_state()
        for token, constraints in list(self._running_constraints.items()):
            reasons = [r for r in unmet(constraints, device) if stops_running_work(r)]
            if reasons:
                log.info("stopping %s: %s", self._attempts.get(token), reasons[0].value)
                self.executor.stop(token, reasons[0].value)

    # --- starting work -------------------------------------------------------------------

    def _room(self) -> int:
        """How many attempts the executor takes now (``room()`` if it batches short work)."""
        room = getattr(self.executor, "room", None)
        if room is not None:
            return room()
        return self.executor.capacity - len(self.executor.running())

    def _start_due_work(self) -> None:
        free = self._room()
        if free <= 0:
            return
        now = self.clock.now()
        enqueued = self.store.state_index(WorkState.ENQUEUED)
        # The earliest due first; enough of them to fill the free slots even if every work
        # already known to wait for its constraints comes first.
        candidates = heapq.nsmallest(
            free + len(self._waiting_for_constraints),
            ((t, wid) for wid, t in enqueued.items()
             if t <= now and wid not in self.store.unreadable))
        known = self._known_constraints()
        due: list[str] = []
        waiting: set[str] = set()
        device: list[DeviceState] = []  # read once, when first needed

        def blocked_by_constraints(work_id: str, constraints: dict[str, Any]) -> bool:
            if not constraints:
                return False
            if not device:
                device.append(self._device_state())
            if unmet(constraints, device[0]):
                waiting.add(work_id)
                return True
            return False

        for _, work_id in candidates:
            if len(due) >= free:
                break
            constraints = known.get(work_id)
            # Works not read before are looked at in the transaction below (one read each).
            if constraints is None or not blocked_by_constraints(work_id, constraints):
                due.append(work_id)
        self._waiting_for_constraints = waiting
        if not due:
            return
        attempts: list[AttemptSpec] = []
        gates: dict[str, dict[str, Any]] = {}
        # (The records read here are fresh, none of self._own's: a failed transaction
        # leaves those as they were.)
        started: list[WorkSpec] = []
        payloads: dict[str, bytes | None] = {}
        with self.store.transaction() as txn:
            for work_id in due:
                spec = txn.get(work_id)
                if spec is None:
                    continue
                if work_id not in known:
                    known[work_id] = _gating(spec)
                    if blocked_by_constraints(work_id, known[work_id]):
                        continue
                if not _rules.is_due(spec, now):
                    continue
                token = uuid.uuid4().hex
                try:
                    input_data = _rules.merged_input(spec, txn).to_dict()
                except Exception as exc:  # a merge error fails this work only
                    _rules.start_attempt(spec, token, now)
                    _rules.finish_attempt(txn, spec, Outcome(
                        "failure", error=f"cannot build the input of this work: {exc}"), now)
                    continue
                # An executor with a code source reads the blob itself, once per worker
                # process that lacks it; the others get one copy shared by this batch.
                # Never a copy per attempt: a worker that captured a 100 MiB global,
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
                    _rules.finish_attempt(txn, spec, Outcome(
                        "failure", error="the worker code of this work is missing from the "
                        "store; enqueue it again"), now)
                    continue
                txn.put(spec)
                started.append(spec)
                gates[token] = _gating(spec)
                attempts.append(AttemptSpec(
                    work_id=spec.id, token=token, worker_name=spec.worker_name,
                    code_key=spec.code_key, payload=payload, input_data=input_data,
                    tags=spec.tags, run_attempt_count=seen_count, generation=spec.generation,
                    log_path=self.store.log_path(spec.id),
                    extra=({"triggered_content_paths": spec.content["paths"]}
                           if spec.content.get("paths") else {}),
                ))
        self._note_own_commit(txn)
        self._remember_own(txn, started, [])
        for attempt in attempts:
            self._attempts[attempt.token] = attempt.work_id
            if gates.get(attempt.token):
                self._running_constraints[attempt.token] = gates[attempt.token]
            try:
                self.executor.submit(attempt)
            except Exception as exc:
                log.exception("could not start attempt of %s", attempt.work_id)
                self._outcomes[attempt.token] = Outcome(
                    "crash", error=f"the worker process could not be started: {exc}")

    def _prune_expired(self) -> None:
        pruned = _ops.prune(self.store, self.clock.now(), expired_only=True)
        if pruned:
            log.info("pruned %d finished works past their retention", len(pruned))

    # --- sleeping and idling -------------------------------------------------------------

    def _unfinished(self) -> bool:
        if self._attempts:  # known without a read of the store
            return True
        if self._content.has_watches:  # a watch keeps the scheduler up
            return True
        unreadable = self.store.unreadable  # never runs: no reason to stay
        return any(wid not in unreadable for state in (WorkState.ENQUEUED, WorkState.RUNNING)
                   for wid in self.store.state_index(state))

    def _idle_long_enough(self) -> bool:
        if self._unfinished():
            self._idle_since = None
            return False
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        return now - self._idle_since >= self.idle_exit

    def _leave_if_still_idle(self) -> bool:
        """Release the lock, look once more; True to exit, False if work came in."""
        self.lock.release()
        if not self._unfinished():
            return True
        if self.lock.acquire():
            self._idle_since = None
            return False
        return True

    def _first_due(self, enqueued: dict[str, float]) -> float | None:
        """The earliest run time of the enqueued works not waiting for constraints; kept
        while the index and that set stay the same (the loop may turn thousands of times
        a second in a flood of short works, and the index may hold thousands)."""
        # (Unreadable works never run: counting them would make the loop spin.)
        waiting = frozenset(self._waiting_for_constraints) | frozenset(self.store.unreadable)
        cached = self._first_due_cache
        # The index itself is kept in the cache: an index is a new object after any change,
        # and holding it keeps its id from being reused by another.
        if cached is not None and cached[0] is enqueued and cached[1] == waiting:
            return cached[2]
        first = min((t for wid, t in enqueued.items() if wid not in waiting), default=None)
        self._first_due_cache = (enqueued, waiting, first)
        return first

    def _sleep(self) -> None:
        timeout = HEARTBEAT_INTERVAL
        enqueued = self.store.state_index(WorkState.ENQUEUED)
        room = self._room() > 0
        # Work waiting only for its constraints is not "due now" (that would spin): the host
        # is read again within HOST_READ_INTERVAL, and a simulated change wakes us directly.
        if room:
            first = self._first_due(enqueued)
            if first is not None:
                timeout = min(timeout, max(0.0, first - self.clock.now()))
        if self._waiting_for_constraints or self._running_constraints:
            timeout = min(timeout, HOST_READ_INTERVAL)
        for deadline in (self.executor.next_deadline(), self._content.next_deadline()):
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - time.monotonic()))
        if self._reports_since is not None:
            timeout = min(timeout, max(0.0, self._reports_since + RECORD_DELAY
                                       - time.monotonic()))
        if self._idle_since is not None:
            timeout = min(timeout, max(0.0, self._idle_since + self.idle_exit - time.monotonic()))
        objects = [self._wake, *self.executor.wait_objects()]
        if timeout > 0:
            ready = wait_for(objects, timeout)
        else:
            ready = []
        if self._wake in ready:
            self._wake.drain()


def _gating(spec: WorkSpec) -> dict[str, Any]:
    """The constraints a work must wait for: none when it has none or the TestDriver said
    they are met."""
    if spec.constraints_met or not requires_anything(spec.constraints):
        return {}
    return spec.constraints


def _kill_orphan(spec: WorkSpec) -> None:
    """Kill the process group of an attempt whose scheduler died, if it still runs."""
    attempt = spec.attempt
    if attempt is None or attempt.pid is None:
        return
    try:
        process = psutil.Process(attempt.pid)
        if attempt.pid_create_time and abs(process.create_time() - attempt.pid_create_time) > 0.01:
            return  # the pid was reused by an unrelated process
    except psutil.Error:
        return
    try:
        os.killpg(attempt.pid, signal.SIGKILL)
    except OSError:
        try:
            os.kill(attempt.pid, signal.SIGKILL)
        except OSError:
            pass
