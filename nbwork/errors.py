"""The exceptions nbwork raises.

    NbworkError                      base of everything nbwork raises on purpose
    ├── InvalidInputError            a bad argument; also a ValueError
    │   ├── DataError                a Data value or size that breaks the rules
    │   ├── InvalidRequestError      a request that cannot be built or enqueued as given
    │   └── WorkerSerializationError a worker that cannot go to another process; also a TypeError
    ├── StoreError                   the store directory cannot be used (permissions, disk, lock)
    │   └── NotAStoreError           the path is not an nbwork store (and was not to be created)
    └── SchedulerError               the scheduler process could not be started or stopped

    NbworkWarning                    base of nbwork's warnings (a UserWarning)
    ├── LargeWorkerWarning           a worker carries megabytes of captured data to every run
    └── SchedulerWarning             the scheduler of a store is not running work, and why

Input errors also subclass the built-in a Python user would catch (``ValueError``,
``TypeError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import os
import sys

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside nbwork, for a warning issued by the
    caller of this function: it points at the user's line (``wm.enqueue(...)``), however
    deep inside nbwork the warning is raised."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


class NbworkError(Exception):
    """Base class of every error nbwork raises on purpose."""


class InvalidInputError(NbworkError, ValueError):
    """An argument was wrong; the message says what to pass instead."""


class DataError(InvalidInputError):
    """A ``Data`` key, value or size breaks the Data rules."""


class DataTypeError(DataError, TypeError):
    """A ``Data`` value has a type that Data cannot hold."""


class InvalidRequestError(InvalidInputError):
    """A work request, chain or policy cannot be used as given."""


class WorkerSerializationError(InvalidInputError, TypeError):
    """A worker (or something it references) cannot be serialized for the scheduler."""


class StoreError(NbworkError):
    """The store directory cannot be used as asked (permissions, full disk, busy).

    ``transient`` is True when trying again later may succeed (a full disk, a store locked
    by another process): a scheduler that meets it at start waits and retries."""

    transient: bool = False


class NotAStoreError(StoreError):
    """The path is not an nbwork store, and the call was not one that creates a store."""


class SchedulerError(NbworkError):
    """The scheduler process of a store could not be started, reached or stopped."""


class NbworkWarning(UserWarning):
    """Base class of nbwork's warnings."""


class LargeWorkerWarning(NbworkWarning):
    """A worker pickled by value carries big captured globals (an array, a DataFrame, a
    model) to the scheduler and its worker processes; load them inside the worker instead."""


class SchedulerWarning(NbworkWarning):
    """The scheduler of a store is not running work (its supervisor gave up on it)."""
