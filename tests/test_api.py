"""The public API (docs/api.md) is a contract: its names exist with their meanings."""

from __future__ import annotations

import inspect

import nbwork
from nbwork import WorkManager


def test_all_is_pinned():
    assert sorted(nbwork.__all__) == sorted([
        "ArrayCreatingInputMerger", "BackoffPolicy", "Constraints", "ContentTrigger",
        "CoroutineWorker", "Data", "FolderWatch",
        "DataError", "ExistingPeriodicWorkPolicy", "ExistingWorkPolicy", "InputMerger",
        "InvalidInputError", "InvalidRequestError", "LargeWorkerWarning", "MAX_DATA_BYTES",
        "NbworkError", "NbworkWarning", "SchedulerWarning",
        "NetworkType", "OneTimeWorkRequest", "Operation", "OverwritingInputMerger",
        "PeriodicWorkRequest", "Result", "RunAfter", "SchedulerError", "StopReason", "StoreError",
        "UpdateResult", "WorkContinuation", "WorkInfo", "WorkManager", "WorkQuery",
        "WorkRequest", "WorkState", "Worker", "WorkerSerializationError", "is_stopped",
        "set_progress", "__version__", "check_store", "default_store_path", "in_chain_order",
        "is_store",
    ])
    for name in nbwork.__all__:
        assert hasattr(nbwork, name), name


def test_work_manager_methods_of_the_design_exist():
    for name in [
        "get_instance", "store_path", "enqueue", "begin_with", "begin_unique_work",
        "enqueue_unique_work", "enqueue_unique_periodic_work", "get_work_info_by_id",
        "get_work_infos_by_tag", "get_work_infos_for_unique_work", "get_work_infos", "wait",
        "observe", "flow", "cancel_work_by_id", "cancel_all_work_by_tag", "cancel_unique_work",
        "cancel_all_work", "prune_work",
    ]:
        assert hasattr(WorkManager, name), name
    assert inspect.isasyncgenfunction(WorkManager.flow)


def test_work_info_fields_of_the_design():
    fields = set(nbwork.WorkInfo.__dataclass_fields__)
    assert {"id", "state", "output_data", "progress", "tags", "run_attempt_count", "generation",
            "next_schedule_time", "stop_reason", "error", "unique_work_name",
            "worker_name"} <= fields


def test_states_and_policies():
    assert [s.name for s in nbwork.WorkState] == [
        "ENQUEUED", "RUNNING", "SUCCEEDED", "FAILED", "BLOCKED", "CANCELLED"]
    assert {s for s in nbwork.WorkState if s.is_finished} == {
        nbwork.WorkState.SUCCEEDED, nbwork.WorkState.FAILED, nbwork.WorkState.CANCELLED}
    assert [p.name for p in nbwork.ExistingWorkPolicy] == [
        "REPLACE", "KEEP", "APPEND", "APPEND_OR_REPLACE"]
    assert [p.name for p in nbwork.ExistingPeriodicWorkPolicy] == [
        "KEEP", "UPDATE", "CANCEL_AND_REENQUEUE"]
    assert nbwork.MAX_DATA_BYTES == 10_240


def test_input_errors_are_builtin_errors_too():
    assert issubclass(nbwork.DataError, ValueError)
    assert issubclass(nbwork.InvalidRequestError, ValueError)
    assert issubclass(nbwork.WorkerSerializationError, TypeError)


def test_update_work_returns_an_update_result_that_still_equals_the_old_strings():
    assert inspect.signature(WorkManager.update_work).return_annotation in (
        "UpdateResult", nbwork.UpdateResult)
    assert [r.value for r in nbwork.UpdateResult] == [
        "NOT_APPLIED", "APPLIED_IMMEDIATELY", "APPLIED_FOR_NEXT_RUN"]
    assert nbwork.UpdateResult.APPLIED_IMMEDIATELY == "APPLIED_IMMEDIATELY"
    assert f"{nbwork.UpdateResult.NOT_APPLIED}" == "NOT_APPLIED"
