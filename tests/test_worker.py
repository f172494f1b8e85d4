"""Unit tests of ``nbwork.worker``: Result, and workers run in-process (no scheduler)."""

from __future__ import annotations

import asyncio
import threading

import pytest

import nbwork
from nbwork.data import Data
from nbwork.errors import DataError, InvalidInputError
from nbwork.worker import (
    CoroutineWorker,
    FunctionWorker,
    Result,
    Worker,
    WorkerParameters,
    function_arguments,
    instantiate,
    is_stopped,
    set_progress,
)


def run(worker, input_data=None, **kwargs) -> Result:
    return instantiate(worker, WorkerParameters("work-1", input_data, **kwargs)).run()


# --- Result -----------------------------------------------------------------------------


def test_result_factories():
    assert Result.success().kind == "success"
    assert Result.failure().kind == "failure"
    assert Result.retry().kind == "retry"
    assert Result.success().output_data == Data()
    assert Result.success({"a": 1}).output_data == Data({"a": 1})
    assert isinstance(Result.failure({"why": "x"}).output_data, Data)
    assert Result.retry().output_data == Data()


def test_result_equality_and_hash():
    assert Result.success({"a": 1}) == Result.success(Data({"a": 1}))
    assert hash(Result.success({"a": 1})) == hash(Result.success({"a": 1}))
    assert Result.success() == Result.success({})
    assert Result.retry() == Result.retry()
    assert Result.success({"a": 1}) != Result.failure({"a": 1})
    assert Result.success({"a": 1}) != Result.success({"a": 2})
    assert Result.success({"ok": True}) != Result.success({"ok": 1})
    assert Result.success() != Result.retry()
    assert Result.success() != "success"
    assert len({Result.retry(), Result.retry(), Result.success()}) == 2


def test_result_repr():
    assert repr(Result.success({"a": 1})) == "Result.success({'a': 1})"
    assert repr(Result.failure()) == "Result.failure({})"
    assert repr(Result.retry()) == "Result.retry()"


def test_result_kind_is_checked():
    with pytest.raises(InvalidInputError) as caught:
        Result("done")
    assert "'done'" in str(caught.value)
    assert "Result.success()" in str(caught.value)


def test_result_output_must_be_valid_data():
    with pytest.raises(DataError, match="'img'"):
        Result.success({"img": object()})


# --- Worker subclasses ------------------------------------------------------------------


class EchoWorker(Worker):
    def do_work(self) -> Result:
        return Result.success({
            "id": self.id,
            "input": self.input_data["x"],
            "tags": sorted(self.tags),
            "attempt": self.run_attempt_count,
            "generation": self.generation,
            "stopped": self.is_stopped,
        })


def test_a_worker_subclass_sees_its_attempt():
    result = run(EchoWorker, {"x": "hello"}, tags=("b", "a"), run_attempt_count=2, generation=3)
    assert result == Result.success({"id": "work-1", "input": "hello", "tags": ["a", "b"],
                                     "attempt": 2, "generation": 3, "stopped": False})


def test_instantiate_builds_the_worker_class():
    params = WorkerParameters("w")
    worker = instantiate(EchoWorker, params)
    assert type(worker) is EchoWorker
    assert worker.stop_reason is None


class AsyncEchoWorker(CoroutineWorker):
    async def do_work(self) -> Result:
        await asyncio.sleep(0)
        return Result.success({"doubled": self.input_data["n"] * 2})


def test_a_coroutine_worker_runs_its_async_do_work():
    assert run(AsyncEchoWorker, {"n": 21}) == Result.success({"doubled": 42})


class ReturnsWorker(Worker):
    def do_work(self):
        return self.input_data.get("value", "missing")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, Result.success()), ({"k": "v"}, Result.success({"k": "v"})),
     (Result.failure({"e": 1}), Result.failure({"e": 1})), (Result.retry(), Result.retry())],
    ids=["None", "mapping", "failure", "retry"],
)
def test_worker_return_values_become_results(value, expected):
    class Returning(Worker):
        def do_work(self):
            return value

    assert run(Returning) == expected


def test_base_classes_must_override_do_work():
    with pytest.raises(NotImplementedError, match="Worker must override do_work"):
        run(Worker)
    with pytest.raises(NotImplementedError, match="CoroutineWorker must override async do_work"):
        run(CoroutineWorker)


def test_an_exception_in_do_work_propagates():
    class Boom(Worker):
        def do_work(self):
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        run(Boom)


# --- function workers -------------------------------------------------------------------


def add(a: int, b: int) -> dict:
    return {"sum": a + b}


async def async_add(a: int, b: int) -> dict:
    await asyncio.sleep(0)
    return {"sum": a + b}


def test_a_function_worker_gets_input_keys_as_keyword_arguments():
    assert run(add, {"a": 2, "b": 3}) == Result.success({"sum": 5})


def test_an_async_function_worker_is_awaited():
    assert run(async_add, {"a": 2, "b": 3}) == Result.success({"sum": 5})


def test_instantiate_wraps_a_function():
    worker = instantiate(add, WorkerParameters("w"))
    assert isinstance(worker, FunctionWorker)
    assert worker.function is add


def test_a_function_receives_only_the_keys_it_accepts():
    seen = {}

    def only_a(a, *, c="default"):
        seen.update(a=a, c=c)

    assert run(only_a, {"a": 1, "b": 2}) == Result.success()
    assert seen == {"a": 1, "c": "default"}
    assert run(only_a, {"a": 1, "b": 2, "c": "given"}) == Result.success()
    assert seen == {"a": 1, "c": "given"}


def test_a_function_with_var_keywords_receives_every_key():
    def everything(a, **rest):
        return {"a": a, "rest": sorted(rest)}

    assert run(everything, {"a": 1, "b": 2, "z": None}) == Result.success(
        {"a": 1, "rest": ["b", "z"]})


def test_a_function_without_parameters_ignores_the_input():
    assert run(lambda: {"ran": True}, {"unused": 1}) == Result.success({"ran": True})


def test_function_arguments():
    data = Data({"a": [1], "b": 2, "c": 3})

    def f(a, b=0, *args, c, **kwargs):
        pass

    def g(a, b=5):
        pass

    assert function_arguments(f, data) == {"a": [1], "b": 2, "c": 3}
    assert function_arguments(g, data) == {"a": [1], "b": 2}
    assert type(function_arguments(g, data)["a"]) is list


def test_function_arguments_are_the_same_for_every_kind_of_callable_read_once_or_not():
    """The parameters of a function are read once while it lives (a tenth of a worker
    process's time per no-op attempt); callables that cannot be weakly referenced or
    hashed are read each time, with the same answers."""
    import functools

    data = Data({"a": 1, "b": 2})

    def f(a, b=0):
        pass

    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, a, *, b):
            pass

    for _ in range(2):  # read, then kept (or read again)
        assert function_arguments(f, data) == {"a": 1, "b": 2}
        assert function_arguments(functools.partial(f, b=5), data) == {"a": 1, "b": 2}
        assert function_arguments(Unhashable(), data) == {"a": 1, "b": 2}
        assert function_arguments(max, data) == {"a": 1, "b": 2}  # no signature: every key

    def g(a):
        pass

    assert function_arguments(g, data) == {"a": 1}
    with pytest.raises(InvalidInputError, match="needs input 'a'"):
        function_arguments(g, Data({"b": 2}))


def test_missing_required_input_is_a_clear_error():
    def resize(image_uri, width, height=100):
        pass

    with pytest.raises(InvalidInputError) as caught:
        run(resize, {"width": 10, "other": 1})
    message = str(caught.value)
    assert ".resize'" in message
    assert "needs input 'image_uri'" in message
    assert "'width'" not in message.split("but")[0]
    assert "'height'" not in message  # it has a default
    assert "['other', 'width']" in message
    assert "input_data" in message


def test_missing_input_names_every_missing_key_and_says_when_there_is_none():
    def f(a, *, b):
        pass

    with pytest.raises(InvalidInputError) as caught:
        run(f)
    assert "needs input 'a', 'b'" in str(caught.value)
    assert "no keys" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, Result.success()), ({"k": [1, 2]}, Result.success({"k": [1, 2]})),
     (Data({"k": 1}), Result.success({"k": 1})),
     (Result.failure({"why": "bad"}), Result.failure({"why": "bad"})),
     (Result.retry(), Result.retry())],
    ids=["None", "dict", "Data", "failure", "retry"],
)
def test_function_return_values_become_results(value, expected):
    assert run(lambda: value) == expected


@pytest.mark.parametrize("value", [42, "done", [("a", 1)], True], ids=repr)
def test_other_return_values_are_errors(value):
    with pytest.raises(InvalidInputError) as caught:
        run(lambda: value)
    message = str(caught.value)
    assert f"returned a {type(value).__name__}" in message
    assert "return a Result, a mapping of output data, or None" in message


def test_an_async_function_may_return_any_accepted_value():
    async def retry_me():
        return Result.retry()

    assert run(retry_me) == Result.retry()


def test_a_returned_mapping_must_be_valid_data():
    with pytest.raises(DataError, match="'out'"):
        run(lambda: {"out": {1, 2}})


def test_instantiate_rejects_what_is_not_a_worker():
    with pytest.raises(InvalidInputError) as caught:
        instantiate(EchoWorker(WorkerParameters("x")), WorkerParameters("y"))
    assert "the class, not an instance" in str(caught.value)
    with pytest.raises(InvalidInputError, match="neither a Worker subclass nor a callable"):
        instantiate(5, WorkerParameters("y"))


# --- progress ---------------------------------------------------------------------------


def test_worker_set_progress_reaches_the_sink_as_data():
    reported = []

    class Progressing(Worker):
        def do_work(self):
            self.set_progress({"percent": 50})
            self.set_progress(Data(percent=100))
            return None

    assert run(Progressing, progress_sink=reported.append) == Result.success()
    assert reported == [Data({"percent": 50}), Data({"percent": 100})]
    assert all(isinstance(p, Data) for p in reported)


def test_module_set_progress_in_function_and_coroutine_workers():
    reported = []

    def function(n):
        set_progress({"step": n})
        nbwork.set_progress({"step": n + 1})

    class Coroutine(CoroutineWorker):
        async def do_work(self):
            await asyncio.sleep(0)
            nbwork.set_progress({"step": "async"})
            return Result.success()

    async def async_function():
        set_progress({"step": "async function"})

    run(function, {"n": 1}, progress_sink=reported.append)
    run(Coroutine, progress_sink=reported.append)
    run(async_function, progress_sink=reported.append)
    assert [p["step"] for p in reported] == [1, 2, "async", "async function"]


def test_progress_without_a_sink_is_dropped_quietly():
    def function():
        set_progress({"p": 1})

    assert run(function) == Result.success()


def test_invalid_progress_is_rejected():
    def function():
        set_progress({"p": object()})

    with pytest.raises(DataError, match="'p'"):
        run(function, progress_sink=lambda data: None)


def test_set_progress_outside_a_work_raises():
    with pytest.raises(InvalidInputError) as caught:
        nbwork.set_progress({"p": 1})
    assert "outside a running work" in str(caught.value)


def test_set_progress_is_unbound_after_the_work_returns():
    def function():
        set_progress({"p": 1})

    run(function, progress_sink=lambda data: None)
    with pytest.raises(InvalidInputError, match="outside a running work"):
        set_progress({"p": 2})


def test_set_progress_is_unbound_after_the_work_raises():
    def function():
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        run(function)
    with pytest.raises(InvalidInputError, match="outside a running work"):
        set_progress({"p": 2})


def test_is_stopped_function():
    assert is_stopped() is False
    params = WorkerParameters("w")

    def function():
        first = is_stopped()
        params.stop("CANCELLED_BY_APP")
        return {"first": first, "then": is_stopped()}

    assert instantiate(function, params).run() == Result.success({"first": False, "then": True})
    assert is_stopped() is False


# --- stopping ---------------------------------------------------------------------------


class CountingWorker(Worker):
    def __init__(self, params):
        super().__init__(params)
        self.stopped_calls = 0

    def on_stopped(self):
        self.stopped_calls += 1

    def do_work(self):
        return Result.success()


def test_stop_sets_is_stopped_and_calls_on_stopped_exactly_once():
    params = WorkerParameters("w")
    worker = instantiate(CountingWorker, params)
    assert not worker.is_stopped
    assert worker.stopped_calls == 0
    assert params.stop("CANCELLED_BY_APP") is True
    assert worker.is_stopped
    assert worker.stop_reason == "CANCELLED_BY_APP"
    assert worker.stopped_calls == 1
    assert params.stop("TIMEOUT") is False
    assert worker.stopped_calls == 1
    assert worker.stop_reason == "CANCELLED_BY_APP"


def test_concurrent_stops_call_on_stopped_once():
    params = WorkerParameters("w")
    worker = instantiate(CountingWorker, params)
    barrier = threading.Barrier(8)
    outcomes = []

    def stop():
        barrier.wait()
        outcomes.append(params.stop("CANCELLED_BY_APP"))

    threads = [threading.Thread(target=stop) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * 7 + [True]
    assert worker.stopped_calls == 1


def test_a_worker_sees_a_stop_from_another_thread():
    params = WorkerParameters("w")
    started = threading.Event()

    class Polling(Worker):
        def do_work(self):
            started.set()
            # Waits for the stop flag; fails the test rather than hanging if it never comes.
            stopped = self._params.stop_event.wait(timeout=10)
            return Result.success({"stopped": stopped and self.is_stopped})

    stopper = threading.Thread(target=lambda: started.wait(10) and params.stop("TIMEOUT"))
    stopper.start()
    result = instantiate(Polling, params).run()
    stopper.join()
    assert result == Result.success({"stopped": True})
    assert params.stop_reason == "TIMEOUT"


class SleepyCoroutine(CoroutineWorker):
    started: threading.Event
    cancelled: list

    def __init__(self, params):
        super().__init__(params)
        self.stopped_calls = 0

    def on_stopped(self):
        self.stopped_calls += 1

    async def do_work(self):
        self.started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            self.cancelled.append(True)
            raise
        return Result.success({"slept": True})


def test_a_coroutine_worker_is_cancelled_when_stopped_from_another_thread():
    params = WorkerParameters("w")
    worker = instantiate(SleepyCoroutine, params)
    worker.started = threading.Event()
    worker.cancelled = []
    stopper = threading.Thread(
        target=lambda: worker.started.wait(10) and params.stop("CANCELLED_BY_APP"))
    stopper.start()
    result = worker.run()
    stopper.join()
    assert worker.cancelled == [True]
    assert result == Result.failure({"stopped": True})
    assert worker.stopped_calls == 1
    assert worker.stop_reason == "CANCELLED_BY_APP"


def test_a_coroutine_worker_stopped_before_it_runs_is_cancelled_at_once():
    params = WorkerParameters("w")
    worker = instantiate(SleepyCoroutine, params)
    worker.started = threading.Event()
    worker.cancelled = []
    params.stop("CANCELLED_BY_APP")
    assert worker.run() == Result.failure({"stopped": True})
    assert not worker.started.is_set()  # the coroutine never got to run


def test_a_coroutine_worker_stopped_after_it_finished_stops_quietly():
    params = WorkerParameters("w", {"n": 1})
    worker = instantiate(AsyncEchoWorker, params)
    assert worker.run() == Result.success({"doubled": 2})
    # A stop that arrives just after the coroutine returned (its event loop is closed by then)
    # must not raise in the thread that delivers it.
    assert params.stop("CANCELLED_BY_APP") is True
    assert worker.is_stopped


def test_a_cancelled_error_not_caused_by_a_stop_propagates():
    class CancelsItself(CoroutineWorker):
        async def do_work(self):
            raise asyncio.CancelledError()

    with pytest.raises(asyncio.CancelledError):
        run(CancelsItself)


def test_an_on_stopped_that_raises_does_not_keep_the_coroutine_from_being_cancelled():
    class FaultyStop(SleepyCoroutine):
        def on_stopped(self):
            super().on_stopped()
            raise OSError("cleanup failed")

    params = WorkerParameters("w")
    worker = instantiate(FaultyStop, params)
    worker.started = threading.Event()
    worker.cancelled = []
    stop_errors = []

    def stop():
        worker.started.wait(10)
        try:
            params.stop("CANCELLED_BY_APP")
        except OSError as exc:
            stop_errors.append(exc)

    stopper = threading.Thread(target=stop)
    stopper.start()
    result = worker.run()
    stopper.join()
    assert result == Result.failure({"stopped": True})
    assert worker.cancelled == [True]
    assert worker.stopped_calls == 1
    assert [str(e) for e in stop_errors] == ["cleanup failed"]  # reported, not swallowed
