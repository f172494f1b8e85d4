"""Unit tests of ``nbwork._code``: how worker code is sent to the scheduler.

Code from this test module is not installed (tests/ is not site-packages), so it must be
pickled by value: a fresh interpreter that cannot import this module loads and runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import threading

import cloudpickle
import pytest

from nbwork._code import is_installed_module, load_worker, serialize_worker
from nbwork.errors import InvalidInputError, WorkerSerializationError
from nbwork.worker import Result, Worker, function_arguments

OFFSET = 1000
_GLOBAL_LOCK = threading.Lock()


def _helper(value: int) -> int:
    return value * 2


def double_plus_offset(a: int) -> dict:
    """A function worker that uses a module-level helper and constant."""
    return {"value": _helper(a) + OFFSET}


class GreetWorker(Worker):
    """A worker class defined in a module the scheduler cannot import."""

    def do_work(self) -> Result:
        return Result.success({"greeting": f"hello {self.input_data['name']}", "n": _helper(3)})


def uses_global_lock() -> None:
    with _GLOBAL_LOCK:
        pass


class LockedWorker(Worker):
    def do_work(self) -> Result:
        with _GLOBAL_LOCK:
            return Result.success()


def make_capturing_worker():
    the_lock = threading.Lock()

    def capturing() -> None:
        with the_lock:
            pass

    return capturing


# The loader runs in a fresh interpreter started from "/" with no PYTHONPATH. The editable
# install of nbwork puts the project root on sys.path, which would make ``tests`` importable,
# so the loader blocks that package: only a payload pickled by value can load.
LOADER = r"""
import importlib.util, json, pickle, sys
sys.modules["tests"] = None  # the test package must not be importable here
assert importlib.util.find_spec("test_code") is None
try:
    import tests.test_code  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the test module was importable")
payload = sys.stdin.buffer.read()
worker = pickle.loads(payload)
from nbwork.worker import WorkerParameters, instantiate
kwargs = json.loads(sys.argv[1])
result = instantiate(worker, WorkerParameters("id", kwargs)).run()
print(json.dumps({"kind": result.kind, "output": result.output_data.to_dict(),
                  "module": worker.__module__}))
"""


def run_in_fresh_interpreter(payload: bytes, input_data: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    completed = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(input_data)],
        input=payload, capture_output=True, cwd="/", env=env, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    return json.loads(completed.stdout)


def test_this_module_is_not_installed():
    assert not is_installed_module(__name__)
    assert not is_installed_module("__main__")


@pytest.mark.parametrize("name", ["os", "json", "posix", "sys", "nbwork", "nbwork.worker",
                                  "cloudpickle", "pytest"])
def test_stdlib_site_packages_and_nbwork_are_installed(name):
    assert is_installed_module(name)


def test_a_function_from_an_uninstalled_module_is_pickled_by_value():
    key, payload = serialize_worker(double_plus_offset, "double_plus_offset")
    assert key == hashlib.sha256(payload).hexdigest()
    assert b"_helper" in payload  # the helper travels with it
    result = run_in_fresh_interpreter(payload, {"a": 5})
    assert result == {"kind": "success", "output": {"value": 1010}, "module": __name__}


def test_a_worker_class_from_an_uninstalled_module_is_pickled_by_value():
    _, payload = serialize_worker(GreetWorker, "GreetWorker")
    result = run_in_fresh_interpreter(payload, {"name": "Ada"})
    assert result == {"kind": "success", "output": {"greeting": "hello Ada", "n": 6},
                      "module": __name__}


def test_pickling_by_value_is_only_for_the_serialization():
    serialize_worker(double_plus_offset, "double_plus_offset")
    with pytest.raises(WorkerSerializationError):
        serialize_worker(uses_global_lock, "uses_global_lock")
    # Afterwards, plain cloudpickle pickles this module's code by reference again.
    assert b"_helper" not in cloudpickle.dumps(double_plus_offset)


@pytest.mark.parametrize(
    "function", [os.getcwd, json.dumps, os.path.join, function_arguments],
    ids=lambda f: f"{f.__module__}.{f.__qualname__}",
)
def test_installed_functions_are_pickled_by_reference(function):
    _, payload = serialize_worker(function, function.__qualname__)
    assert b"cloudpickle" not in payload  # no code object: a plain reference
    assert function.__name__.encode() in payload
    assert function.__module__.encode() in payload
    assert load_worker(payload) is function
    assert len(payload) < 200


def test_load_worker_is_the_inverse_of_serialize_worker():
    _, payload = serialize_worker(GreetWorker, "GreetWorker")
    loaded = load_worker(payload)
    assert isinstance(loaded, type) and issubclass(loaded, Worker)
    assert loaded.__qualname__ == "GreetWorker"


def test_a_worker_capturing_a_lock_names_the_captured_variable():
    worker = make_capturing_worker()
    with pytest.raises(WorkerSerializationError) as caught:
        serialize_worker(worker, "tests.capturing")
    error = caught.value
    assert isinstance(error, TypeError)
    assert isinstance(error, InvalidInputError)
    message = str(error)
    assert "worker tests.capturing cannot be sent to the scheduler" in message
    assert "captured variable 'the_lock'" in message
    assert "lock" in message.lower()
    assert "inside do_work" in message  # what to do instead
    assert isinstance(error.__cause__, Exception)


@pytest.mark.parametrize("worker", [uses_global_lock, LockedWorker],
                         ids=["function", "Worker class"])
def test_a_worker_using_a_global_lock_names_the_global(worker):
    with pytest.raises(WorkerSerializationError) as caught:
        serialize_worker(worker, "w")
    assert "global '_GLOBAL_LOCK'" in str(caught.value)


def test_a_lambda_capturing_a_generator_is_rejected():
    numbers = (n for n in range(3))
    worker = lambda: {"n": next(numbers)}  # noqa: E731
    with pytest.raises(WorkerSerializationError, match="captured variable 'numbers'"):
        serialize_worker(worker, "counter")


def test_the_content_key_is_stable_for_the_same_code():
    first, _ = serialize_worker(double_plus_offset, "a")
    second, _ = serialize_worker(double_plus_offset, "b")
    other, _ = serialize_worker(GreetWorker, "c")
    assert first == second
    assert first != other


def test_a_payload_is_a_plain_pickle():
    _, payload = serialize_worker(double_plus_offset, "a")
    assert pickle.loads(payload)(a=1) == {"value": 1002}


# --- big captured globals warn at enqueue ---------------------------------------------------


def _notebook_function(source: str, **globals_):
    """A function as if defined in a notebook cell (``__main__``: pickled by value)."""
    namespace = {"__name__": "__main__", **globals_}
    exec(source, namespace)
    return namespace["work"]


def test_a_worker_with_big_captured_globals_warns_naming_them():
    from nbwork.errors import LargeWorkerWarning

    big, small = os.urandom(12 * 2**20), os.urandom(100)
    work = _notebook_function("def work():\n    return {'n': len(BIG) + len(small)}\n",
                              BIG=big, small=small)
    with pytest.warns(LargeWorkerWarning) as caught:
        serialize_worker(work, "nb.work")
    message = str(caught[0].message)
    assert "worker nb.work carries 12 MiB of captured globals: `BIG` (12 MiB)" in message
    assert "small" not in message and "inside do_work" in message
    assert caught[0].filename == __file__  # points at the caller's line, not nbwork's


def test_a_worker_class_names_globals_its_methods_use_and_its_big_attributes():
    from nbwork.errors import LargeWorkerWarning

    namespace = {"__name__": "__main__", "Worker": Worker, "Result": Result,
                 "MODEL": os.urandom(11 * 2**20)}
    exec("class Big(Worker):\n    TABLE = b'x' * (3 * 2**20)\n"
         "    def do_work(self):\n        return Result.success({'n': len(MODEL)})\n",
         namespace)
    with pytest.warns(LargeWorkerWarning, match=r"`MODEL` \(11 MiB\), `Big.TABLE` \(3 MiB\)"):
        serialize_worker(namespace["Big"], "nb.Big")


def test_a_small_worker_does_not_warn(recwarn):
    serialize_worker(_notebook_function("def work():\n    return {'n': len(DATA)}\n",
                                        DATA=os.urandom(1024)), "nb.work")
    assert not recwarn.list
