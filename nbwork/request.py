"""Work requests and what they carry: constraints, backoff and the policies of unique work.

Requests are validated when built; an invalid request never exists. A request is only a
description: enqueueing it (``WorkManager.enqueue``) is what makes it durable.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ._content import ContentTrigger, check_content_constraints
from ._time import to_seconds
from .data import ArrayCreatingInputMerger, Data, InputMerger, OverwritingInputMerger
from .errors import InvalidInputError, InvalidRequestError
from .worker import is_worker_class, worker_name

DEFAULT_BACKOFF_DELAY = 30.0
"""Android's default backoff delay, seconds."""
MAX_BACKOFF_DELAY = 5 * 3600.0
"""Backoff is capped at five hours, as WorkManager's."""
MIN_PERIODIC_INTERVAL = 1.0
"""nbwork allows periods of one second and up (Android: 15 minutes)."""
MAX_DELAY = 100 * 365 * 86400.0
"""The longest initial delay or period, seconds (100 years): a longer one would put the
work's next run past the dates a computer can represent, so it is refused at the call."""


def _delay(value: object, what: str) -> float:
    """``to_seconds`` for a delay or interval that becomes a date (now + it)."""
    seconds = to_seconds(value, what)
    if seconds > MAX_DELAY:
        raise InvalidRequestError(
            f"{what} of {value!r} is too long to be a date: the work would never run. Use at "
            f"most {MAX_DELAY:g} s (100 years); to keep work from running, do not enqueue it")
    return seconds


def _enum_value(enum_type: type[enum.Enum], value: object, what: str) -> Any:
    if isinstance(value, enum_type):
        return value
    if isinstance(value, str) and value.upper() in enum_type.__members__:
        return enum_type[value.upper()]
    choices = ", ".join(f"{enum_type.__name__}.{m}" for m in enum_type.__members__)
    raise InvalidInputError(f"{what} {value!r} is unknown; use one of {choices}")


class BackoffPolicy(str, enum.Enum):
    """How the delay grows between retries: ``delay × n`` or ``delay × 2^(n-1)``."""

    LINEAR = "LINEAR"
    EXPONENTIAL = "EXPONENTIAL"

    @classmethod
    def parse(cls, value: object) -> "BackoffPolicy":
        return _enum_value(cls, value, "backoff_policy")


class ExistingWorkPolicy(str, enum.Enum):
    """What ``enqueue_unique_work`` does when work with the name already exists."""

    REPLACE = "REPLACE"
    KEEP = "KEEP"
    APPEND = "APPEND"
    APPEND_OR_REPLACE = "APPEND_OR_REPLACE"

    @classmethod
    def parse(cls, value: object) -> "ExistingWorkPolicy":
        return _enum_value(cls, value, "ExistingWorkPolicy")


class ExistingPeriodicWorkPolicy(str, enum.Enum):
    """What ``enqueue_unique_periodic_work`` does when the name already exists."""

    KEEP = "KEEP"
    UPDATE = "UPDATE"
    CANCEL_AND_REENQUEUE = "CANCEL_AND_REENQUEUE"

    @classmethod
    def parse(cls, value: object) -> "ExistingPeriodicWorkPolicy":
        return _enum_value(cls, value, "ExistingPeriodicWorkPolicy")


class RunAfter(str, enum.Enum):
    """When a work with prerequisites runs: an nbwork extension (WorkManager has only
    ``ALL_SUCCEEDED``), like Airflow's ``trigger_rule``.

    ``ALL_SUCCEEDED`` (the default, WorkManager's rule): once every prerequisite succeeded;
    a failed or cancelled prerequisite fails or cancels it. ``ALL_FINISHED`` (Airflow's
    ``"all_done"``): once every prerequisite is finished, whatever it ended as (SUCCEEDED,
    FAILED or CANCELLED); only a cancel that selects it cancels it. For a step that reports
    on, or cleans up after, steps that may fail.
    """

    ALL_SUCCEEDED = "ALL_SUCCEEDED"
    ALL_FINISHED = "ALL_FINISHED"

    @classmethod
    def parse(cls, value: object) -> "RunAfter":
        return _enum_value(cls, value, "run_after")


class NetworkType(str, enum.Enum):
    """The network a work needs (WorkManager's ``NetworkType``)."""

    NOT_REQUIRED = "NOT_REQUIRED"
    CONNECTED = "CONNECTED"
    UNMETERED = "UNMETERED"
    NOT_ROAMING = "NOT_ROAMING"
    METERED = "METERED"
    TEMPORARILY_UNMETERED = "TEMPORARILY_UNMETERED"

    @classmethod
    def parse(cls, value: object) -> "NetworkType":
        return _enum_value(cls, value, "network_type")


@dataclass(frozen=True)
class Constraints:
    """Conditions of the host that must hold for a work to run."""

    network_type: NetworkType = NetworkType.NOT_REQUIRED
    requires_battery_not_low: bool = False
    requires_charging: bool = False
    requires_device_idle: bool = False
    requires_storage_not_low: bool = False
    content_triggers: tuple[ContentTrigger, ...] = ()
    """Run only after something under one of these paths changed (one-time work only)."""
    trigger_content_update_delay: float | timedelta = 0.0
    """Seconds with no further change before a triggered work runs."""
    trigger_content_max_delay: float | timedelta | None = None
    """At most this many seconds after the first change (None: no cap)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "network_type", NetworkType.parse(self.network_type))
        update = to_seconds(self.trigger_content_update_delay, "trigger_content_update_delay")
        cap = to_seconds(self.trigger_content_max_delay, "trigger_content_max_delay",
                         allow_none=True)
        object.__setattr__(self, "trigger_content_update_delay", update)
        object.__setattr__(self, "trigger_content_max_delay", cap)
        object.__setattr__(self, "content_triggers",
                           check_content_constraints(self.content_triggers, update, cap))
        for name in ("requires_battery_not_low", "requires_charging", "requires_device_idle",
                     "requires_storage_not_low"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInputError(
                    f"Constraints.{name} must be True or False, not {getattr(self, name)!r}"
                )

    @property
    def is_empty(self) -> bool:
        return self == Constraints()

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "network_type": self.network_type.value,
            "requires_battery_not_low": self.requires_battery_not_low,
            "requires_charging": self.requires_charging,
            "requires_device_idle": self.requires_device_idle,
            "requires_storage_not_low": self.requires_storage_not_low,
        }
        if self.content_triggers:  # records without triggers stay as they were
            values["content_triggers"] = [t.to_dict() for t in self.content_triggers]
            values["trigger_content_update_delay"] = self.trigger_content_update_delay
            values["trigger_content_max_delay"] = self.trigger_content_max_delay
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "Constraints":
        values = dict(values or {})
        triggers = values.pop("content_triggers", ())
        constraints = cls(**{k: v for k, v in values.items()
                             if not k.startswith("trigger_content_")})
        if triggers:  # stored paths may be gone by now: no existence check
            object.__setattr__(constraints, "content_triggers",
                               tuple(ContentTrigger._from_store(t) for t in triggers))
            for key in ("trigger_content_update_delay", "trigger_content_max_delay"):
                object.__setattr__(constraints, key, values.get(key))
        return constraints


Constraints.NONE = Constraints()  # type: ignore[attr-defined]


def _check_worker(worker: object) -> None:
    from .worker import CoroutineWorker, FunctionWorker, Worker

    if worker in (Worker, CoroutineWorker, FunctionWorker):
        raise InvalidRequestError(
            f"{worker.__name__} itself has no work to do; subclass it and override do_work()"
        )
    if is_worker_class(worker):
        return

    if isinstance(worker, Worker):
        raise InvalidRequestError(
            f"got an instance of {type(worker).__name__}; pass the Worker class itself "
            f"(OneTimeWorkRequest({type(worker).__name__})), nbwork creates one per attempt"
        )
    if isinstance(worker, type) or not callable(worker):
        raise InvalidRequestError(
            f"{worker!r} is neither a Worker subclass nor a function; pass a subclass of "
            "nbwork.Worker (or CoroutineWorker) or a plain function"
        )


def _check_merger(merger: object) -> type[InputMerger]:
    if isinstance(merger, type) and issubclass(merger, InputMerger) and merger is not InputMerger:
        return merger
    raise InvalidRequestError(
        f"input_merger must be OverwritingInputMerger or ArrayCreatingInputMerger (the class), "
        f"not {merger!r}"
    )


def _check_tags(tags: Iterable[str] | str | None) -> frozenset[str]:
    if tags is None:
        return frozenset()
    if isinstance(tags, str):
        tags = [tags]
    out = []
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise InvalidRequestError(f"tags must be non-empty strings, not {tag!r}")
        out.append(tag)
    return frozenset(out)


class WorkRequest:
    """What one-time and periodic requests share. Build a subclass, not this."""

    def __init__(
        self,
        worker: type | Callable[..., Any],
        *,
        input_data: Data | Mapping[str, Any] | None = None,
        tags: Iterable[str] | str | None = None,
        constraints: Constraints | None = None,
        initial_delay: float | timedelta = 0,
        backoff_policy: BackoffPolicy | str = BackoffPolicy.EXPONENTIAL,
        backoff_delay: float | timedelta = DEFAULT_BACKOFF_DELAY,
        keep_results_for: float | timedelta | None = None,
        id: str | None = None,
    ) -> None:
        _check_worker(worker)
        self.worker = worker
        self.worker_name = worker_name(worker)
        self.input_data = Data.from_mapping(input_data)
        self.tags = _check_tags(tags)
        if constraints is None:
            constraints = Constraints()
        if not isinstance(constraints, Constraints):
            raise InvalidRequestError(
                f"constraints must be a nbwork.Constraints, not {type(constraints).__name__}"
            )
        self.constraints = constraints
        self.initial_delay = _delay(initial_delay, "initial_delay")
        self.backoff_policy = BackoffPolicy.parse(backoff_policy)
        self.backoff_delay = min(to_seconds(backoff_delay, "backoff_delay"), MAX_BACKOFF_DELAY)
        self.keep_results_for = to_seconds(keep_results_for, "keep_results_for", allow_none=True)
        if id is None:
            id = str(uuid.uuid4())
        else:
            try:
                id = str(uuid.UUID(str(id)))
            except ValueError:
                raise InvalidRequestError(f"id must be a UUID string, not {id!r}") from None
        self.id: str = id

    run_after: RunAfter = RunAfter.ALL_SUCCEEDED
    """When the work runs after its prerequisites (one-time work only; see ``RunAfter``)."""

    @property
    def is_periodic(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.worker_name}, id={self.id[:8]})"


class OneTimeWorkRequest(WorkRequest):
    """Work that runs once (with retries if it asks for them).

    ``OneTimeWorkRequest(worker, input_data=..., tags=[...], constraints=...,
    initial_delay=..., backoff_policy=..., backoff_delay=..., input_merger=...,
    keep_results_for=..., run_after=...)``; or ``OneTimeWorkRequest.Builder(worker)...build()``.
    ``run_after`` (nbwork's extension, default ``RunAfter.ALL_SUCCEEDED``): with
    ``RunAfter.ALL_FINISHED`` (or ``"all_finished"``) the work runs once all its
    prerequisites are finished, even if some failed or were cancelled.
    """

    def __init__(
        self,
        worker: type | Callable[..., Any],
        *,
        input_merger: type[InputMerger] = OverwritingInputMerger,
        run_after: RunAfter | str = RunAfter.ALL_SUCCEEDED,
        **kwargs: Any,
    ) -> None:
        super().__init__(worker, **kwargs)
        self.input_merger = _check_merger(input_merger)
        self.run_after = RunAfter.parse(run_after)

    @classmethod
    def from_worker(cls, worker: type | Callable[..., Any]) -> "OneTimeWorkRequest":
        """A request with no input and defaults (Android's ``OneTimeWorkRequest.from``)."""
        return cls(worker)

    class Builder:
        """Android-style builder with snake_case setters, for teaching."""

        def __init__(self, worker: type | Callable[..., Any]) -> None:
            _check_worker(worker)
            self._worker = worker
            self._kwargs: dict[str, Any] = {"tags": set()}

        def set_input_data(self, data: Data | Mapping[str, Any]) -> "OneTimeWorkRequest.Builder":
            self._kwargs["input_data"] = Data.from_mapping(data)
            return self

        def add_tag(self, tag: str) -> "OneTimeWorkRequest.Builder":
            self._kwargs["tags"] |= _check_tags([tag])
            return self

        def set_constraints(self, constraints: Constraints) -> "OneTimeWorkRequest.Builder":
            self._kwargs["constraints"] = constraints
            return self

        def set_initial_delay(self, delay: float | timedelta) -> "OneTimeWorkRequest.Builder":
            self._kwargs["initial_delay"] = _delay(delay, "initial_delay")
            return self

        def set_backoff_criteria(self, policy: BackoffPolicy | str,
                                 delay: float | timedelta) -> "OneTimeWorkRequest.Builder":
            self._kwargs["backoff_policy"] = BackoffPolicy.parse(policy)
            self._kwargs["backoff_delay"] = to_seconds(delay, "backoff_delay")
            return self

        def set_input_merger(self, merger: type[InputMerger]) -> "OneTimeWorkRequest.Builder":
            self._kwargs["input_merger"] = _check_merger(merger)
            return self

        def keep_results_for(self, duration: float | timedelta) -> "OneTimeWorkRequest.Builder":
            self._kwargs["keep_results_for"] = to_seconds(duration, "keep_results_for")
            return self

        def set_run_after(self, run_after: RunAfter | str) -> "OneTimeWorkRequest.Builder":
            """nbwork's extension: ``RunAfter.ALL_FINISHED`` runs the work once its
            prerequisites are finished, whatever they ended as."""
            self._kwargs["run_after"] = RunAfter.parse(run_after)
            return self

        def set_id(self, id: str) -> "OneTimeWorkRequest.Builder":
            self._kwargs["id"] = id
            return self

        def build(self) -> "OneTimeWorkRequest":
            return OneTimeWorkRequest(self._worker, **self._kwargs)


class PeriodicWorkRequest(WorkRequest):
    """Work that repeats every ``repeat_interval`` seconds, inside a ``flex_interval``
    window at the end of each period, until cancelled."""

    def __init__(
        self,
        worker: type | Callable[..., Any],
        repeat_interval: float | timedelta,
        flex_interval: float | timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        interval = _delay(repeat_interval, "repeat_interval")
        if interval < MIN_PERIODIC_INTERVAL:
            raise InvalidRequestError(
                f"repeat_interval must be at least {MIN_PERIODIC_INTERVAL:g} s, not {interval:g}"
            )
        flex = interval if flex_interval is None else _delay(flex_interval, "flex_interval")
        if flex <= 0 or flex > interval:
            raise InvalidRequestError(
                f"flex_interval must be more than 0 and at most repeat_interval ({interval:g} s), "
                f"not {flex:g} s"
            )
        constraints = kwargs.get("constraints")
        if isinstance(constraints, Constraints) and constraints.content_triggers:
            raise InvalidRequestError(
                "periodic work cannot have content_triggers (as in WorkManager, a triggered "
                "work is one-time): use a OneTimeWorkRequest, and enqueue a new one (e.g. as "
                "unique work with REPLACE or KEEP) when it has run")
        if "input_merger" in kwargs:
            raise InvalidRequestError(
                "periodic work has no prerequisites, so it takes no input_merger; drop it "
                "(its input_data is used as is)"
            )
        if "run_after" in kwargs:
            raise InvalidRequestError(
                "periodic work has no prerequisites, so it takes no run_after; drop it "
                "(run_after is for a OneTimeWorkRequest in a chain)"
            )
        kwargs.setdefault("backoff_delay", min(DEFAULT_BACKOFF_DELAY, interval))
        super().__init__(worker, **kwargs)
        if self.backoff_delay > interval:
            # A retry scheduled after the next period would be overtaken by the period itself.
            raise InvalidRequestError(
                f"backoff_delay ({self.backoff_delay:g} s) is longer than repeat_interval "
                f"({interval:g} s), so a retry would come after the next period anyway; pass "
                f"backoff_delay=... of at most {interval:g} s (the default is "
                f"{min(DEFAULT_BACKOFF_DELAY, interval):g} s here)"
            )
        self.repeat_interval = interval
        self.flex_interval = flex
        self.input_merger = OverwritingInputMerger

    @property
    def is_periodic(self) -> bool:
        return True


MERGER_NAMES = {OverwritingInputMerger: "OverwritingInputMerger",
                ArrayCreatingInputMerger: "ArrayCreatingInputMerger"}
