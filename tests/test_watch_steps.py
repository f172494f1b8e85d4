"""Hot folders step by step: ``Scheduler.step()`` with an inline executor, no daemon.
Real files; ``settle=0`` so that no test waits for a settle time."""

from __future__ import annotations

import os

import pytest

from nbwork import WorkManager, WorkState
from nbwork._executors.inline import InlineExecutor
from nbwork._scheduler import Scheduler
from nbwork._store import Store
from tests.conftest import wait_until
from tests.helpers import echo


@pytest.fixture
def client(store_path, monkeypatch):
    manager = WorkManager(store_path)
    monkeypatch.setattr(manager.daemon, "ensure_running", lambda: None)
    yield manager
    assert manager.daemon.pid is None


@pytest.fixture
def inbox(tmp_path):
    path = tmp_path / "inbox"
    path.mkdir(mode=0o700)
    return path


def make_request(path: str):
    from nbwork import OneTimeWorkRequest

    return OneTimeWorkRequest(echo, input_data={"path": path})


def _scheduler(client) -> Scheduler:
    return Scheduler(Store(client.store_path), executor=InlineExecutor(capacity=64))


def _paths(client, tag="watch:w") -> list[str]:
    return sorted(os.path.basename(str(i.input_data["path"]))
                  for i in client.get_work_infos_by_tag(tag))


def _steps(sched, count=3) -> None:
    for _ in range(count):
        sched.step()


def test_lost_events_cost_latency_not_files(client, inbox):
    """An overflowed inotify queue (here: every event dropped) loses nothing: the next
    full listing finds the files."""
    client.watch_folder("w", inbox, make_request, settle=0)
    sched = _scheduler(client)
    sched._content._events.dispatch = lambda event: None  # every event is lost
    sched.step()
    for name in ("a.dat", "b.dat"):
        (inbox / name).write_text(name)
    _steps(sched)
    assert _paths(client) == []  # no event, no listing yet
    sched._content.rescan()
    _steps(sched)
    assert _paths(client) == ["a.dat", "b.dat"]
    assert {i.state for i in client.get_work_infos_by_tag("watch:w")} == {WorkState.SUCCEEDED}


def test_events_are_enough_without_a_listing(client, inbox):
    client.watch_folder("w", inbox, make_request, settle=0)
    sched = _scheduler(client)
    sched.step()
    (inbox / "a.dat").write_text("a")
    wait_until(lambda: (sched.step(), _paths(client))[1] == ["a.dat"], what="the event")


def test_a_new_scheduler_takes_nothing_twice_and_finds_what_came_meanwhile(client, inbox):
    client.watch_folder("w", inbox, make_request, settle=0)
    (inbox / "old.dat").write_text("old")
    first = _scheduler(client)
    _steps(first)
    assert _paths(client) == ["old.dat"]
    first._content.close()
    (inbox / "new.dat").write_text("new")  # while no scheduler runs
    second = _scheduler(client)
    _steps(second)
    assert _paths(client) == ["new.dat", "old.dat"]
    second._content.rescan()
    _steps(second)
    assert _paths(client) == ["new.dat", "old.dat"]


def test_existing_false_skips_what_is_already_there(client, inbox):
    (inbox / "before.dat").write_text("x")
    client.watch_folder("w", inbox, make_request, settle=0, existing=False)
    sched = _scheduler(client)
    (inbox / "after.dat").write_text("y")
    sched._content.rescan()
    _steps(sched)
    assert _paths(client) == ["after.dat"]


def test_a_stopped_watch_takes_no_more_files(client, inbox):
    client.watch_folder("w", inbox, make_request, settle=0)
    sched = _scheduler(client)
    sched.step()
    assert client.stop_watching("w")
    (inbox / "late.dat").write_text("z")
    sched._content.rescan()
    _steps(sched)
    assert _paths(client) == []
    assert not sched._content.has_watches
