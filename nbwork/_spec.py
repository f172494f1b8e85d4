"""``WorkSpec``: the stored record of one work (readers get ``WorkInfo`` snapshots of it).

Records carry a schema version and tolerate older ones: a scheduler may outlive the kernel
code that wrote them, so unknown keys are kept out and missing keys take defaults.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ._content import CONTENT_WAIT, triggers_of, waits_for_content
from .data import Data
from .info import StopReason, WorkInfo, WorkState
from .request import Constraints, RunAfter

SCHEMA_VERSION = 1
RECORD_LAYOUT = 2
"""How this version stores a record: a tuple, this number then the values of
``RECORD_FIELDS`` in order (the state by its value, the attempt as a tuple). Layout 1, of
the first versions, was a dict of the fields: twice the bytes (every record spelled out
its 39 field names), and decoding one took 21 us against 4.5, paid by every write and read
of every work. Both are read."""


@dataclass
class Attempt:
    """The attempt in flight: its fencing token and the process that runs it."""

    token: str
    started_at: float
    pid: int | None = None
    pid_create_time: float | None = None


@dataclass
class WorkSpec:
    id: str
    worker_name: str
    code_key: str
    state: WorkState = WorkState.ENQUEUED
    input: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    unique_name: str | None = None
    prerequisites: tuple[str, ...] = ()
    dependents: tuple[str, ...] = ()
    input_merger: str = "OverwritingInputMerger"
    # RunAfter's value: older records, written before the field existed, read as the default.
    run_after: str = "ALL_SUCCEEDED"
    constraints: dict[str, Any] = field(default_factory=dict)
    initial_delay: float = 0.0
    backoff_policy: str = "EXPONENTIAL"
    backoff_delay: float = 30.0
    keep_results_for: float | None = None
    repeat_interval: float | None = None
    flex_interval: float | None = None
    run_attempt_count: int = 0
    period_count: int = 0
    generation: int = 0
    consecutive_crashes: int = 0
    enqueue_time: float = 0.0
    enqueue_order: int = 0  # its place in its enqueue call: a chain reads in enqueue order
    last_enqueue_time: float = 0.0
    next_run_at: float = 0.0
    start_time: float | None = None
    finish_time: float | None = None
    stop_reason: str | None = None
    error: str | None = None
    attempt: Attempt | None = None
    log_name: str | None = None
    initial_delay_met: bool = False  # TestDriver: the initial delay counts as elapsed
    constraints_met: bool = False  # TestDriver: the constraints count as met
    backing_off: bool = False  # waits out its backoff after a retry (from last_enqueue_time)
    # Content triggers: {"paths": [changed paths], "first": time, "last": time} once
    # something under a trigger changed (see _content.py); {} before.
    content: dict[str, Any] = field(default_factory=dict)
    v: int = SCHEMA_VERSION

    @property
    def is_periodic(self) -> bool:
        return self.repeat_interval is not None

    @property
    def is_finished(self) -> bool:
        return self.state.is_finished

    def to_dict(self) -> dict[str, Any]:
        values = dict(self.__dict__)  # exactly the fields (no slots, no extra attributes)
        values["state"] = self.state.value
        attempt = self.attempt
        values["attempt"] = {name: getattr(attempt, name) for name in _ATTEMPT_FIELDS} if (
            attempt) else None
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "WorkSpec":
        # Records written by this version have exactly the fields: copy them in C.
        kept = dict(values) if values.keys() <= _FIELDS else {
            k: v for k, v in values.items() if k in _FIELDS}
        kept["state"] = WorkState(kept.get("state", "ENQUEUED"))
        attempt = kept.get("attempt")
        kept["attempt"] = Attempt(**attempt) if attempt else None
        for name in ("tags", "prerequisites", "dependents"):
            kept[name] = tuple(kept.get(name, ()))
        kept["v"] = SCHEMA_VERSION
        return cls(**kept)

    def to_record(self) -> tuple:
        """What the store keeps of this work (``RECORD_LAYOUT``)."""
        values = list(_record_values(self.__dict__))
        values[_STATE_AT] = self.state.value
        attempt = self.attempt
        if attempt is not None:
            values[_ATTEMPT_AT] = _attempt_values(attempt)
        return (RECORD_LAYOUT, *values)

    @classmethod
    def from_record(cls, record: Any) -> "WorkSpec":
        """The work a stored record describes, of either layout; ``ValueError`` (or
        ``TypeError``) for anything else."""
        if type(record) is dict:
            return cls.from_dict(record)
        if type(record) is not tuple or len(record) != _RECORD_LENGTH \
                or record[0] != RECORD_LAYOUT:
            raise ValueError("not a work record of a layout this version reads (layout "
                             f"{record[0] if type(record) is tuple and record else '?'})")
        values = dict(zip(RECORD_FIELDS, record[1:], strict=True))
        state = _STATES.get(values["state"])
        if state is None:
            raise ValueError(f"unknown state {values['state']!r}")
        values["state"] = state
        attempt = values["attempt"]
        if attempt is not None:
            values["attempt"] = Attempt(*attempt)
        values["v"] = SCHEMA_VERSION
        spec = cls.__new__(cls)
        spec.__dict__ = values
        return spec

    def copy(self) -> "WorkSpec":
        return WorkSpec.from_dict(self.to_dict())

    def to_info(self, log_dir: str | None = None) -> WorkInfo:
        state = self.state
        waiting = (state is WorkState.ENQUEUED and self.next_run_at
                   and self.next_run_at < CONTENT_WAIT)
        return _frozen_info({
            "id": self.id,
            "state": state,
            "output_data": Data._from_store(self.output),
            "progress": (Data._from_store(self.progress) if state in _SHOWS_PROGRESS
                         else Data.EMPTY),
            "tags": frozenset(self.tags),
            "run_attempt_count": self.run_attempt_count,
            "generation": self.generation,
            "next_schedule_time": _when(self.next_run_at) if waiting else None,
            "stop_reason": StopReason(self.stop_reason) if self.stop_reason else None,
            "error": self.error,
            "unique_work_name": self.unique_name,
            "worker_name": self.worker_name,
            "input_data": Data._from_store(self.input),
            "prerequisites": self.prerequisites,
            "run_after": _run_after_of(self.run_after),
            "dependents": self.dependents,
            "enqueue_time": _when(self.enqueue_time),
            "start_time": _when(self.start_time),
            "finish_time": _when(self.finish_time),
            "log_path": f"{log_dir}/{self.log_name}" if log_dir and self.log_name else None,
            "is_periodic": self.is_periodic,
            "constraints": _constraints_of(self.constraints),
            "initial_delay": self.initial_delay,
            "content_triggers": triggers_of(self.constraints),
            "waiting_for_content": (state in (WorkState.ENQUEUED, WorkState.BLOCKED)
                                    and waits_for_content(self)),
            "triggered_content_paths": tuple(self.content.get("paths", ())),
            "unreadable_reason": None,
        })


def _frozen_info(values: dict[str, Any]) -> WorkInfo:
    """A ``WorkInfo`` of ``values`` (every one of its fields), without the frozen
    dataclass's ``__init__``, which sets each of its 27 fields through
    ``object.__setattr__``: 9 us of the 19 a ``to_info`` took on a slow machine, paid for
    every work of every query, wait and refresh."""
    info = object.__new__(WorkInfo)
    info.__dict__.update(values)
    return info


def _when(ts: float | None) -> datetime | None:
    if not ts:
        return None
    try:
        return datetime.fromtimestamp(ts)
    except (OverflowError, ValueError, OSError):  # past any date (an older record)
        return datetime.max if ts > 0 else datetime.min


def _run_after_of(value: str) -> RunAfter:
    try:
        return RunAfter(value)
    except ValueError:  # a rule of a later version: shown as the rule this version applies
        return RunAfter.ALL_SUCCEEDED


_SHOWS_PROGRESS = frozenset({WorkState.RUNNING, WorkState.ENQUEUED})
"""An ENQUEUED work shows the progress kept from an attempt stopped for a constraint."""
# Field names, computed once: records are converted on every store read and write.
@functools.lru_cache(maxsize=64)
def _cached_constraints(items: tuple[tuple[str, Any], ...]) -> Constraints:
    return Constraints.from_dict(dict(items))


def _constraints_of(values: dict[str, Any]) -> Constraints:
    """The ``Constraints`` of a record, built once per distinct value: every read of every
    work makes a ``WorkInfo``, and almost all works share a few constraint sets."""
    try:
        return _cached_constraints(tuple(values.items()))
    except TypeError:  # a value that cannot be a cache key (a list): build it each time
        return Constraints.from_dict(values)


_FIELDS = frozenset(f.name for f in dataclasses.fields(WorkSpec))
RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(WorkSpec) if f.name != "v")
"""The fields a record of ``RECORD_LAYOUT`` stores, in order (``v`` is the layout's)."""
_record_values = operator.itemgetter(*RECORD_FIELDS)
_RECORD_LENGTH = 1 + len(RECORD_FIELDS)
_STATE_AT, _ATTEMPT_AT = RECORD_FIELDS.index("state"), RECORD_FIELDS.index("attempt")
_STATES = {state.value: state for state in WorkState}
_ATTEMPT_FIELDS = tuple(f.name for f in dataclasses.fields(Attempt))
_attempt_values = operator.attrgetter(*_ATTEMPT_FIELDS)  # in the order Attempt(*values) takes
