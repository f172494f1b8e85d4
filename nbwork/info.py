"""What readers see of work: ``WorkState``, ``WorkInfo``, ``WorkQuery`` and ``StopReason``."""

from __future__ import annotations

import enum
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ._content import ContentTrigger
from .data import Data
from .errors import InvalidInputError
from .request import Constraints, RunAfter


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

STATE_COLOURS: dict[WorkState, str] = {
    WorkState.ENQUEUED: "#00838f", WorkState.RUNNING: "#1565c0",
    WorkState.SUCCEEDED: "#2e7d32", WorkState.FAILED: "#c62828",
    WorkState.BLOCKED: "#b26a00", WorkState.CANCELLED: "#616161",
}
"""The background colour of each state's badge (white text), in HTML and in the widgets."""


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


class UpdateResult(str, enum.Enum):
    """What ``WorkManager.update_work`` did (WorkManager's ``UpdateResult``).

    A ``str`` enum: it still equals the plain strings earlier versions returned
    (``wm.update_work(r) == "APPLIED_IMMEDIATELY"``)."""

    NOT_APPLIED = "NOT_APPLIED"
    """The work was already finished: nothing changed."""
    APPLIED_IMMEDIATELY = "APPLIED_IMMEDIATELY"
    """The work was waiting: its next run uses the new request."""
    APPLIED_FOR_NEXT_RUN = "APPLIED_FOR_NEXT_RUN"
    """The work is running: that attempt goes on as it was; the next one uses the update."""

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
    failed attempt (for a work failed because a prerequisite failed: which one);
    ``progress`` is the last one its worker reported, while it runs and, after a stop for a
    constraint, while it waits to run again (a result clears it). ``constraints`` and
    ``initial_delay`` (seconds) are the request's, as in WorkManager's ``WorkInfo``
    (``nbwork.explain.why_waiting`` uses them to say why a work waits).
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
    run_after: RunAfter = RunAfter.ALL_SUCCEEDED
    """When it runs after its prerequisites: once all succeeded (the default) or, with
    ``RunAfter.ALL_FINISHED``, once all are finished whatever they ended as."""
    dependents: tuple[str, ...] = ()
    enqueue_time: datetime | None = None
    start_time: datetime | None = None
    finish_time: datetime | None = None
    log_path: str | None = None
    is_periodic: bool = False
    constraints: Constraints = Constraints()
    initial_delay: float = 0.0
    content_triggers: tuple[ContentTrigger, ...] = ()
    """The work's content triggers (``Constraints(content_triggers=...)``)."""
    waiting_for_content: bool = False
    """True while the work waits for something under its content triggers to change."""
    triggered_content_paths: tuple[str, ...] = ()
    """The paths whose change triggered the work (sorted), once triggered."""
    unreadable_reason: str | None = None
    """Why the stored record of this work cannot be read (a damaged record); None for every
    readable work. Such a work never runs; its other fields are what the store's indexes
    still know. ``wm.prune_work(unreadable=True)`` (``nbwork prune --unreadable``) removes it."""

    @classmethod
    def unreadable(cls, id: str, reason: str, state: WorkState | None = None,
                   worker_name: str = "") -> "WorkInfo":
        """The stand-in for a work whose record cannot be read (see ``unreadable_reason``)."""
        return cls(id=id, state=state or WorkState.FAILED, worker_name=worker_name or "?",
                   error=f"the stored record of this work cannot be read: {reason}. Remove it "
                   "with 'nbwork prune --unreadable' (wm.prune_work(unreadable=True))",
                   unreadable_reason=reason)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def __str__(self) -> str:
        parts = [f"{self.worker_name.rsplit('.', 1)[-1]} {self.short_id} {self.state.value}"]
        if self.waiting_for_content:
            parts.append("waiting for content: "
                         + ", ".join(t.path for t in self.content_triggers))
        if self.progress:
            parts.append(f"progress={self.progress.to_dict()}")
        if self.output_data:
            parts.append(f"output={self.output_data.to_dict()}")
        if self.error:
            parts.append("error=" + self.error.strip().splitlines()[-1])
        return " ".join(parts)

    def _repr_pretty_(self, p: object, cycle: bool) -> None:
        # IPython's text view, also of lists of WorkInfo: the one-line summary, not the
        # dataclass repr of twenty fields.
        p.text(f"<WorkInfo {self}>")  # type: ignore[attr-defined]

    def _repr_html_(self) -> str:
        return work_infos_html([self], details=True)


def in_chain_order(infos: Iterable[WorkInfo]) -> list[WorkInfo]:
    """``infos`` in the order a person reads chains: by enqueue time, then chain by chain
    (the works linked through prerequisites), each from its first step to its last.
    (The works of one chain, or of one batch of parallel chains, share an enqueue time.)"""
    infos = list(infos)
    by_id = {i.id: i for i in infos}
    depth: dict[str, int] = {}
    group = {i.id: i.id for i in infos}  # union-find over prerequisite links

    def root(id: str) -> str:
        while group[id] != id:
            group[id] = group[group[id]]
            id = group[id]
        return id

    def depth_of(info: WorkInfo, seen: frozenset[str] = frozenset()) -> int:
        if info.id not in depth:
            parents = [by_id[p] for p in info.prerequisites if p in by_id and p not in seen]
            depth[info.id] = 1 + max((depth_of(p, seen | {info.id}) for p in parents), default=-1)
        return depth[info.id]

    for info in infos:
        for parent in info.prerequisites:
            if parent in by_id:
                group[root(parent)] = root(info.id)
    first: dict[str, str] = {}  # chain -> the smallest id of its first steps: a stable order
    for info in infos:
        if depth_of(info) == 0:
            key = root(info.id)
            first[key] = min(first.get(key, info.id), info.id)
    when = datetime.min
    return sorted(infos, key=lambda i: (i.enqueue_time or when, first.get(root(i.id), ""),
                                        depth_of(i), i.id))


def _badge(state: WorkState) -> str:
    return (f'<span style="background:{STATE_COLOURS[state]};color:#fff;padding:1px 6px;'
            f'border-radius:8px;font-size:85%">{state.value}</span>')


def _data_html(data: Data, limit: int = 120) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in data.items())
    short = text if len(text) <= limit else text[:limit - 1] + "…"
    return f'<span title="{html.escape(text)}">{html.escape(short)}</span>' if text else ""


def work_infos_html(infos: Sequence[WorkInfo], details: bool = False) -> str:
    """An HTML table of ``infos`` (in chain order) for notebooks without widgets; with
    ``details``, each work's input, output and error traceback follow its row."""
    rows = []
    for info in in_chain_order(infos):
        percent = info.progress.get("percent")
        progress = (f'<progress value="{percent}" max="100"></progress> '
                    f'{f"{percent:.1f}".removesuffix(".0")} %'
                    if isinstance(percent, (int, float)) else _data_html(info.progress))
        last_error = info.error.strip().splitlines()[-1] if info.error else ""
        cells = [f'<code title="{info.id}">{info.short_id}</code>',
                 f'<span title="{html.escape(info.worker_name)}">'
                 f'{html.escape(info.worker_name.rsplit(".", 1)[-1])}</span>',
                 _badge(info.state), progress, str(info.run_attempt_count),
                 html.escape(", ".join(sorted(info.tags))),
                 _data_html(info.output_data) + html.escape(last_error)]
        rows.append("<tr>" + "".join(f"<td {_LEFT}>{c}</td>" for c in cells) + "</tr>")
        if details:
            rows.append(
                f'<tr><td colspan="7" {_LEFT}><b>input</b> {_data_html(info.input_data) or "-"}'
                f'<br><b>output</b> {_data_html(info.output_data) or "-"}'
                + (f"<details><summary>error</summary><pre>{html.escape(info.error)}</pre>"
                   "</details>" if info.error else "") + "</td></tr>")
    head = "".join(f"<th {_LEFT}>{h}</th>" for h in
                   ("id", "worker", "state", "progress", "attempts", "tags", "output / error"))
    return (f'<table class="nbwork-infos"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


_LEFT = 'style="text-align:left;vertical-align:top"'  # notebooks right-align table cells


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
