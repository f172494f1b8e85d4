"""Shared fixtures: every test gets its own private store; schedulers are stopped by PID."""

from __future__ import annotations

import subprocess
import time

import pytest

from nbwork import WorkManager
from nbwork._time import ManualClock
from tests.helpers import all_schedulers_settled, stop_scheduler


def wait_until(condition, timeout: float = 30.0, what: str = "condition"):
    """Poll ``condition()`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


@pytest.fixture
def store_path(tmp_path, monkeypatch):
    path = tmp_path / "store"
    # Never touch the user's default store from a test.
    monkeypatch.setenv("NBWORK_HOME", str(tmp_path / "default-store-must-not-be-used"))
    yield str(path)
    if path.exists():
        stop_scheduler(str(path))


@pytest.fixture
def wm(store_path):
    manager = WorkManager(store_path)
    yield manager
    stop_scheduler(store_path)


@pytest.fixture
def settle_schedulers(store_path):
    """``stop_scheduler`` (the fixtures' teardown) stops the scheduler that holds the store;
    one still starting up, spawned by a client that did not wait for it, would escape it.
    So before that teardown, wait until each scheduler of the store holds it or has exited."""
    yield
    wait_until(lambda: all_schedulers_settled(store_path), what="schedulers to settle")


@pytest.fixture(autouse=True)
def stop_spawned_schedulers():
    """After each test, stop every scheduler this test process spawned that still runs.

    ``stop_scheduler`` finds a scheduler by the lock it holds; one spawned just before a
    test ended may not hold it yet, would be missed, and (with delayed work in its store)
    would then run for ever. Stopped by PID, like every other process a test starts.
    """
    yield
    from nbwork import _daemon

    for child in list(_daemon._children):
        if child.poll() is not None:
            continue
        child.terminate()
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)


@pytest.fixture(autouse=True)
def only_slow_tests_start_a_scheduler(request, monkeypatch):
    """The fast lane (``-m "not slow"``) stays fast only while its tests start no scheduler
    process: a test not marked ``slow`` that starts one fails here. Mark it
    ``@pytest.mark.slow``, or step the scheduler in this process (``TestDriver``,
    ``tests/test_scheduler_steps.py``)."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    from nbwork import _daemon

    started = []
    spawn = _daemon.Daemon.spawn

    def note_and_spawn(daemon):
        started.append(daemon.store_path)
        return spawn(daemon)

    monkeypatch.setattr(_daemon.Daemon, "spawn", note_and_spawn)
    yield
    if started:
        pytest.fail(f"{request.node.nodeid} started a scheduler process ({len(started)}x) but "
                    "is not marked slow: mark it @pytest.mark.slow, or step the scheduler in "
                    "this process (TestDriver)", pytrace=False)


@pytest.fixture
def clock():
    """A manual clock for the stepped scheduler and a client that share it."""
    return ManualClock()


@pytest.fixture
def client(store_path, clock, monkeypatch):
    """A WorkManager on the manual clock that never starts a real scheduler (the tests step
    one themselves)."""
    manager = WorkManager(store_path)
    manager.clock = clock
    monkeypatch.setattr(manager.daemon, "ensure_running", lambda: None)
    yield manager
    assert manager.daemon.pid is None  # no scheduler took part


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs, to be filled (the store's own files need a few MB of room first)."""
    from tests.reliability import mount_tmpfs, unmount  # it imports this module

    mount = tmp_path / "disk"
    why_not = mount_tmpfs(str(mount), "16m")
    if why_not:
        pytest.skip(f"cannot mount a small disk to fill: {why_not}")
    try:
        yield mount
    finally:
        stop_scheduler(str(mount / "store"))
        unmount(str(mount))
