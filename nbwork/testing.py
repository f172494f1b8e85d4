"""Testing helpers: run one worker in-process (WorkManager's ``TestListenableWorkerBuilder``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .data import Data
from .request import _check_worker
from .worker import Result, WorkerParameters, instantiate


def run_worker(
    worker: type | Callable[..., Any],
    input_data: Data | Mapping[str, Any] | None = None,
    run_attempt_count: int = 0,
    tags: Iterable[str] = (),
    *,
    id: str = "00000000-0000-0000-0000-000000000000",
    on_progress: Callable[[Data], None] | None = None,
) -> Result:
    """Run ``worker``'s ``do_work`` once in this process and return its ``Result``.

    No scheduler and no store are involved; exceptions propagate so a test sees them.
    ``on_progress`` receives each ``set_progress`` call.
    """
    _check_worker(worker)
    params = WorkerParameters(id=id, input_data=Data.from_mapping(input_data), tags=tuple(tags),
                              run_attempt_count=run_attempt_count, progress_sink=on_progress)
    return instantiate(worker, params).run()
