"""Testing helpers (WorkManager's work-testing): ``run_worker`` runs one worker in-process
(``TestListenableWorkerBuilder``); ``TestDriver`` makes waiting work due and simulates the
device's conditions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._conditions import DeviceState
from ._content import CONTENT_WAIT, has_triggers, record_change
from ._spec import WorkSpec
from .data import Data
from .errors import InvalidInputError
from .info import WorkState
from .manager import WorkManager
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


class TestDriver:
    """Make delayed, periodic and constrained work due now (WorkManager's ``TestDriver``),
    and simulate the device's conditions.

    ``TestDriver(wm)``; each call is one store transaction and wakes the scheduler.
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, wm: WorkManager) -> None:
        self._wm = wm

    def _change(self, id: str, what: str, change: Callable[[WorkSpec, float], None]) -> None:
        now = self._wm.clock.now()
        with self._wm._store.transaction() as txn:
            spec = txn.get(id)
            if spec is None:
                raise InvalidInputError(f"{what}: no work with id {id!r} in this store")
            if spec.is_finished:
                raise InvalidInputError(
                    f"{what}: work {id} is already {spec.state.value}; it will not run again")
            change(spec, now)
            txn.put(spec)
        self._wm._wake_scheduler()

    def set_initial_delay_met(self, id: str) -> None:
        """The work's initial delay counts as elapsed (now, or once it is unblocked); a
        one-time work waiting out a retry's backoff runs now too (as WorkManager's)."""
        def change(spec: WorkSpec, now: float) -> None:
            spec.initial_delay_met = True
            if spec.state is WorkState.ENQUEUED and spec.next_run_at < CONTENT_WAIT and (
                    spec.run_attempt_count == 0 or _backed_off_one_time(spec)):
                spec.next_run_at = min(spec.next_run_at, now)
        self._change(id, "set_initial_delay_met", change)

    def set_all_constraints_met(self, id: str) -> None:
        """The work's constraints count as met from now on, whatever the device does; a
        one-time work waiting out a retry's backoff runs now (as WorkManager's)."""
        def change(spec: WorkSpec, now: float) -> None:
            spec.constraints_met = True
            if _backed_off_one_time(spec):
                spec.next_run_at = min(spec.next_run_at, now)
            if spec.state is WorkState.ENQUEUED and spec.next_run_at >= CONTENT_WAIT:
                spec.next_run_at = now  # content triggers are constraints too
        self._change(id, "set_all_constraints_met", change)

    def set_content_changed(self, id: str, paths: Iterable[str]) -> None:
        """As if ``paths`` under the work's content triggers changed now: the work then
        runs after its ``trigger_content_update_delay`` (capped by the max delay), with
        these paths in ``triggered_content_paths``."""
        if isinstance(paths, str):
            paths = [paths]
        paths = [str(p) for p in paths]
        if not paths:
            raise InvalidInputError("set_content_changed: give at least one changed path")

        def change(spec: WorkSpec, now: float) -> None:
            if not has_triggers(spec):
                raise InvalidInputError(
                    f"set_content_changed: work {spec.id} has no content triggers; give it "
                    "Constraints(content_triggers=[ContentTrigger(path)])")
            if spec.run_attempt_count:
                raise InvalidInputError(
                    f"set_content_changed: work {spec.id} has already run since its trigger "
                    "fired; a triggered work is one-time (enqueue a new one)")
            record_change(spec, paths, now)
            if spec.state is WorkState.BLOCKED:
                spec.next_run_at = 0.0  # set when it is unblocked
        self._change(id, "set_content_changed", change)

    def set_period_delay_met(self, id: str) -> None:
        """A periodic work waiting for its next period runs now."""
        def change(spec: WorkSpec, now: float) -> None:
            if not spec.is_periodic:
                raise InvalidInputError(
                    f"set_period_delay_met: work {spec.id} is not periodic; use "
                    "set_initial_delay_met for one-time work")
            if spec.state is WorkState.ENQUEUED:
                spec.next_run_at = min(spec.next_run_at, now)
        self._change(id, "set_period_delay_met", change)

    def set_device_state(self, **conditions: bool) -> DeviceState:
        """Simulate the device: ``charging``, ``battery_low``, ``storage_low``,
        ``device_idle``, ``network``, ``metered``, ``roaming`` (booleans). Fields not given
        keep their simulated value (at first: plugged in, idle, on an unmetered network).
        The scheduler uses this instead of the host's readings until ``clear_device_state``."""
        unknown = set(conditions) - set(DeviceState.__dataclass_fields__)
        if unknown:
            raise InvalidInputError(
                f"set_device_state: unknown condition {', '.join(sorted(unknown))}; use "
                f"{', '.join(DeviceState.__dataclass_fields__)}")
        for name, value in conditions.items():
            if not isinstance(value, bool):
                raise InvalidInputError(f"set_device_state: {name} must be True or False")
        current = self.device_state() or DeviceState()
        state = DeviceState.from_dict({**current.to_dict(), **conditions})
        self._wm._store.set_device_state(state.to_dict())
        self._wm._wake_scheduler()
        return state

    def clear_device_state(self) -> None:
        """Go back to the host's real conditions."""
        self._wm._store.set_device_state(None)
        self._wm._wake_scheduler()

    def device_state(self) -> DeviceState | None:
        """The simulated device state, or None when the host's is used."""
        values = self._wm._store.device_state()
        return DeviceState.from_dict(values) if values else None


def _backed_off_one_time(spec: WorkSpec) -> bool:
    """WorkManager's TestDriver rewinds the last enqueue time of the work it is told about,
    so a one-time work that asked for a retry does not wait out its backoff for real."""
    return spec.state is WorkState.ENQUEUED and spec.backing_off and not spec.is_periodic
