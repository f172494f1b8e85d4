"""What readers see of work: ``WorkState``, ``WorkInfo``, ``WorkQuery`` and ``StopReason``."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from .data import Data
from .errors import InvalidInputError


class WorkState(str, enum.Enum):
    """The lifecycle of a work, as WorkManager's ``WorkInfo.State``."""

    ENQUEUED = "ENQUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    BLOCKED = "BLOCKED"
    CANCELLED = "CANCELLED"

    @property
    def is_finished(self) -> bool:
        """SUCCEEDED, FAILED and CANCELLED are terminal: the state never changes again."""
        return self in (WorkState.SUCCEEDED, WorkState.FAILED, WorkState.CANCELLED)

    def __str__(self) -> str:
        return self.value


FINISHED_STATES = frozenset(s for s in WorkState if s.is_finished)
UNFINISHED_STATES = frozenset(s for s in WorkState if not s.is_finished)


class StopReason(str, enum.Enum):
    """Why a running attempt was stopped (WorkManager's ``WorkInfo.STOP_REASON_*``)."""

    CANCELLED_BY_APP = "CANCELLED_BY_APP"
    CONSTRAINT_CHARGING = "CONSTRAINT_CHARGING"
    CONSTRAINT_BATTERY_NOT_LOW = "CONSTRAINT_BATTERY_NOT_LOW"
    CONSTRAINT_DEVICE_IDLE = "CONSTRAINT_DEVICE_IDLE"
    CONSTRAINT_CONNECTIVITY = "CONSTRAINT_CONNECTIVITY"
    CONSTRAINT_STORAGE_NOT_LOW = "CONSTRAINT_STORAGE_NOT_LOW"
    TIMEOUT = "TIMEOUT"
    SCHEDULER_RESTARTED = "SCHEDULER_RESTARTED"
    UPDATED = "UPDATED"

    def __str__(self) -> str:
        return self.value


def as_state(value: object) -> WorkState:
    if isinstance(value, WorkState):
        return value
    if isinstance(value, str) and value.upper() in WorkState.__members__:
        return WorkState[value.upper()]
    raise InvalidInputError(
        f"{value!r} is not a WorkState; use one of {', '.join(s.name for s in WorkState)}"
    )


@dataclass(frozen=True)
class WorkInfo:
    """A snapshot of one work, as WorkManager's ``WorkInfo``.

    Times are ``datetime`` (local time) or None. ``error`` holds the traceback text of a
    failed attempt; ``progress`` is empty unless the work is RUNNING.
    """

    id: str
    state: WorkState
    output_data: Data = Data.EMPTY
    progress: Data = Data.EMPTY
    tags: frozenset[str] = frozenset()
    run_attempt_count: int = 0
    generation: int = 0
    next_schedule_time: datetime | None = None
    stop_reason: StopReason | None = None
    error: str | None = None
    unique_work_name: str | None = None
    worker_name: str = ""
    input_data: Data = Data.EMPTY
    prerequisites: tuple[str, ...] = ()
    dependents: tuple[str, ...] = ()
    enqueue_time: datetime | None = None
    start_time: datetime | None = None
    finish_time: datetime | None = None
    log_path: str | None = None
    is_periodic: bool = False

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def __str__(self) -> str:
        parts = [f"{self.worker_name.rsplit('.', 1)[-1]} {self.short_id} {self.state.value}"]
        if self.progress:
            parts.append(f"progress={self.progress.to_dict()}")
        if self.output_data:
            parts.append(f"output={self.output_data.to_dict()}")
        if self.error:
            parts.append("error=" + self.error.strip().splitlines()[-1])
        return " ".join(parts)


def _strings(values: Iterable[str] | str | None, what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        return (values,)
    out = tuple(values)
    for value in out:
        if not isinstance(value, str):
            raise InvalidInputError(f"WorkQuery {what} must be strings, not {value!r}")
    return out


@dataclass(frozen=True)
class WorkQuery:
    """Select work: a work matches when it matches every non-empty field, and a field
    matches when any of its values does (WorkManager's ``WorkQuery``). All empty: all work."""

    ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    unique_work_names: tuple[str, ...] = ()
    states: tuple[WorkState, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", _strings(self.ids, "ids"))
        object.__setattr__(self, "tags", _strings(self.tags, "tags"))
        object.__setattr__(self, "unique_work_names",
                           _strings(self.unique_work_names, "unique_work_names"))
        states = (self.states,) if isinstance(self.states, (str, WorkState)) else self.states
        object.__setattr__(self, "states", tuple(as_state(s) for s in (states or ())))

    @classmethod
    def from_ids(cls, *ids: str) -> "WorkQuery":
        return cls(ids=ids)

    @classmethod
    def from_tags(cls, *tags: str) -> "WorkQuery":
        return cls(tags=tags)

    @classmethod
    def from_unique_work_names(cls, *names: str) -> "WorkQuery":
        return cls(unique_work_names=names)

    @classmethod
    def from_states(cls, *states: WorkState) -> "WorkQuery":
        return cls(states=states)
