"""A warm worker process: runs attempts one after another, sent over a pipe.

Forking a fresh process for every attempt cost more than most works themselves, so the
local executor keeps a few of these alive (one per slot of its capacity). Each one:

- is the leader of its own process group and a *child subreaper*, so every process an
  attempt starts stays in reach: after each attempt, whatever it left running is killed,
  and a stop that the worker ignores kills the whole group (this process included; the
  executor starts a fresh one);
- redirects stdout and stderr to the attempt's log for the attempt's duration and restores
  the working directory afterwards;
- keeps the worker code it loaded (by content key), so a batch of works with one worker
  loads its code once.

What an attempt leaves in module globals stays for the next attempt in the same process,
as in one Android app process; threads it leaves running keep running.

Messages from the parent: ``("code", key, size)`` followed by the code blob's bytes in
pieces (``send_bytes``; kept here until ``("forget", key)``: the executor sends each blob
once per process, whatever the number of attempts that use it), ``("run", AttemptSpec)``
(without its payload; queued here in order: the executor may hand a slot a few short works
at once), ``("stop", token, reason)`` (a queued attempt that
is stopped is skipped), ``("unqueue", token)`` (if it has not begun, it is skipped and
reported ``not_started``; if it has, nothing happens). Which process runs an attempt the
executor knows when it hands it over: no message says so (one fewer per attempt).
To the parent: ``["progress", token, dict]`` (at most one per
``attempt.PROGRESS_INTERVAL``, the latest), ``("result", outcome)`` (the outcome in its
wire form, ``attempt.to_wire``, with the seconds the worker ran).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
import traceback
from typing import Any

from .._code import load_worker
from .._rules import Outcome, OutcomeKind
from ..worker import WorkerParameters
from .attempt import ProgressRelay, run_attempt, send_message, to_wire, worker_parameters
from .capture import Capture
from .process_groups import become_group_leader, end_own_group, kill_leftovers

CODE_CACHE_SIZE = 64


def slot_main(conn: Any) -> None:
    """Entry point of a warm worker process."""
    become_group_leader(subreaper=True)
    # Line-buffered streams on fds 1 and 2, whatever they point at for the moment.
    sys.stdout = open(1, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
    process = _WorkerProcess(conn)
    threading.Thread(target=process.listen, name="nbwork-slot-listener", daemon=True).start()
    process.run_queue()


class _WorkerProcess:
    """The two threads of a worker process: ``listen`` takes the parent's messages as they
    come (a stop must reach a running worker), ``run_queue`` runs the attempts in order.
    ``_claim_lock`` makes "take back" or "stop before it begins" exclusive with "begin":
    an attempt is either never run or reached by its stop, never neither, never twice."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._send_lock = threading.Lock()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._codes = _Codes()
        self._current: dict[str, WorkerParameters] = {}
        self._stopped_early: set[str] = set()  # stopped while still queued here: never run
        self._unqueued: set[str] = set()  # taken back by the executor while queued here
        self._claimed: set[str] = set()  # begun (or about to): too late to take back
        self._claim_lock = threading.Lock()

    def send(self, message: tuple | list) -> None:
        with self._send_lock:
            send_message(self._conn, message)

    def listen(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                end_own_group()
                return
            if message[0] == "code":
                blob = bytearray(message[2])
                view, received = memoryview(blob), 0
                while received < len(blob):
                    received += self._conn.recv_bytes_into(view[received:])
                self._codes.received(message[1], blob)
            elif message[0] == "forget":
                self._codes.forget(message[1])
            elif message[0] == "run":
                self._inbox.put(message[1])
            elif message[0] == "unqueue":
                self._unqueue(message[1])
            elif message[0] == "stop":
                self._stop(message[1], message[2])

    def _unqueue(self, token: str) -> None:
        # Answered at once (the main loop may be busy with a long attempt for a while), and
        # only if the attempt has not begun: it never runs twice.
        with self._claim_lock:
            taken = token not in self._claimed
            if taken:
                self._unqueued.add(token)
        if taken:
            self.send(("result", to_wire(token, Outcome(OutcomeKind.NOT_STARTED))))

    def _stop(self, token: str, reason: str) -> None:
        # Exclusive with "begin" (as "unqueue" is): a stop that comes while the main loop is
        # between "not stopped yet" and "running" either keeps it from running or reaches
        # the running worker, never neither.
        with self._claim_lock:
            params = self._current.get(token)
            if params is None and token not in self._claimed:
                self._stopped_early.add(token)
        if params is not None:
            print(f"nbwork: stop requested ({reason})", file=sys.stderr, flush=True)
            try:
                params.stop(reason)
            except Exception:
                traceback.print_exc()

    def _begin(self, token: str, params: WorkerParameters) -> str:
        """What to do with a queued attempt now: "run" it, or it was "stopped" while queued
        (to be answered), or taken back, so "skip" it (answered already)."""
        with self._claim_lock:
            if token in self._stopped_early:
                self._stopped_early.discard(token)
                return "stopped"
            if token in self._unqueued:
                self._unqueued.discard(token)
                return "skip"
            self._claimed.add(token)
            self._current[token] = params
        return "run"

    def run_queue(self) -> None:
        output = Capture()
        home = os.getcwd()
        while True:
            attempt = self._inbox.get()
            token = attempt.token
            progress = _TimedProgress(self.send, token)
            params = worker_parameters(attempt, progress.reported)
            begun = self._begin(token, params)
            if begun == "stopped":
                self.send(("result", to_wire(token, Outcome(OutcomeKind.STOPPED))))
            if begun != "run":
                continue
            # What the attempt left running is killed first: what they printed is in the
            # scratch file by then.
            outcome, seconds = run_attempt(attempt, params, load=self._codes.load,
                                           output=output, after=kill_leftovers)
            try:
                os.chdir(home)
            except OSError:
                pass
            with self._claim_lock:
                del self._current[token]
            progress.end(outcome)
            self._tell(token, outcome, seconds)
            self._claimed.discard(token)  # only now: a late "unqueue" must not answer first

    def _tell(self, token: str, outcome: Outcome, seconds: float) -> None:
        try:
            self.send(("result", to_wire(token, outcome, seconds)))
        except OSError:  # the scheduler is gone (killed): nobody to tell, end as it would
            end_own_group()
        except Exception:  # an output that cannot be sent is the worker's failure, not ours
            self.send(("result", to_wire(token, Outcome(OutcomeKind.FAILURE,
                                                        error=traceback.format_exc()))))


class _TimedProgress:
    """A ``ProgressRelay`` in a worker process, where no loop calls its ``send_due``: a timer
    sends a progress that waits for its turn. Reports may come from any thread of the
    attempt (or a thread it left running, after it ended: then nothing is sent)."""

    def __init__(self, send: Any, token: str) -> None:
        self._relay = ProgressRelay(send, token)
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._ended = False

    def reported(self, values: dict) -> None:
        with self._lock:
            if self._ended:
                return
            self._relay.reported(values)
            self._relay.send_due()
            due = self._relay.due
            if due is not None and self._timer is None:
                self._timer = threading.Timer(max(0.0, due - time.monotonic()), self._fire)
                self._timer.daemon = True
                self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
            if not self._ended:
                self._relay.flush()

    def end(self, outcome: Outcome) -> None:
        with self._lock:
            self._ended = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._relay.end(outcome)


class _Codes:
    """The worker code this process was sent, by key: blobs until first loaded, then the
    loaded class or function. Which keys stay is the executor's choice (it knows which
    queued attempts need which): received and forgotten in the order it sent them."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes | bytearray] = {}
        self._loaded: dict[str, Any] = {}

    def received(self, key: str, blob: bytes | bytearray) -> None:
        self._blobs[key] = blob

    def forget(self, key: str) -> None:
        self._blobs.pop(key, None)
        self._loaded.pop(key, None)

    def load(self, attempt: Any) -> Any:
        """The worker code of ``attempt`` (an ``AttemptSpec``), loaded once per key."""
        key, payload = attempt.code_key, attempt.payload
        worker = self._loaded.get(key)
        if worker is None:
            blob = payload if payload is not None else self._blobs.get(key)
            if blob is None:
                raise RuntimeError(f"nbwork: the code {key[:12]} was never sent to this process")
            worker = load_worker(blob)  # a blob that does not load stays: each try says why
            self._loaded[key] = worker
            self._blobs.pop(key, None)
        return worker
