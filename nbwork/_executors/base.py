"""The executor contract between the scheduler and whatever runs attempts.

The scheduler hands an executor an ``AttemptSpec`` (everything one attempt needs, no store
access) and a ``Sink`` to report to. Executors never import the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._rules import Outcome


@dataclass(frozen=True)
class AttemptSpec:
    """One attempt of one work: the fencing ``token`` names it in every report."""

    work_id: str
    token: str
    worker_name: str
    code_key: str
    payload: bytes | None  # None: the executor reads it from its CodeSource when it needs it
    input_data: dict[str, Any]
    tags: tuple[str, ...] = ()
    run_attempt_count: int = 0
    generation: int = 0
    log_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


CodeSource = Callable[[str], tuple[int, Iterator[bytes]]]
"""Code key -> ``(size, pieces)`` of its blob. An executor that keeps each worker process's
code (``LocalExecutor.set_code_source``) gets attempts without a payload and reads a blob
only for a process that lacks it: the scheduler never holds one copy per queued attempt."""


class Sink(Protocol):
    """Where an executor reports; each call names the attempt by its token."""

    def started(self, token: str, pid: int | None, pid_create_time: float | None) -> None: ...

    def progress(self, token: str, progress: dict[str, Any]) -> None: ...

    def finished(self, token: str, outcome: Outcome) -> None: ...


DEFAULT_STOP_GRACE = 5.0
"""Seconds a stopped worker gets to return before its process group is terminated."""


class Executor(Protocol):
    """Runs attempts for the scheduler, which calls it from one thread only.

    The life of an attempt: ``submit`` hands it over; ``poll`` tells the sink that it
    started (``Sink.started``, with the pid that runs it where there is one), its progress,
    and exactly one ``Sink.finished`` with its ``Outcome``; from then on the executor has
    forgotten its token. Between two polls the scheduler sleeps until one of
    ``wait_objects()`` is ready or ``next_deadline()`` has come. ``tests/executor_contract.py``
    runs the same behaviours against every executor.
    """

    capacity: int
    """How many attempts may run at once (the scheduler's count of work RUNNING); 0 while
    the executor can run none (a Dask cluster out of reach): work then waits ENQUEUED."""

    stop_grace: float
    """Seconds a stopped attempt gets to return before it is ended (default
    ``DEFAULT_STOP_GRACE``); the scheduler's shutdown gives every attempt that long."""

    def room(self) -> int:
        """How many more attempts ``submit`` takes now: ``capacity`` less what runs, more
        where an executor queues short attempts behind each other (the local executor
        hands a worker process a few at a time). ``submit`` beyond it may raise."""

    def submit(self, attempt: AttemptSpec) -> None:
        """Start ``attempt`` (or queue it right behind others); never waits for it. What
        happens to it is reported by later ``poll`` calls. Raises only if it cannot be
        handed over at all; the scheduler then records a crash."""

    def stop(self, token: str, reason: str) -> None:
        """Ask the attempt ``token`` to stop (its worker sees ``is_stopped`` and
        ``on_stopped()``, with ``reason``, a ``StopReason`` value); if it has not returned
        ``stop_grace`` seconds later, end it and everything it started. One not begun yet
        never runs. Its outcome (reported by ``poll``) is ``STOPPED`` with ``reason``,
        whatever the worker returned. Unknown or finished tokens are ignored."""

    def running(self) -> set[str]:
        """The tokens handed over and not yet reported finished."""

    def wait_objects(self) -> list[Any]:
        """What ``multiprocessing.connection.wait`` may select on: ready means ``poll``
        has news. Empty for an executor whose news only comes with ``poll`` itself."""

    def next_deadline(self) -> float | None:
        """The next time (``time.monotonic()``) the executor needs a ``poll()`` even if
        nothing is ready (a stop's grace running out), if any."""

    def poll(self, sink: Sink) -> None:
        """Deliver to ``sink`` everything that happened since the last poll, and carry out
        what is due (terminate attempts that ignored their stop). Never blocks."""

    def shutdown(self, grace: float, sink: Sink | None = None) -> None:
        """Stop every attempt, give them ``grace`` seconds to return, end the rest and
        every process the executor started; what they report meanwhile goes to ``sink``
        (else nowhere). The executor is not used again."""


class CodeKeeping(Protocol):
    """An executor that keeps worker code per worker process has this too (the scheduler
    looks for it): it then gets attempts without a payload."""

    def set_code_source(self, source: CodeSource) -> None:
        """Where attempts without a payload get their code (see ``CodeSource``)."""


class DiscardSink:
    """A sink that drops every report (a shutdown nobody listens to)."""

    def started(self, token: str, pid: int | None, pid_create_time: float | None) -> None:
        pass

    def progress(self, token: str, progress: dict[str, Any]) -> None:
        pass

    def finished(self, token: str, outcome: Outcome) -> None:
        pass
