"""nbwork: Android Jetpack WorkManager for Jupyter notebooks.

Define a ``Worker`` (or a plain function), wrap it in a ``OneTimeWorkRequest``, and
``WorkManager.get_instance().enqueue(request)``: the work runs in a background process
that outlives the cell, the kernel and the notebook, and its ``WorkInfo`` can be read,
observed and cancelled from any kernel.
"""

from ._content import ContentTrigger
from ._watches import FolderWatch
from .data import (
    MAX_DATA_BYTES,
    ArrayCreatingInputMerger,
    Data,
    InputMerger,
    OverwritingInputMerger,
)
from .errors import (
    DataError,
    InvalidInputError,
    InvalidRequestError,
    LargeWorkerWarning,
    NbworkError,
    NbworkWarning,
    SchedulerError,
    SchedulerWarning,
    StoreError,
    WorkerSerializationError,
)
from .info import StopReason, UpdateResult, WorkInfo, WorkQuery, WorkState, in_chain_order
from .manager import (
    Operation,
    WorkContinuation,
    WorkManager,
    check_store,
    default_store_path,
    is_store,
)
from .request import (
    BackoffPolicy,
    Constraints,
    ExistingPeriodicWorkPolicy,
    ExistingWorkPolicy,
    NetworkType,
    OneTimeWorkRequest,
    PeriodicWorkRequest,
    RunAfter,
    WorkRequest,
)
from .worker import CoroutineWorker, Result, Worker, is_stopped, set_progress

__version__ = "0.1.0"


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext nbwork``: the ``%nbwork`` magic (a live work table; see
    ``nbwork.widgets``). Imported here, lazily: ``import nbwork`` needs no IPython."""
    from .widgets._magic import load_ipython_extension as load

    load(ipython)


__all__ = [
    "ArrayCreatingInputMerger",
    "BackoffPolicy",
    "Constraints",
    "ContentTrigger",
    "CoroutineWorker",
    "Data",
    "DataError",
    "ExistingPeriodicWorkPolicy",
    "ExistingWorkPolicy",
    "FolderWatch",
    "InputMerger",
    "InvalidInputError",
    "InvalidRequestError",
    "LargeWorkerWarning",
    "MAX_DATA_BYTES",
    "NbworkError",
    "NbworkWarning",
    "NetworkType",
    "OneTimeWorkRequest",
    "Operation",
    "OverwritingInputMerger",
    "PeriodicWorkRequest",
    "Result",
    "RunAfter",
    "SchedulerError",
    "SchedulerWarning",
    "StopReason",
    "StoreError",
    "UpdateResult",
    "WorkContinuation",
    "WorkInfo",
    "WorkManager",
    "WorkQuery",
    "WorkRequest",
    "WorkState",
    "Worker",
    "WorkerSerializationError",
    "is_stopped",
    "set_progress",
    "check_store",
    "default_store_path",
    "in_chain_order",
    "is_store",
    "__version__",
]
