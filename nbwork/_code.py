"""Sending worker code to the scheduler: by reference when installed, else by value.

A worker defined in a notebook cell (``__main__``) or in a ``.py`` file beside the notebook
cannot be imported by the scheduler (a different process, maybe started from another
directory, long after the kernel is gone), so it is serialized by value with cloudpickle at
enqueue time. Code from installed packages (site-packages, the standard library, nbwork
itself) is sent by reference, so it is imported fresh in the worker process.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import site
import sys
import sysconfig
import types
from typing import Any

import cloudpickle

from .errors import WorkerSerializationError


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
    return hashlib.sha256(payload).hexdigest(), payload


def load_worker(payload: bytes) -> Any:
    """The worker class or function back from its payload (in the worker process)."""
    return pickle.loads(payload)
