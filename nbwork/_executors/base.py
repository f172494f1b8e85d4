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


class Executor(Protocol):
    """Runs attempts. ``poll()`` delivers what happened to the sink; ``wait_objects()``
    are what the scheduler selects on to know when to poll."""

    capacity: int

    def submit(self, attempt: AttemptSpec) -> None: ...

    def stop(self, token: str, reason: str) -> None:
        """Ask a running attempt to stop; terminate it if it ignores the request."""

    def running(self) -> set[str]: ...

    def wait_objects(self) -> list[Any]: ...

    def next_deadline(self) -> float | None:
        """The next time (``time.monotonic()``) the executor needs a ``poll()``, if any."""

    def poll(self, sink: Sink) -> None: ...

    def shutdown(self, grace: float, sink: Sink | None = None) -> None:
        """Stop every attempt, give them ``grace`` seconds to return, end the rest; what
        they report meanwhile goes to ``sink`` (else nowhere)."""


class DiscardSink:
    """A sink that drops every report (a shutdown nobody listens to)."""

    def started(self, token: str, pid: int | None, pid_create_time: float | None) -> None:
        pass

    def progress(self, token: str, progress: dict[str, Any]) -> None:
        pass

    def finished(self, token: str, outcome: Outcome) -> None:
        pass
