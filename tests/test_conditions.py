"""Constraints against device states: the pure check and the host's readings."""

from __future__ import annotations

from collections import namedtuple

import psutil
import pytest

from nbwork import Constraints, NetworkType, StopReason
from nbwork._conditions import (
    LOW_BATTERY_PERCENT,
    DeviceState,
    HostConditions,
    stops_running_work,
    unmet,
)

ALL_GOOD = DeviceState()


def test_no_constraints_always_hold():
    bad = DeviceState(charging=False, battery_low=True, storage_low=True, device_idle=False,
                      network=False, metered=True, roaming=True)
    assert unmet(Constraints().to_dict(), bad) == []


@pytest.mark.parametrize("constraints, bad, good, reason", [
    (Constraints(requires_charging=True), DeviceState(charging=False), ALL_GOOD,
     StopReason.CONSTRAINT_CHARGING),
    (Constraints(requires_battery_not_low=True), DeviceState(battery_low=True), ALL_GOOD,
     StopReason.CONSTRAINT_BATTERY_NOT_LOW),
    (Constraints(requires_storage_not_low=True), DeviceState(storage_low=True), ALL_GOOD,
     StopReason.CONSTRAINT_STORAGE_NOT_LOW),
    (Constraints(requires_device_idle=True), DeviceState(device_idle=False), ALL_GOOD,
     StopReason.CONSTRAINT_DEVICE_IDLE),
    (Constraints(network_type=NetworkType.CONNECTED), DeviceState(network=False),
     DeviceState(metered=True, roaming=True), StopReason.CONSTRAINT_CONNECTIVITY),
    (Constraints(network_type=NetworkType.UNMETERED), DeviceState(metered=True), ALL_GOOD,
     StopReason.CONSTRAINT_CONNECTIVITY),
    (Constraints(network_type=NetworkType.NOT_ROAMING), DeviceState(roaming=True), ALL_GOOD,
     StopReason.CONSTRAINT_CONNECTIVITY),
    (Constraints(network_type=NetworkType.METERED), ALL_GOOD, DeviceState(metered=True),
     StopReason.CONSTRAINT_CONNECTIVITY),
])
def test_each_constraint_fails_on_its_condition_only(constraints, bad, good, reason):
    assert unmet(constraints.to_dict(), bad) == [reason]
    assert unmet(constraints.to_dict(), good) == []


def test_several_unmet_constraints_are_all_named():
    constraints = Constraints(requires_charging=True, requires_battery_not_low=True)
    state = DeviceState(charging=False, battery_low=True)
    assert unmet(constraints.to_dict(), state) == [
        StopReason.CONSTRAINT_CHARGING, StopReason.CONSTRAINT_BATTERY_NOT_LOW]


def test_device_idle_does_not_stop_running_work_but_the_others_do():
    assert not stops_running_work(StopReason.CONSTRAINT_DEVICE_IDLE)
    assert stops_running_work(StopReason.CONSTRAINT_CHARGING)


def test_device_state_round_trips_and_ignores_unknown_keys():
    state = DeviceState(charging=False, network=False)
    assert DeviceState.from_dict({**state.to_dict(), "flux": True}) == state


Battery = namedtuple("Battery", "percent secsleft power_plugged")


@pytest.mark.parametrize("battery, charging, low", [
    (None, True, False),  # no battery: counts as charging and never low
    (Battery(80, 1000, True), True, False),
    (Battery(80, 1000, False), False, False),
    (Battery(LOW_BATTERY_PERCENT, 100, False), False, True),
    (Battery(5, 100, True), True, False),  # plugged in: not low
])
def test_host_battery_readings(monkeypatch, tmp_path, battery, charging, low):
    # A battery cannot exist on this machine: psutil's reading is the one thing mocked.
    monkeypatch.setattr(psutil, "sensors_battery", lambda: battery)
    state = HostConditions(str(tmp_path)).read()
    assert (state.charging, state.battery_low) == (charging, low)


def test_host_storage_low_when_free_share_is_small(monkeypatch, tmp_path):
    Usage = namedtuple("Usage", "total used free percent")
    monkeypatch.setattr(psutil, "disk_usage", lambda path: Usage(1000, 950, 50, 95.0))
    assert HostConditions(str(tmp_path)).read().storage_low
    monkeypatch.setattr(psutil, "disk_usage", lambda path: Usage(1000, 500, 500, 50.0))
    assert not HostConditions(str(tmp_path)).read().storage_low


def test_host_is_not_idle_before_a_whole_spell_was_observed(tmp_path):
    assert HostConditions(str(tmp_path)).read().device_idle is False


def test_host_network_reading_matches_the_interfaces(tmp_path):
    stats = psutil.net_if_stats()
    addresses = psutil.net_if_addrs()
    expected = any(s.isup and not name.startswith("lo") and addresses.get(name)
                   for name, s in stats.items())
    assert HostConditions(str(tmp_path)).read().network is expected
