"""The scheduler: the one process per store that runs work. This module is its loop; the
parts it turns are the report writer (``_scheduler_reports``), the record cache and its one
rule for "has anybody else written since" (``_scheduler_records``), the dispatcher
(``_scheduler_dispatch``) and the constraint gate (``_scheduler_gate``). Every time it reads
comes from its clock (wall time for records, monotonic time for intervals), so a test can
step it with a manual one.

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

import logging
import multiprocessing.util
import os
import signal
import uuid
from multiprocessing.connection import wait as wait_for
from typing import Any

from . import _ops, _rules
from ._conditions import HOST_READ_INTERVAL
from ._executors import leftovers, process_groups
from ._executors.base import Executor
from ._executors.local import DEFAULT_STOP_GRACE, LocalExecutor
from ._liveness import BeatWriter, read_beat, remove_dead_tmpdir
from ._lock import SchedulerLock
from ._scheduler_dispatch import Dispatcher
from ._scheduler_gate import ConstraintGate
from ._scheduler_records import RecordCache
from ._scheduler_reports import Reports, ReportWriter
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
"""Seconds between two prunes of finished works past their retention (the first at start)."""


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
        self._attempts: dict[str, str] = {}  # token -> work id, of our attempts in flight
        self._records = RecordCache()
        self._gate = ConstraintGate(store)
        self._writer = ReportWriter(store, self.clock, self._records, self._attempts)
        self._reports = self._writer.buffer  # the executor's sink
        self._dispatcher = Dispatcher(store, self.executor, self.clock, self._records,
                                      self._gate, self._attempts, self._reports)
        self._stopping = False
        self._faulted = False
        self._mark_before: str | None = None
        self._last_heartbeat: float | None = None  # monotonic times, None: never yet
        self._last_prune: float | None = None
        self._idle_since: float | None = None
        self._wake: WakeReceiver | None = None
        # Content triggers and hot folders; a file event pokes our own wake-up FIFO.
        self._content = ContentMonitor(store, self.clock,
                                       lambda: self._wake.poke() if self._wake else None)

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
        checkpointer = self.store.checkpointer()
        checkpointer.start()
        try:
            self._loop()
        finally:
            try:
                self._shutdown()
            finally:
                checkpointer.close()
        return 0

    def _loop(self) -> None:
        recovered = False
        while True:
            try:
                if not recovered:
                    self._heartbeat(force=True)
                    self.recover()
                    recovered = True
                # One read of the change counters for the step and what decides the sleep
                # after it (a commit meanwhile pokes the FIFO: the sleep ends at once).
                with self.store.turn():
                    self.step()
                    idle = self.idle_long_enough()
                    timeout = self._sleep_time()
            except StoreError as exc:
                # A full disk (or a store locked for a minute) must not end the scheduler:
                # nothing it could not write is lost (see _scheduler_reports); it waits a
                # little and tries again, and carries on when space returns.
                self._store_fault(exc)
                if self._stopping:
                    return
                continue
            if self._faulted:
                self._faulted = False
                self.beat.state = "running"
            if self._stopping:
                return
            if idle:
                if self._leave_if_still_idle():
                    return
                timeout = self._sleep_time()  # work came in as it looked once more
            self._sleep(timeout)

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
                               sink=self._reports)
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
        self._reports.drop_outcomes()
        self._attempts.clear()
        # After an idle exit the lock is already released, and another scheduler may hold it
        # and run work by now: the RUNNING records are its own, not ours to recover.
        if self.lock.fd is not None:
            try:
                self.recover(whose="this scheduler, which is stopping")
            except StoreError as exc:  # a full disk: the next scheduler recovers them
                log.warning("could not put running work back in the queue: %s", exc)
        try:
            self._drop_lease()
        finally:
            self._let_go()

    def _drop_lease(self) -> None:
        with self.store.transaction() as txn:
            lease = txn.get_value("lease")
            if lease and lease.get("token") == self.token:
                txn.delete_value("lease")

    def _let_go(self) -> None:
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
        now = self.clock.monotonic()
        if (not force and self._last_heartbeat is not None
                and now - self._last_heartbeat < HEARTBEAT_INTERVAL):
            return
        self._last_heartbeat = now
        # Why no work can start (a Dask cluster out of reach, or without workers): shown by
        # wm.daemon.status() and `nbwork show` (see explain.why_waiting).
        waiting_for = getattr(self.executor, "waiting_for", None)
        if waiting_for is not None and not self._faulted:
            self.beat.state = waiting_for() or "running"
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
        mine = set(self._attempts.values())
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
        """One turn of the loop, at the clock's time: record the executor's reports, stop
        what was cancelled or lost its constraints, start due work, prune when it is time.

        The store's change counters are read once for the turn (``Store.turn``)."""
        with self.store.turn():
            self._heartbeat()
            self.executor.poll(self._reports)
            # Reports ripe now are written in the transaction that starts the due works, if
            # any are due (one commit per turn in a flood of short works), else on their own.
            reports = self._writer.take()
            self._records.look(self.store.change_counter())
            if self._records.take_news():  # somebody else wrote: a cancel, a lifted constraint
                self._stop_cancelled()
            self._gate.stop_where_constraints_fail(self.executor, self._attempts)
            self._content.step()
            if reports is None:
                self._dispatcher.start_due_work()
            else:
                self._start_and_record(reports)
            self._prune_when_due()

    def _start_and_record(self, reports: Reports) -> None:
        recorded = self._dispatcher.start_due_work(reports, self._writer)
        if recorded is None:  # nothing was due: the reports in a transaction of their own
            recorded = self._writer.write_taken(reports)
        self._recorded(recorded)
        if self._writer.made_due:
            # The outcomes made works due (unblocked dependents, retries): start them in
            # this turn, as when the reports were written before the due works were read.
            self._dispatcher.start_due_work()

    def _record_reports(self, force: bool = False) -> None:
        self._recorded(self._writer.write(force))

    def _recorded(self, recorded: list[str]) -> None:
        if not recorded:
            return
        first = not self.beat.recorded
        self.beat.recorded += len(recorded)
        if first:
            # The first result this scheduler recorded: its supervisor counts a death after
            # it as one of a productive scheduler (not a crash loop), so say so now.
            self.beat.beat()
        self._gate.ended(recorded)

    def _stop_cancelled(self) -> None:
        for token, work_id in list(self._attempts.items()):
            spec = self.store.get(work_id)
            if spec is None or spec.state is not WorkState.RUNNING or (
                spec.attempt is not None and spec.attempt.token != token
            ):
                reason = (spec.stop_reason if spec else None) or "CANCELLED_BY_APP"
                self.executor.stop(token, reason)
            else:
                self._gate.refresh(token, spec)

    def _prune_when_due(self) -> None:
        now = self.clock.monotonic()
        if self._last_prune is not None and now - self._last_prune < PRUNE_INTERVAL:
            return
        self._last_prune = now
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

    def idle_long_enough(self) -> bool:
        """Has the store held no unfinished work for ``idle_exit`` seconds?"""
        if self._unfinished():
            self._idle_since = None
            return False
        now = self.clock.monotonic()
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
        return self._dispatcher.first_due(enqueued)

    def _sleep(self, timeout: float) -> None:
        objects = [self._wake, *self.executor.wait_objects()]
        ready = wait_for(objects, timeout) if timeout > 0 else []
        if self._wake in ready:
            self._wake.drain()

    def _sleep_time(self) -> float:
        """Seconds until something is due: work, a heartbeat, an executor's or a watch's
        deadline, reports to write, the idle exit."""
        timeout = HEARTBEAT_INTERVAL
        # Work waiting only for its constraints is not "due now" (that would spin): the host
        # is read again within HOST_READ_INTERVAL, and a simulated change wakes us directly.
        if self._dispatcher.room() > 0:
            first = self._first_due(self.store.state_index(WorkState.ENQUEUED))
            if first is not None:
                timeout = min(timeout, max(0.0, first - self.clock.now()))
        if self._gate.watching():
            timeout = min(timeout, HOST_READ_INTERVAL)
        now = self.clock.monotonic()  # executors' deadlines are monotonic times
        deadlines = [self.executor.next_deadline(), self._content.next_deadline(),
                     self._writer.buffer.deadline()]
        if self._idle_since is not None:
            deadlines.append(self._idle_since + self.idle_exit)
        for deadline in deadlines:
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - now))
        return timeout


def _kill_orphan(spec: WorkSpec) -> None:
    """Kill the process group of an attempt whose scheduler died, if it still runs."""
    if spec.attempt is not None:
        process_groups.kill_recorded(spec.attempt.pid, spec.attempt.pid_create_time)
