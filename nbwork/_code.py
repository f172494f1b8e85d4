"""Sending worker code to the scheduler: by reference when installed, else by value.

A worker defined in a notebook cell (``__main__``) or in a ``.py`` file beside the notebook
cannot be imported by the scheduler (a different process, maybe started from another
directory, long after the kernel is gone), so it is serialized by value with cloudpickle at
enqueue time. Code from installed packages (site-packages, the standard library, nbwork
itself) is sent by reference, so it is imported fresh in the worker process.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import site
import sys
import sysconfig
import types
import warnings
from typing import Any

import cloudpickle

from .errors import LargeWorkerWarning, WorkerSerializationError, caller_stacklevel

LARGE_WORKER = 10 * 2**20
"""Bytes: a worker pickled by value bigger than this warns at enqueue (LargeWorkerWarning)."""
_NAMED_GLOBAL = 2**20
"""Bytes: a captured global at least this big is named in that warning."""


def _installed_roots() -> tuple[str, ...]:
    roots = set()
    for getter in (site.getsitepackages, lambda: [site.getusersitepackages()]):
        try:
            roots.update(getter())
        except Exception:  # some virtualenvs lack one of these
            pass
    paths = sysconfig.get_paths()
    roots.update(p for k, p in paths.items() if k in ("stdlib", "platstdlib", "purelib", "platlib"))
    return tuple(os.path.realpath(r) + os.sep for r in roots if r)


_INSTALLED = _installed_roots()


def is_installed_module(module_name: str) -> bool:
    """True when the scheduler can import ``module_name`` itself (installed code)."""
    top = module_name.split(".")[0]
    if top == "nbwork":
        return True
    if module_name == "__main__":
        return False
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if path is None:
        return module_name in sys.builtin_module_names
    return _is_installed_path(path)


@functools.lru_cache(maxsize=1024)
def _is_installed_path(path: str) -> bool:
    # Once per file: realpath looks up every component of the path, a quarter of the
    # serializing of a worker that every enqueue does.
    return os.path.realpath(path).startswith(_INSTALLED)


def _local_modules(obj: Any) -> list[types.ModuleType]:
    """The top-level modules that must be pickled by value for ``obj`` to load elsewhere."""
    name = getattr(obj, "__module__", None)
    if not name or is_installed_module(name) or name == "__main__":
        return []
    top = sys.modules.get(name.split(".")[0])
    return [top] if isinstance(top, types.ModuleType) else []


def _culprit(obj: Any) -> str | None:
    """Name what a function or class references that cannot be pickled, if we can find it."""
    functions = []
    if isinstance(obj, type):
        functions = [v for v in vars(obj).values() if isinstance(v, types.FunctionType)]
    elif isinstance(obj, types.FunctionType):
        functions = [obj]
    for function in functions:
        code = function.__code__
        candidates: dict[str, Any] = {}
        for name in code.co_names:
            if name in function.__globals__:
                candidates[f"global {name!r}"] = function.__globals__[name]
        for name, cell in zip(code.co_freevars, function.__closure__ or (), strict=False):
            try:
                candidates[f"captured variable {name!r}"] = cell.cell_contents
            except ValueError:
                continue
        for label, value in candidates.items():
            if isinstance(value, types.ModuleType):
                continue
            try:
                cloudpickle.dumps(value)
            except Exception as exc:
                return f"{label} ({type(value).__name__}: {exc})"
    return None


def _functions_of(obj: Any) -> list[types.FunctionType]:
    if isinstance(obj, types.FunctionType):
        return [obj]
    if isinstance(obj, type):
        found = []
        for klass in obj.__mro__:
            if klass.__module__ in ("builtins",) or is_installed_module(klass.__module__):
                continue
            for value in vars(klass).values():
                value = getattr(value, "__func__", value)  # staticmethod, classmethod
                if isinstance(value, property):
                    value = value.fget
                if isinstance(value, types.FunctionType):
                    found.append(value)
        return found
    return []


def _names_in(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:  # nested functions, comprehensions, lambdas
        if isinstance(const, types.CodeType):
            names |= _names_in(const)
    return names


def _captured(obj: Any) -> dict[str, Any]:
    """What a worker drags along when pickled by value: the globals its code refers to,
    the variables its closures captured, and (for a class) its own attributes."""
    found: dict[str, Any] = {}
    if isinstance(obj, type):
        for klass in obj.__mro__:
            if klass.__module__ == "builtins" or is_installed_module(klass.__module__):
                continue
            for attr, value in vars(klass).items():
                if not attr.startswith("__") and not callable(value) and not isinstance(
                        value, (staticmethod, classmethod, property)):
                    found.setdefault(f"{klass.__name__}.{attr}", value)
    for function in _functions_of(obj):
        for name in _names_in(function.__code__):
            if name in function.__globals__:
                found.setdefault(name, function.__globals__[name])
        for name, cell in zip(function.__code__.co_freevars, function.__closure__ or (),
                              strict=False):
            try:
                found.setdefault(name, cell.cell_contents)
            except ValueError:
                continue
    return {k: v for k, v in found.items()
            if not isinstance(v, (types.ModuleType, types.FunctionType, type))}


def _size(value: Any) -> int:
    try:
        return len(cloudpickle.dumps(value, protocol=pickle.DEFAULT_PROTOCOL))
    except Exception:
        return 0


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size / 1024:.0f} KiB"


def large_worker_message(worker: Any, name: str, size: int) -> str:
    """Why a worker's payload is ``size`` bytes: its biggest captured globals, by name."""
    sizes = sorted(((_size(v), k) for k, v in _captured(worker).items()), reverse=True)
    named = [(s, k) for s, k in sizes if s >= _NAMED_GLOBAL]
    if named:
        what = ", ".join(f"`{k}` ({_mib(s)})" for s, k in named[:5])
        more = "…" if len(named) > 5 else ""
        carried = _mib(sum(s for s, _ in named))
        return (f"worker {name} carries {carried} of captured globals: {what}{more}. They "
                "are sent to the scheduler and its worker processes with the worker's code; "
                "load them inside do_work (or the worker function) or pass a path in "
                "input_data instead")
    return (f"worker {name} is {_mib(size)} when serialized; it is sent to the scheduler and "
            "its worker processes with everything it refers to: load big data inside "
            "do_work (or the worker function) or pass a path in input_data instead")


def serialize_worker(worker: Any, name: str) -> tuple[str, bytes]:
    """``(content key, payload)`` for a worker class or function."""
    modules = _local_modules(worker)
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        payload = cloudpickle.dumps(worker, protocol=pickle.DEFAULT_PROTOCOL)
    except Exception as exc:
        culprit = _culprit(worker)
        where = f" It references {culprit}." if culprit else ""
        raise WorkerSerializationError(
            f"worker {name} cannot be sent to the scheduler: {exc}.{where} Workers run in "
            "another process, so everything they reference must be picklable: create locks, "
            "open files, connections and clients inside do_work instead of capturing them"
        ) from exc
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)
    if len(payload) > LARGE_WORKER:
        warnings.warn(large_worker_message(worker, name, len(payload)), LargeWorkerWarning,
                      stacklevel=caller_stacklevel())
    return hashlib.sha256(payload).hexdigest(), payload


def load_worker(payload: bytes) -> Any:
    """The worker class or function back from its payload (in the worker process)."""
    return pickle.loads(payload)
