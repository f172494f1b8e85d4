"""Device conditions for ``Constraints``: the real host (psutil) or a simulated device.

What each constraint means on a computer (documented in the README too):

- ``requires_charging``: on AC power. A machine without a battery counts as charging.
- ``requires_battery_not_low``: the battery is above ``LOW_BATTERY_PERCENT`` or plugged in.
  No battery: never low.
- ``requires_storage_not_low``: the volume holding the store has at least
  ``LOW_STORAGE_SHARE`` of its space free.
- ``requires_device_idle``: the machine's CPU use stayed under ``IDLE_CPU_PERCENT`` for the
  last ``IDLE_SPELL`` seconds. Running work is not stopped when the machine stops being idle
  (nbwork's own work would make it busy and stop itself); it only waits to start.
- ``network_type``: CONNECTED (and UNMETERED, NOT_ROAMING, TEMPORARILY_UNMETERED) hold when a
  non-loopback network interface is up with an address. A computer cannot tell a metered or
  roaming network, so on the host the network counts as unmetered and not roaming: METERED
  never holds there (simulate it with the TestDriver).

The simulated device (``TestDriver.set_device_state``) is kept in the store and replaces
the host's readings until cleared, so a notebook can "unplug the charger".
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import psutil

from .info import StopReason

LOW_BATTERY_PERCENT = 15.0
LOW_STORAGE_SHARE = 0.10
IDLE_CPU_PERCENT = 30.0
IDLE_SPELL = 60.0
HOST_READ_INTERVAL = 1.0


@dataclass(frozen=True)
class DeviceState:
    """The conditions constraints are checked against."""

    charging: bool = True
    battery_low: bool = False
    storage_low: bool = False
    device_idle: bool = True
    network: bool = True
    metered: bool = False
    roaming: bool = False

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DeviceState":
        known = {k: bool(v) for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def unmet(constraints: dict[str, Any], state: DeviceState) -> list[StopReason]:
    """The constraints of a work that ``state`` does not satisfy (empty: it may run)."""
    missing: list[StopReason] = []
    if constraints.get("requires_charging") and not state.charging:
        missing.append(StopReason.CONSTRAINT_CHARGING)
    if constraints.get("requires_battery_not_low") and state.battery_low:
        missing.append(StopReason.CONSTRAINT_BATTERY_NOT_LOW)
    if constraints.get("requires_storage_not_low") and state.storage_low:
        missing.append(StopReason.CONSTRAINT_STORAGE_NOT_LOW)
    if constraints.get("requires_device_idle") and not state.device_idle:
        missing.append(StopReason.CONSTRAINT_DEVICE_IDLE)
    network = constraints.get("network_type", "NOT_REQUIRED")
    if network != "NOT_REQUIRED":
        ok = state.network and {
            "CONNECTED": True,
            "UNMETERED": not state.metered,
            "TEMPORARILY_UNMETERED": not state.metered,
            "NOT_ROAMING": not state.roaming,
            "METERED": state.metered,
        }.get(network, False)
        if not ok:
            missing.append(StopReason.CONSTRAINT_CONNECTIVITY)
    return missing


def requires_anything(constraints: dict[str, Any]) -> bool:
    """Whether a constraints dict asks for any condition at all."""
    return any(value for key, value in constraints.items() if key.startswith("requires_")) or (
        constraints.get("network_type", "NOT_REQUIRED") != "NOT_REQUIRED")


def stops_running_work(reason: StopReason) -> bool:
    """Whether a RUNNING work is stopped when this constraint stops holding."""
    return reason is not StopReason.CONSTRAINT_DEVICE_IDLE


class HostConditions:
    """Reads the host's state with psutil, at most once per ``HOST_READ_INTERVAL``."""

    def __init__(self, store_path: str) -> None:
        self.store_path = store_path
        self._cpu: deque[tuple[float, float]] = deque()
        self._cached: DeviceState | None = None
        self._read_at = 0.0
        psutil.cpu_percent(interval=None)  # primes the counter; the first reading is 0.0

    def read(self) -> DeviceState:
        now = time.monotonic()
        if self._cached is None or now - self._read_at >= HOST_READ_INTERVAL:
            self._cached = self._read(now)
            self._read_at = now
        return self._cached

    def _read(self, now: float) -> DeviceState:
        battery = None
        try:
            battery = psutil.sensors_battery()
        except (AttributeError, NotImplementedError, OSError):
            pass
        charging = battery is None or bool(battery.power_plugged)
        battery_low = (battery is not None and not battery.power_plugged
                       and battery.percent <= LOW_BATTERY_PERCENT)
        try:
            usage = psutil.disk_usage(self.store_path)
            storage_low = usage.free < LOW_STORAGE_SHARE * usage.total
        except OSError:
            storage_low = False
        self._cpu.append((now, psutil.cpu_percent(interval=None)))
        while self._cpu and self._cpu[0][0] < now - IDLE_SPELL:
            self._cpu.popleft()
        spell_covered = self._cpu and now - self._cpu[0][0] >= IDLE_SPELL * 0.9
        idle = bool(spell_covered) and all(p < IDLE_CPU_PERCENT for _, p in self._cpu)
        return DeviceState(charging=charging, battery_low=battery_low, storage_low=storage_low,
                           device_idle=idle, network=_network_up())


def _network_up() -> bool:
    try:
        stats = psutil.net_if_stats()
        addresses = psutil.net_if_addrs()
    except OSError:
        return False
    for name, stat in stats.items():
        if not stat.isup or name == "lo" or name.startswith("lo"):
            continue
        if addresses.get(name):
            return True
    return False
