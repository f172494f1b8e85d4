"""The Dask executor: runs attempts on an existing ``distributed`` cluster, by address.

The store and the scheduler stay on this machine; only attempts travel. Each attempt is one
Dask task (``dask_task.run_attempt_task``) that runs the worker in a subprocess on the Dask
worker, so a stop really stops it. The executor never blocks the scheduler's loop: whatever
may wait on the network runs on threads that report through a queue and a pipe, and the
pipe is what ``wait_objects()`` gives the scheduler to select on.

- **Connection**: a monitor thread owns the ``Client``. It connects (and reconnects after the
  cluster was lost, with a new client each time), and keeps ``capacity`` at the cluster's
  total number of worker threads: 0 while the cluster is unreachable or has no worker, so
  the scheduler leaves work ENQUEUED instead of handing it to nobody.
- **Progress**: the task publishes the worker's progress as Dask events on this executor's
  topic (``Worker.log_event``); the client's handler queues them.
- **Submissions**: one graph per scheduler turn, bounded by ``room()`` (``SUBMIT_CHUNK``).
- **Results**: the task pushes a small result as an event just before it returns (the
  same stream brings it ahead of the task's completion); otherwise a done-callback (on
  Dask's callback thread) fetches the task's result and queues it. The attempt's output
  log comes with it and is appended to the store's log.
- **Waiting**: ``waiting_for()`` says why nothing can start (no cluster, or no worker).
- **Stops**: ``Client.run(stop_attempt)`` on the workers (from a control thread): the task
  asks the worker to stop and kills its process group after the grace period; a task that
  starts after its stop reached its worker returns at once. (Cancelling the future of a
  task this side had not yet heard start killed, without its grace, one that had.) If no
  answer comes, the Dask future is cancelled (the task then ends its subprocess) and the
  attempt is reported stopped.
- **Failures of the cluster**: a Dask worker that dies makes Dask run the task again
  elsewhere (the same attempt; its token still fences the result). A lost connection to the
  Dask scheduler cuts every attempt short: each goes back to ENQUEUED (stop reason
  ``SCHEDULER_RESTARTED``, not a failure) and runs again once the cluster is back; the
  abandoned tasks end their subprocesses when Dask releases them, and the next connection
  ends any stray left (``end_strays``).
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import wait as wait_for
from typing import Any

from .._executor_address import DASK_PREFIX, EXTRA_HINT, check_executor, require_distributed
from .._rules import Outcome, OutcomeKind
from ..errors import InvalidInputError
from ..info import StopReason
from .attempt import from_wire
from .base import DEFAULT_STOP_GRACE, AttemptSpec, DiscardSink, Sink
from .capture import LogWriter, log_max_bytes
from .dask_task import end_strays, run_attempt_task, stop_attempt, task_key
from .process_groups import KILL_AFTER_TERM

log = logging.getLogger("nbwork.dask")

CONNECT_TIMEOUT = 10.0
"""Seconds one attempt to connect to the Dask scheduler may take."""
MONITOR_INTERVAL = 1.0
"""Seconds between two looks at the cluster (connection, number of threads)."""
STOP_CONFIRM = 5.0
"""Seconds a stopped attempt gets, past its grace and kill delay, before its future is
cancelled; and again after that before the attempt is reported stopped regardless."""
RESULT_TIMEOUT = 60.0
FETCHERS = 8  # threads fetching outcomes that did not come as an event (a round trip each)
SHORT_WORK = 0.05
"""Seconds: while attempts take less than this, the cluster is handed up to ``SHORT_DEPTH``
attempts per worker thread, topped up once half of them are done (``room``), so that its
threads do not idle while results travel back. 32 topped up by halves, against 16 topped up
per result: a transaction and a graph per few works cost 1.2 ms per no-op (2,000 no-ops, 2
threads, 2 shared cores: 0.56-0.69x raw ``client.submit``, against 0.47-0.50x)."""
SHORT_DEPTH = 32
LONG_DEPTH = 2
"""Longer works: up to this many attempts per worker thread, so that the next one waits on
the Dask worker while one runs, not until a result and a submission travelled (a blur chain
of 4 steps on 2 threads waited about a second per step on a loaded machine: 1.7-2x raw
``client.map``). A work may then show RUNNING one attempt's time before it begins (a stop
still reaches it: it then never begins)."""
SUBMIT_CHUNK = 256
"""At most this many attempts go to the cluster in one ``client.map`` (one graph upload).
Attempts ``submit`` takes are gathered and sent together once the scheduler's turn has
handed out what it could (``wait_objects`` or ``poll``, whichever comes first): one
message and one graph update on the Dask scheduler per batch, not per attempt. How many
attempts are out at once stays bounded by ``room()`` (the cluster's threads times at most
``SHORT_DEPTH``), so a batch of 100,000 works is sent a few dozen at a time as room frees,
never as one huge graph."""
SEEN_KEPT = 100_000  # tokens whose result came as an event, until their task completes


def _describe_task_error(exc: BaseException, tb: str) -> str:
    name = type(exc).__name__
    if name == "KilledWorker":
        return (f"the Dask workers running this attempt kept dying, and Dask gave up on it "
                f"({exc})")
    if isinstance(exc, ImportError) and "nbwork" in str(exc):
        return (f"the Dask worker cannot run nbwork's task ({name}: {exc}): install nbwork in "
                f"the Dask workers' environment ({EXTRA_HINT})")
    return f"the Dask task of this attempt failed: {name}: {exc}\n{tb}".rstrip()


@dataclass
class _Run:
    attempt: AttemptSpec
    future: Any
    generation: int
    stop_reason: str | None = None
    cancel_at: float | None = None
    give_up_at: float | None = None


class DaskExecutor:
    """Runs attempts on the Dask cluster whose scheduler is at ``address``
    (``dask://HOST:PORT``). ``owner`` names the store (host and path), so that a later
    executor of the same store can end attempts this one left behind."""

    def __init__(self, address: str, stop_grace: float = DEFAULT_STOP_GRACE,
                 owner: str | None = None, connect_timeout: float = CONNECT_TIMEOUT) -> None:
        require_distributed()
        self.address = check_executor(address)
        if self.address == "local":
            raise InvalidInputError("DaskExecutor needs a 'dask://HOST:PORT' address")
        self.stop_grace = stop_grace
        self.connect_timeout = connect_timeout
        self._id = uuid.uuid4().hex
        self.owner = owner or self._id
        self._topic = f"nbwork-{self._id}"
        self._running: dict[str, _Run] = {}
        self._reports: collections.deque[tuple[str, Any, Any]] = collections.deque()
        self._wake_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._connection: tuple[Any, int] | None = None  # (client, generation)
        self._pending: list[AttemptSpec] = []  # taken by submit, not yet sent (see _flush)
        # Sending (on the control thread or the scheduler's) is exclusive with a stop
        # deciding that an attempt was never sent: it then never is.
        self._send_lock = threading.Lock()
        # Tokens whose result came as an event: their task's completion needs no fetch.
        self._pushed: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._generation = 0
        self._capacity = 0
        self._short = False  # the last attempt took less than SHORT_WORK
        self._closing = threading.Event()
        self._last_error: str | None = None
        self._control = ThreadPoolExecutor(1, thread_name_prefix="nbwork-dask-control")
        self._fetchers = ThreadPoolExecutor(FETCHERS, thread_name_prefix="nbwork-dask-results")
        self._monitor = threading.Thread(target=self._watch, name="nbwork-dask-monitor",
                                         daemon=True)
        self._monitor_started = False

    def _ensure_connecting(self) -> None:
        """Connect on first use, not in the constructor: a scheduler that finds the store's
        lock taken must not touch the cluster (its first connection ends strays, and those
        would be the live scheduler's attempts)."""
        if not self._monitor_started:
            self._monitor_started = True
            self._monitor.start()

    def room(self) -> int:
        """How many more attempts ``submit`` takes now (see ``SHORT_WORK``)."""
        limit = self.capacity * (SHORT_DEPTH if self._short else LONG_DEPTH)
        running = len(self._running)
        if self._short and running > limit // 2:  # (see SHORT_WORK)
            return 0
        return limit - running

    @property
    def capacity(self) -> int:
        """The cluster's worker threads; 0 while it is unreachable or has no worker."""
        self._ensure_connecting()
        connection = self._connection
        # The status, not only the monitor's last look: after a lost connection the cut-short
        # attempts come back at once, and must not be handed to a client that is reconnecting.
        if connection is None or connection[0].status != "running":
            return 0
        return self._capacity

    def waiting_for(self) -> str | None:
        """Why no attempt can be handed to the cluster now, for people (``nbwork show``,
        ``wm.daemon.status()``): the cluster is unreachable or has no worker. None while
        it has worker threads."""
        connection = self._connection
        if connection is not None and connection[0].status == "running" and self._capacity:
            return None
        where = f"the Dask cluster at {self.address}"
        if connection is None or connection[0].status != "running":
            if not self._monitor_started:
                return f"waiting for the cluster: connecting to {where}"
            why = f" ({self._last_error})" if self._last_error else ""
            return f"waiting for the cluster: cannot reach the scheduler of {where}{why}"
        return f"waiting for the cluster: {where} has no worker"

    # --- threads that may wait on the network -------------------------------------------

    def _wake(self) -> None:
        with self._wake_lock:  # a late callback must not write to a closed (reused) fd
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, b"!")
            except BlockingIOError:  # full: a wake-up is pending already
                pass

    def _report(self, kind: str, token: Any, value: Any = None) -> None:
        self._reports.append((kind, token, value))
        self._wake()

    def _watch(self) -> None:
        """The monitor thread: (re)connect, and keep ``capacity`` current."""
        while not self._closing.is_set():
            try:
                self._look_at_cluster()
            except Exception:  # never let the monitor die: without it nothing reconnects
                log.exception("error while watching the Dask cluster")
            self._closing.wait(MONITOR_INTERVAL)

    def _look_at_cluster(self) -> None:
        connection = self._connection
        if connection is not None and connection[0].status != "running":
            self._lose(connection, "the connection to the Dask scheduler was lost")
            connection = None
        if connection is None:
            connection = self._connect()
        threads = 0
        if connection is not None:
            try:
                threads = sum(connection[0].nthreads().values())
            except Exception as exc:  # lost meanwhile: the next round notices
                log.debug("cannot read the cluster's threads: %s", exc)
        if threads != self._capacity:
            log.info("the Dask cluster at %s has %d worker threads", self.address, threads)
            self._capacity = threads
            self._wake()

    def _connect(self) -> tuple[Any, int] | None:
        from distributed import Client

        scheduler = "tcp://" + self.address[len(DASK_PREFIX):]
        try:
            client = Client(scheduler, timeout=self.connect_timeout, set_as_default=False,
                            direct_to_workers=False)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if error != self._last_error:  # say it once, not every second
                log.warning("cannot reach the Dask scheduler at %s (%s); trying again every "
                            "%g s, work waits meanwhile", self.address, error, MONITOR_INTERVAL)
                self._last_error = error
            return None
        self._last_error = None
        self._generation += 1
        client.subscribe_topic(self._topic, self._on_event)
        connection = (client, self._generation)
        self._connection = connection
        log.info("connected to the Dask scheduler at %s", self.address)
        # Attempts of this store that an earlier connection (or a dead scheduler) left running
        # on the cluster are strays: nobody will take their results.
        self._control.submit(self._quietly, client.run, end_strays, self.owner,
                             self._executor_id(connection[1]), wait=False, on_error="ignore")
        return connection

    def _lose(self, connection: tuple[Any, int], why: str) -> None:
        log.warning("%s (%s); its attempts go back to the queue", why, self.address)
        self._connection = None
        self._capacity = 0
        self._report("lost", connection[1])
        self._control.submit(self._quietly, connection[0].close, timeout=5)

    @staticmethod
    def _quietly(function: Any, *args: Any, **kwargs: Any) -> None:
        try:
            function(*args, **kwargs)
        except Exception as exc:
            log.info("%s failed: %s", getattr(function, "__name__", function), exc)

    def _executor_id(self, generation: int) -> str:
        return f"{self._id}-{generation}"

    def _on_event(self, event: tuple[float, Any]) -> None:
        """On the client's event loop: a ``[kind, token, value]`` from a task."""
        kind, token, value = event[1]
        if kind == "result":  # the task's result, pushed ahead of its completion
            try:
                value = ("finished", pickle.loads(value))
            except Exception as exc:  # a worker on another version: the fetch says why
                log.info("unreadable result of attempt %s: %s", token, exc)
                return
            self._pushed[token] = None
            while len(self._pushed) > SEEN_KEPT:
                self._pushed.popitem(last=False)
            kind = "done"
        self._report(kind, token, value)

    def _on_done(self, token: str, future: Any) -> None:
        """On Dask's (one) callback thread: have the outcome fetched, on a pool, since each
        fetch waits for a round trip and the next callbacks must not wait behind it. Not
        when it came as an event already (the same stream brings the event first)."""
        try:
            del self._pushed[token]
            return
        except KeyError:
            pass
        try:
            self._fetchers.submit(self._fetch, token, future)
        except RuntimeError:  # shut down: nobody takes outcomes any more
            pass

    def _fetch(self, token: str, future: Any) -> None:
        status = future.status
        try:
            if status == "finished":
                value: tuple[str, Any] = ("finished", future.result(timeout=RESULT_TIMEOUT))
            elif status == "error":
                exc = future.exception(timeout=RESULT_TIMEOUT)
                tb = "".join(traceback.format_tb(future.traceback(timeout=RESULT_TIMEOUT)))
                value = ("error", _describe_task_error(exc, tb))
            else:
                value = ("lost", status)
        except Exception as exc:  # the connection went while fetching
            value = ("lost", f"{type(exc).__name__}: {exc}")
        self._report("done", token, value)

    # --- the Executor contract (called from the scheduler's thread) ----------------------

    def running(self) -> set[str]:
        return set(self._running)

    def submit(self, attempt: AttemptSpec) -> None:
        """Taken now, sent with the others of this turn (see ``SUBMIT_CHUNK``)."""
        self._running[attempt.token] = _Run(attempt, None, 0)
        with self._send_lock:
            first = not self._pending
            self._pending.append(attempt)
        if len(self._pending) >= SUBMIT_CHUNK:
            self._flush()
        elif first:  # sent soon even if the scheduler does not look at us (a caller that
            # only waits): by then, the rest of this turn has joined it.
            try:
                self._control.submit(self._flush)
            except RuntimeError:  # shut down
                pass

    def _flush(self) -> None:
        """Send the attempts taken since the last flush, ``SUBMIT_CHUNK`` per graph."""
        with self._send_lock:
            while self._pending:
                batch = [a for a in self._pending[:SUBMIT_CHUNK]
                         if self._running.get(a.token) is not None]  # not stopped meanwhile
                del self._pending[:SUBMIT_CHUNK]
                if batch:
                    self._send(batch)

    def _send(self, batch: list[AttemptSpec]) -> None:
        connection = self._connection
        futures = None
        if connection is not None:  # else lost since the scheduler looked at capacity
            client, generation = connection
            n = len(batch)
            try:
                # Pickled, so that Dask never looks inside an attempt for task references.
                futures = client.map(
                    run_attempt_task, [pickle.dumps(a) for a in batch], [self._topic] * n,
                    [self.owner] * n, [self._executor_id(generation)] * n,
                    key=[task_key(a.token) for a in batch], pure=False)
            except Exception as exc:  # the client closed under us: the cluster was just lost
                log.info("could not submit %d attempts: %s", n, exc)
        for i, attempt in enumerate(batch):
            run = self._running[attempt.token]  # a stop takes it from _pending, not from here
            if futures is None:
                run.generation = -1
                self._report("done", attempt.token, ("lost", "not submitted"))
                continue
            run.future, run.generation = futures[i], generation
            futures[i].add_done_callback(partial(self._on_done, attempt.token))

    def stop(self, token: str, reason: str) -> None:
        run = self._running.get(token)
        if run is None or run.stop_reason is not None:
            return
        run.stop_reason = reason
        run.cancel_at = time.monotonic() + self.stop_grace + KILL_AFTER_TERM + STOP_CONFIRM
        with self._send_lock:
            unsent = run.future is None and run.generation == 0
            if unsent:  # not sent yet: it never will be
                self._pending = [a for a in self._pending if a.token != token]
        if unsent:
            self._report("done", token, ("lost", "stopped"))
            return
        connection = self._connection
        if run.future is None or connection is None or connection[1] != run.generation:
            self._report("done", token, ("lost", "stopped"))
            return
        client = connection[0]
        self._control.submit(self._quietly, client.run, stop_attempt, token, reason,
                             self.stop_grace, wait=False, on_error="ignore")

    def wait_objects(self) -> list[Any]:
        self._flush()  # the scheduler's turn is over: what it handed out goes now
        return [self._wake_r]

    def next_deadline(self) -> float | None:
        times = [t for r in self._running.values() for t in (r.cancel_at, r.give_up_at) if t]
        return min(times) if times else None

    def poll(self, sink: Sink) -> None:
        self._ensure_connecting()
        self._flush()
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while self._reports:
            kind, token, value = self._reports.popleft()
            if kind == "lost":
                for lost_token, run in list(self._running.items()):
                    if run.generation == token:
                        self._finish(lost_token, run, ("lost", "connection"), sink)
                continue
            run = self._running.get(token)
            if run is None:
                continue  # late news of an attempt already finished
            if kind == "progress":
                sink.progress(token, value)
            elif kind == "done":
                self._finish(token, run, value, sink)
        now = time.monotonic()
        for token, run in list(self._running.items()):
            if run.give_up_at is not None and now >= run.give_up_at:
                log.warning("attempt %s did not confirm its stop; taking it as stopped", token)
                self._finish(token, run, ("lost", "stop not confirmed"), sink)
            elif run.cancel_at is not None and now >= run.cancel_at:
                log.info("attempt %s did not confirm its stop; cancelling its Dask task", token)
                run.cancel_at, run.give_up_at = None, now + STOP_CONFIRM
                if run.future is not None:
                    self._control.submit(self._quietly, run.future.cancel)

    def _finish(self, token: str, run: _Run, value: tuple[str, Any], sink: Sink) -> None:
        del self._running[token]
        status, payload = value
        text = ""
        if status == "finished":
            outcome, text = self._task_result(payload)
        elif status == "error":
            outcome = Outcome(OutcomeKind.CRASH, error=payload)
        else:  # cut short by the cluster: back to the queue, not a failure
            outcome = Outcome(OutcomeKind.STOPPED,
                              stop_reason=StopReason.SCHEDULER_RESTARTED.value)
        if run.stop_reason is not None:
            outcome = Outcome(OutcomeKind.STOPPED, stop_reason=run.stop_reason)
        if text and run.attempt.log_path:
            try:
                writer = LogWriter(run.attempt.log_path, log_max_bytes())
                try:
                    writer.write(text.encode("utf-8", errors="replace"))
                finally:
                    writer.close()
            except OSError as exc:
                log.warning("cannot write the log of %s: %s", run.attempt.work_id, exc)
        sink.finished(token, outcome)

    def _task_result(self, payload: Any) -> tuple[Outcome, str]:
        """The outcome and output log a task returned (``run_attempt_task``)."""
        try:
            _, outcome, seconds = from_wire(payload)
        except ValueError:
            return Outcome(OutcomeKind.CRASH, error=(
                f"the Dask worker returned {type(payload).__name__} where nbwork expected an "
                "outcome: it runs another version of nbwork than this scheduler; install the "
                "same version on the Dask workers")), ""
        self._short = seconds < SHORT_WORK
        return outcome, str(payload.get("log") or "")

    def shutdown(self, grace: float, sink: Sink | None = None) -> None:
        self._monitor_started = True  # never connect just to shut down
        for token in list(self._running):
            self.stop(token, StopReason.SCHEDULER_RESTARTED.value)
        deadline = time.monotonic() + grace + KILL_AFTER_TERM + 1.0
        sink = sink or DiscardSink()
        while self._running and time.monotonic() < deadline:
            wait_for([self._wake_r], max(0.0, deadline - time.monotonic()))
            self.poll(sink)
        self._closing.set()
        if self._monitor.is_alive():
            self._monitor.join(CONNECT_TIMEOUT + 5.0)
        connection, self._connection = self._connection, None
        self._running.clear()  # releasing their futures makes the workers end them
        if connection is not None:
            self._quietly(connection[0].close, timeout=5)
        self._control.shutdown(wait=True, cancel_futures=True)
        self._fetchers.shutdown(wait=True, cancel_futures=True)
        with self._wake_lock:
            os.close(self._wake_w)
            self._wake_w = -1
        os.close(self._wake_r)
