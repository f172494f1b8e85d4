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
To the parent: ``("progress", token, dict)``, ``("result", outcome)`` (the outcome in its
wire form, ``attempt.to_wire``, with the seconds the worker ran).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import traceback
from typing import Any

from .._code import load_worker
from .._rules import Outcome, OutcomeKind
from ..worker import WorkerParameters
from .attempt import run_attempt, to_wire, worker_parameters
from .capture import Capture
from .process_groups import become_group_leader, end_own_group, kill_leftovers

CODE_CACHE_SIZE = 64


def slot_main(conn: Any) -> None:
    """Entry point of a warm worker process."""
    become_group_leader(subreaper=True)
    # Line-buffered streams on fds 1 and 2, whatever they point at for the moment.
    sys.stdout = open(1, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False, errors="replace")  # noqa: SIM115
    send_lock = threading.Lock()
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    codes = _Codes()
    current: dict[str, WorkerParameters] = {}
    stopped_early: set[str] = set()  # stopped while still queued here: never run them
    unqueued: set[str] = set()  # taken back by the executor while still queued here
    claimed: set[str] = set()  # begun (or about to): too late to take back
    claim_lock = threading.Lock()  # makes "take back" and "begin" exclusive

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    def listen() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                end_own_group()
                return
            if message[0] == "code":
                blob = bytearray(message[2])
                view, received = memoryview(blob), 0
                while received < len(blob):
                    received += conn.recv_bytes_into(view[received:])
                codes.received(message[1], blob)
            elif message[0] == "forget":
                codes.forget(message[1])
            elif message[0] == "run":
                inbox.put(message[1])
            elif message[0] == "unqueue":
                # Answered at once (the main loop may be busy with a long attempt for a
                # while), and only if the attempt has not begun: it never runs twice.
                with claim_lock:
                    taken = message[1] not in claimed
                    if taken:
                        unqueued.add(message[1])
                if taken:
                    send(("result", to_wire(message[1], Outcome(OutcomeKind.NOT_STARTED))))
            elif message[0] == "stop":
                # Exclusive with "begin" (as "unqueue" is): a stop that comes while the main
                # loop is between "not stopped yet" and "running" either keeps it from
                # running or reaches the running worker, never neither.
                with claim_lock:
                    params = current.get(message[1])
                    if params is None and message[1] not in claimed:
                        stopped_early.add(message[1])
                if params is not None:
                    print(f"nbwork: stop requested ({message[2]})", file=sys.stderr, flush=True)
                    try:
                        params.stop(message[2])
                    except Exception:
                        traceback.print_exc()

    threading.Thread(target=listen, name="nbwork-slot-listener", daemon=True).start()
    output = Capture()
    home = os.getcwd()
    while True:
        attempt = inbox.get()
        token = attempt.token
        params = worker_parameters(
            attempt, lambda values, token=token: send(("progress", token, values)))
        with claim_lock:
            stopped = token in stopped_early
            stopped_early.discard(token)
            if not stopped and token in unqueued:
                unqueued.discard(token)
                continue  # already answered
            if not stopped:
                claimed.add(token)
                current[token] = params
        if stopped:
            send(("result", to_wire(token, Outcome(OutcomeKind.STOPPED))))
            continue
        # What the attempt left running is killed first: what they printed is in the
        # scratch file by then.
        outcome, seconds = run_attempt(attempt, params, load=codes.load, output=output,
                                       after=kill_leftovers)
        try:
            os.chdir(home)
        except OSError:
            pass
        with claim_lock:
            del current[token]
        try:
            send(("result", to_wire(token, outcome, seconds)))
        except OSError:  # the scheduler is gone (killed): nobody to tell, end as it would
            end_own_group()
        except Exception:  # an output that cannot be sent is the worker's failure, not ours
            send(("result", to_wire(token, Outcome(OutcomeKind.FAILURE,
                                                   error=traceback.format_exc()))))
        claimed.discard(token)  # only now: a late "unqueue" must not answer before the result


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
