"""What a work runs: ``Worker``, ``CoroutineWorker``, plain functions, and ``Result``.

A worker sees its input, its id, tags and attempt count, can report progress and learns
when it is stopped. The executor builds ``WorkerParameters`` for each attempt; nothing
here knows about processes or the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from .data import Data
from .errors import InvalidInputError


class Result:
    """What ``do_work`` returns: ``Result.success(output)``, ``failure(output)`` or ``retry()``."""

    SUCCESS = "success"
    FAILURE = "failure"
    RETRY = "retry"

    __slots__ = ("kind", "output_data")

    def __init__(self, kind: str, output_data: Data | Mapping[str, Any] | None = None) -> None:
        if kind not in (self.SUCCESS, self.FAILURE, self.RETRY):
            raise InvalidInputError(
                f"Result kind must be 'success', 'failure' or 'retry', not {kind!r}; "
                "use Result.success(), Result.failure() or Result.retry()"
            )
        self.kind = kind
        self.output_data = Data.from_mapping(output_data)

    @classmethod
    def success(cls, output_data: Data | Mapping[str, Any] | None = None) -> "Result":
        """The work succeeded; ``output_data`` flows into its dependents' input."""
        return cls(cls.SUCCESS, output_data)

    @classmethod
    def failure(cls, output_data: Data | Mapping[str, Any] | None = None) -> "Result":
        """The work failed for good; its dependents fail too."""
        return cls(cls.FAILURE, output_data)

    @classmethod
    def retry(cls) -> "Result":
        """Run the work again after its backoff delay."""
        return cls(cls.RETRY)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Result):
            return NotImplemented
        return (self.kind, self.output_data) == (other.kind, other.output_data)

    def __hash__(self) -> int:
        return hash((self.kind, self.output_data))

    def __repr__(self) -> str:
        if self.kind == self.RETRY:
            return "Result.retry()"
        return f"Result.{self.kind}({self.output_data.to_dict()!r})"


class WorkerParameters:
    """Everything one attempt of a worker gets to know (WorkManager's ``WorkerParameters``)."""

    def __init__(
        self,
        id: str,
        input_data: Data | Mapping[str, Any] | None = None,
        tags: frozenset[str] | tuple[str, ...] = (),
        run_attempt_count: int = 0,
        generation: int = 0,
        progress_sink: Callable[[Data], None] | None = None,
        triggered_content_paths: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.id = id
        self.triggered_content_paths = tuple(sorted(set(triggered_content_paths)))
        self.input_data = Data.from_mapping(input_data)
        self.tags = frozenset(tags)
        self.run_attempt_count = run_attempt_count
        self.generation = generation
        self.progress_sink = progress_sink
        self.stop_reason: str | None = None
        self.stopped = False
        self._stop_event: threading.Event | None = None
        self._stop_callbacks: list[Callable[[], None]] = []
        self._stop_lock = threading.Lock()

    @property
    def stop_event(self) -> threading.Event:
        """Set once the attempt is stopped: ``wait()`` on it to sleep until then. Made on
        first use: building an ``Event`` for every attempt cost a no-op attempt a few
        percent of its time."""
        with self._stop_lock:
            if self._stop_event is None:
                self._stop_event = threading.Event()
                if self.stopped:
                    self._stop_event.set()
            return self._stop_event

    def report_progress(self, progress: Data | Mapping[str, Any]) -> None:
        data = Data.from_mapping(progress)
        if self.progress_sink is not None:
            self.progress_sink(data)

    def on_stop(self, callback: Callable[[], None]) -> None:
        self._stop_callbacks.append(callback)

    def stop(self, reason: str) -> bool:
        """Mark the attempt stopped and run the stop callbacks once; False if already stopped."""
        with self._stop_lock:
            if self.stopped:
                return False
            self.stop_reason = reason
            self.stopped = True
            if self._stop_event is not None:
                self._stop_event.set()
        # Every callback runs even if one raises (an on_stopped() that raises must not keep a
        # coroutine from being cancelled); the first error is raised afterwards.
        errors: list[Exception] = []
        for callback in list(self._stop_callbacks):
            try:
                callback()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return True


_current: contextvars.ContextVar[WorkerParameters | None] = contextvars.ContextVar(
    "nbwork_current_work", default=None
)


def set_progress(progress: Data | Mapping[str, Any]) -> None:
    """Report progress from inside a function worker (``Worker`` has ``self.set_progress``)."""
    params = _current.get()
    if params is None:
        raise InvalidInputError(
            "nbwork.set_progress() was called outside a running work; call it from the "
            "function (or worker) that nbwork runs"
        )
    params.report_progress(progress)


def is_stopped() -> bool:
    """True when the running work has been asked to stop (for function workers)."""
    params = _current.get()
    return params is not None and params.stopped


class Worker:
    """Subclass and override ``do_work()``; it runs in a background worker process.

    ``self.input_data``, ``self.id``, ``self.tags``, ``self.run_attempt_count`` describe the
    attempt; ``self.set_progress({...})`` reports progress; ``self.is_stopped`` turns true
    when the work is cancelled, and ``on_stopped()`` is called once then.
    """

    def __init__(self, params: WorkerParameters) -> None:
        self._params = params
        params.on_stop(self.on_stopped)

    @property
    def id(self) -> str:
        return self._params.id

    @property
    def input_data(self) -> Data:
        return self._params.input_data

    @property
    def tags(self) -> frozenset[str]:
        return self._params.tags

    @property
    def run_attempt_count(self) -> int:
        """How many attempts ran before this one (0 on the first run)."""
        return self._params.run_attempt_count

    @property
    def generation(self) -> int:
        return self._params.generation

    @property
    def triggered_content_paths(self) -> tuple[str, ...]:
        """The paths whose change triggered this work (sorted, each once); empty for a
        work without content triggers (WorkManager's ``getTriggeredContentUris``)."""
        return self._params.triggered_content_paths

    @property
    def is_stopped(self) -> bool:
        return self._params.stopped

    @property
    def stop_reason(self) -> str | None:
        return self._params.stop_reason

    def set_progress(self, progress: Data | Mapping[str, Any]) -> None:
        """Publish progress; readers see it in ``WorkInfo.progress`` while the work runs."""
        self._params.report_progress(progress)

    def do_work(self) -> Result:
        raise NotImplementedError(f"{type(self).__name__} must override do_work()")

    def on_stopped(self) -> None:
        """Called once when the work is stopped (cancelled); override to release resources."""

    def run(self) -> Result:
        """Run ``do_work`` with ``nbwork.set_progress`` bound to this attempt (executor use)."""
        token = _current.set(self._params)
        try:
            return _as_result(self.do_work())
        finally:
            _current.reset(token)


class CoroutineWorker(Worker):
    """A worker whose ``do_work`` is ``async``; cancelling the work cancels the coroutine."""

    async def do_work(self) -> Result:  # type: ignore[override]
        raise NotImplementedError(f"{type(self).__name__} must override async do_work()")

    def run(self) -> Result:
        token = _current.set(self._params)
        try:
            return _as_result(asyncio.run(self._run_cancellable()))
        finally:
            _current.reset(token)

    async def _run_cancellable(self) -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(self.do_work())

        def cancel() -> None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop is closed: the coroutine has already finished
                pass

        self._params.on_stop(cancel)
        if self.is_stopped:
            task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            if self.is_stopped:
                return Result.failure({"stopped": True})
            raise


class FunctionWorker(Worker):
    """Runs a plain (or ``async``) function: input keys arrive as keyword arguments."""

    function: Callable[..., Any]

    def __init__(self, params: WorkerParameters, function: Callable[..., Any]) -> None:
        super().__init__(params)
        self.function = function

    def do_work(self) -> Result:
        kwargs = function_arguments(
            self.function, self.input_data,
            {"triggered_content_paths": list(self.triggered_content_paths)})
        value = self.function(**kwargs)
        if inspect.isawaitable(value):
            value = asyncio.run(_await(value))
        return _as_result(value)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def function_arguments(function: Callable[..., Any], data: Data,
                       extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments a function worker is called with: the input keys it accepts,
    and those of ``extra`` (what nbwork tells about the attempt, such as
    ``triggered_content_paths``) that it names as parameters."""
    extra = dict(extra or {})
    parameters = _parameters_of(function)
    if parameters is None:
        return data.to_dict()
    names, accepted, required = parameters
    given = {name: value for name, value in extra.items()
             if name in names and name not in data}
    missing = [name for name in required if name not in data and name not in given]
    if missing:
        raise InvalidInputError(
            f"function worker {getattr(function, '__qualname__', function)!r} needs input "
            f"{', '.join(repr(m) for m in missing)} but its input data has only "
            f"{sorted(data) or 'no keys'}; add them to input_data or give them defaults"
        )
    return {**given, **{key: data[key] for key in data if key in accepted}}


_Parameters = tuple[frozenset[str], frozenset[str], tuple[str, ...]]
_PARAMETERS: weakref.WeakKeyDictionary[Any, _Parameters | None] = weakref.WeakKeyDictionary()


def _parameters_of(function: Callable[..., Any]) -> _Parameters | None:
    """(every parameter name, those an input key can fill, those of them without a default)
    of ``function``; None when it takes any keyword (or has no signature). Kept per function
    while it lives: ``inspect.signature`` was a tenth of a worker process's time per
    no-op attempt."""
    try:
        return _PARAMETERS[function]
    except (KeyError, TypeError):  # (TypeError: it cannot be weakly referenced)
        pass
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        parameters = None
    else:
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            parameters = None
        else:
            accepted = [p for p in params if p.kind in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
            parameters = (frozenset(p.name for p in params),
                          frozenset(p.name for p in accepted),
                          tuple(p.name for p in accepted if p.default is inspect.Parameter.empty))
    with contextlib.suppress(TypeError):
        _PARAMETERS[function] = parameters
    return parameters


def _as_result(value: Any) -> Result:
    if isinstance(value, Result):
        return value
    if value is None:
        return Result.success()
    if isinstance(value, Mapping):
        return Result.success(value)
    raise InvalidInputError(
        f"a worker returned a {type(value).__name__} ({value!r:.80}); return a Result, a "
        "mapping of output data, or None"
    )


def is_worker_class(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, Worker)


def worker_name(worker: object) -> str:
    """A readable name: ``module.QualName`` (``__main__`` shown as is)."""
    module = getattr(worker, "__module__", None) or "?"
    name = getattr(worker, "__qualname__", None) or getattr(worker, "__name__", None)
    if name is None:
        name = type(worker).__qualname__
    return f"{module}.{name}"


def instantiate(worker: object, params: WorkerParameters) -> Worker:
    """The Worker object one attempt runs: a subclass instance or a function wrapper."""
    if is_worker_class(worker):
        return worker(params)  # type: ignore[operator]
    if callable(worker):
        return FunctionWorker(params, worker)  # type: ignore[arg-type]
    raise InvalidInputError(
        f"{worker!r} is neither a Worker subclass nor a callable; pass a Worker subclass "
        "(the class, not an instance) or a function"
    )
