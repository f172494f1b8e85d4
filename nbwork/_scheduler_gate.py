"""The constraint gate: which due works must wait for the device (the charger, the network,
idle CPU...), and which running attempts must stop because their constraints stopped
holding (not a failure: the work goes back to ENQUEUED with the reason in ``stop_reason``).
"""

from __future__ import annotations

import logging
from typing import Any

from ._conditions import (
    DeviceState,
    HostConditions,
    requires_anything,
    stops_running_work,
    unmet,
)
from ._executors.base import Executor
from ._spec import WorkSpec
from ._store import Store

log = logging.getLogger("nbwork.scheduler")


def gating(spec: WorkSpec) -> dict[str, Any]:
    """The constraints a work must wait for: none when it has none or the TestDriver said
    they are met."""
    if spec.constraints_met or not requires_anything(spec.constraints):
        return {}
    return spec.constraints


class ConstraintGate:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._host = HostConditions(store.path)
        self.waiting: set[str] = set()
        """Due works found waiting for their constraints at the last dispatch."""
        self.running: dict[str, dict[str, Any]] = {}
        """Attempt token -> the constraints its work runs under (only works with some)."""

    def device(self) -> DeviceState:
        simulated = self._store.device_state()
        return DeviceState.from_dict(simulated) if simulated else self._host.read()

    def started(self, token: str, constraints: dict[str, Any]) -> None:
        if constraints:
            self.running[token] = constraints

    def refresh(self, token: str, spec: WorkSpec) -> None:
        """The record of a running attempt's work as read again (the TestDriver or an
        update may have lifted its constraints meanwhile)."""
        if token not in self.running:
            return
        constraints = gating(spec)
        if constraints:
            self.running[token] = constraints
        else:
            del self.running[token]

    def ended(self, tokens: list[str]) -> None:
        for token in tokens:
            self.running.pop(token, None)

    def stop_where_constraints_fail(self, executor: Executor, attempts: dict[str, str]) -> None:
        if not self.running:
            return
        device = self.device()
        for token, constraints in list(self.running.items()):
            reasons = [r for r in unmet(constraints, device) if stops_running_work(r)]
            if reasons:
                log.info("stopping %s: %s", attempts.get(token), reasons[0].value)
                executor.stop(token, reasons[0].value)

    def watching(self) -> bool:
        """Does anything depend on the host's state (read again every HOST_READ_INTERVAL)?"""
        return bool(self.waiting or self.running)


class Admission:
    """One dispatch's decisions: reads the device once, when first needed, and notes the
    works that must wait."""

    def __init__(self, gate: ConstraintGate) -> None:
        self._gate = gate
        self._device: DeviceState | None = None
        self.waiting: set[str] = set()

    def blocks(self, work_id: str, constraints: dict[str, Any]) -> bool:
        if not constraints:
            return False
        if self._device is None:
            self._device = self._gate.device()
        if unmet(constraints, self._device):
            self.waiting.add(work_id)
            return True
        return False
