"""Content triggers (WorkManager's content URI triggers) on folders: the rules step by step
with a manual clock and real files, then end to end with a real scheduler."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import pytest

from nbwork import (
    Constraints,
    ContentTrigger,
    InvalidInputError,
    InvalidRequestError,
    OneTimeWorkRequest,
    PeriodicWorkRequest,
    Result,
    Worker,
    WorkState,
)
from nbwork._scheduler import Scheduler
from nbwork._store import Store
from nbwork.testing import TestDriver, run_worker
from tests.conftest import wait_until


def changed_paths(triggered_content_paths: list) -> dict:
    """A function worker that asks for the paths that triggered it."""
    return {"paths": triggered_content_paths}


class PathsWorker(Worker):
    def do_work(self) -> Result:
        return Result.success({"paths": list(self.triggered_content_paths)})






@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "incoming"
    path.mkdir()
    return path


def _scheduler(client, clock) -> Scheduler:
    from nbwork._executors.inline import InlineExecutor

    return Scheduler(Store(client.store_path), executor=InlineExecutor(), clock=clock)


def _state(client, request):
    return client.get_work_info_by_id(request.id).state


def _noticed(sched, client, request, count: int = 1) -> bool:
    """Whether the scheduler has noticed ``count`` changed paths, after one more step (real
    file events come from another thread; a full listing at each step makes this
    independent of them)."""
    sched._content.rescan()
    sched.step()
    return len(client.get_work_info_by_id(request.id).triggered_content_paths) >= count


def _triggered(folder, descendants=False, **delays) -> OneTimeWorkRequest:
    return OneTimeWorkRequest(changed_paths, constraints=Constraints(
        content_triggers=[ContentTrigger(folder, descendants=descendants)], **delays))


# --- validation -----------------------------------------------------------------------------


def test_a_trigger_path_must_exist(tmp_path):
    with pytest.raises(InvalidRequestError, match="does not exist.*create the folder"):
        ContentTrigger(tmp_path / "missing")


def test_a_trigger_on_a_symlink_loop_is_refused(tmp_path):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    with pytest.raises(InvalidRequestError, match="symbolic link loop"):
        ContentTrigger(tmp_path / "a")


def test_negative_delays_are_refused(folder):
    with pytest.raises(InvalidInputError, match="trigger_content_update_delay must be zero"):
        Constraints(content_triggers=[ContentTrigger(folder)], trigger_content_update_delay=-1)
    with pytest.raises(InvalidInputError, match="trigger_content_max_delay must be zero"):
        Constraints(content_triggers=[ContentTrigger(folder)],
                    trigger_content_max_delay=timedelta(seconds=-1))


def test_delays_without_triggers_and_odd_items_are_refused(folder):
    with pytest.raises(InvalidRequestError, match="need content_triggers"):
        Constraints(trigger_content_update_delay=2)
    with pytest.raises(InvalidRequestError, match="ContentTrigger"):
        Constraints(content_triggers=[42])


def test_periodic_work_cannot_have_content_triggers(folder):
    with pytest.raises(InvalidRequestError, match="periodic work cannot have content_triggers"):
        PeriodicWorkRequest(changed_paths, repeat_interval=60,
                            constraints=Constraints(content_triggers=[ContentTrigger(folder)]))


def test_constraints_keep_their_triggers_through_the_store(folder):
    constraints = Constraints(content_triggers=[ContentTrigger(folder, descendants=True)],
                              trigger_content_update_delay=2, trigger_content_max_delay=30)
    again = Constraints.from_dict(constraints.to_dict())
    assert again == constraints
    assert again.content_triggers[0].path == str(folder)
    assert Constraints().to_dict() == Constraints.from_dict(Constraints().to_dict()).to_dict()


# --- the rules, step by step ----------------------------------------------------------------


def test_a_waiting_work_shows_its_triggers(client, clock, folder):
    request = _triggered(folder)
    client.enqueue(request)
    info = client.get_work_info_by_id(request.id)
    assert info.state is WorkState.ENQUEUED
    assert info.waiting_for_content
    assert info.content_triggers == (ContentTrigger(folder),)
    assert info.next_schedule_time is None
    assert "waiting for content: " + str(folder) in str(info)


def test_the_work_table_details_show_the_triggers(client, clock, folder):
    from nbwork.widgets._html import details

    request = _triggered(folder, descendants=True)
    client.enqueue(request)
    html = details(client.get_work_info_by_id(request.id), "")
    assert f"<code>{folder}</code> and below; waiting for a change" in html
    TestDriver(client).set_content_changed(request.id, [str(folder / "a.png")])
    html = details(client.get_work_info_by_id(request.id), "")
    assert f"changed: <code>{folder / 'a.png'}</code>" in html


def test_why_waiting_says_the_work_waits_for_its_content(client, clock, folder):
    from nbwork.explain import constraint_words, why_waiting

    request = _triggered(folder, trigger_content_update_delay=10)
    client.enqueue(request)
    info = client.get_work_info_by_id(request.id)
    assert why_waiting(info) == f"waits for a change in {folder}"
    assert constraint_words(info.constraints) == [f"a change in {folder}"]
    TestDriver(client).set_content_changed(request.id, [str(folder / "a.png")])
    info = client.get_work_info_by_id(request.id)
    assert why_waiting(info, now=datetime.fromtimestamp(clock.now())).startswith(
        "update delay after its content changed until ")


@pytest.mark.parametrize("change", ["create", "modify", "delete"])
def test_a_change_after_enqueue_triggers_the_work(client, clock, folder, change):
    before = folder / "before.txt"
    before.write_text("old")
    request = _triggered(folder)
    client.enqueue(request)
    sched = _scheduler(client, clock)
    for _ in range(3):  # what was there before the enqueue does not count
        sched._content.rescan()
        sched.step()
    assert _state(client, request) is WorkState.ENQUEUED
    assert client.get_work_info_by_id(request.id).waiting_for_content

    if change == "create":
        (folder / "new.txt").write_text("new")
        expected = [str(folder / "new.txt")]
    elif change == "modify":
        before.write_text("changed, and longer")
        expected = [str(before)]
    else:
        before.unlink()
        expected = [str(before)]
    wait_until(lambda: _noticed(sched, client, request), what="the change to be noticed")
    sched.step()
    sched.step()
    info = client.get_work_info_by_id(request.id)
    assert info.state is WorkState.SUCCEEDED
    assert list(info.output_data["paths"]) == expected
    assert info.triggered_content_paths == tuple(expected)


def test_descendants_decide_whether_changes_in_subfolders_count(client, clock, folder):
    sub = folder / "sub"
    sub.mkdir()
    shallow, deep = _triggered(folder), _triggered(folder, descendants=True)
    client.enqueue([shallow, deep])
    sched = _scheduler(client, clock)
    sched.step()
    (sub / "inner.txt").write_text("x")
    wait_until(lambda: _noticed(sched, client, deep), what="the change to be noticed")
    sched.step()
    sched.step()
    assert _state(client, deep) is WorkState.SUCCEEDED
    assert _state(client, shallow) is WorkState.ENQUEUED
    assert client.get_work_info_by_id(deep.id).output_data["paths"] == [str(sub / "inner.txt")]


def test_changes_coalesce_for_the_update_delay(client, clock, folder):
    request = _triggered(folder, trigger_content_update_delay=10)
    client.enqueue(request)
    sched = _scheduler(client, clock)
    sched.step()
    (folder / "a.txt").write_text("a")
    wait_until(lambda: _noticed(sched, client, request), what="the first change")
    clock.advance(5)
    (folder / "b.txt").write_text("b")
    wait_until(lambda: _noticed(sched, client, request, 2), what="the second change")
    clock.advance(9.9)  # 14.9 s after the first change, 9.9 s after the last
    sched.step()
    assert _state(client, request) is WorkState.ENQUEUED
    clock.advance(0.1)
    sched.step()
    sched.step()
    info = client.get_work_info_by_id(request.id)
    assert info.state is WorkState.SUCCEEDED
    assert info.output_data["paths"] == [str(folder / "a.txt"), str(folder / "b.txt")]


def test_the_max_delay_caps_the_wait(client, clock, folder):
    request = _triggered(folder, trigger_content_update_delay=10, trigger_content_max_delay=12)
    client.enqueue(request)
    driver = TestDriver(client)
    sched = _scheduler(client, clock)
    driver.set_content_changed(request.id, [str(folder / "1")])
    clock.advance(5)
    driver.set_content_changed(request.id, [str(folder / "2")])
    clock.advance(5)
    driver.set_content_changed(request.id, [str(folder / "3")])
    clock.advance(1.9)  # 11.9 s after the first change: under the cap
    sched.step()
    assert _state(client, request) is WorkState.ENQUEUED
    clock.advance(0.1)  # 12 s: the cap, though the last change was 2 s ago
    sched.step()
    sched.step()
    info = client.get_work_info_by_id(request.id)
    assert info.state is WorkState.SUCCEEDED
    assert info.output_data["paths"] == [str(folder / n) for n in ("1", "2", "3")]


def test_the_test_driver_fires_a_trigger_alongside_the_device_state(client, clock, folder):
    request = OneTimeWorkRequest(PathsWorker, constraints=Constraints(
        requires_charging=True, content_triggers=[ContentTrigger(folder)]))
    client.enqueue(request)
    driver = TestDriver(client)
    driver.set_device_state(charging=False)
    sched = _scheduler(client, clock)
    driver.set_content_changed(request.id, [str(folder / "b"), str(folder / "a"),
                                            str(folder / "a")])
    sched.step()
    sched.step()
    info = client.get_work_info_by_id(request.id)
    assert info.state is WorkState.ENQUEUED and not info.waiting_for_content
    driver.set_device_state(charging=True)
    sched.step()
    sched.step()
    info = client.get_work_info_by_id(request.id)
    assert info.state is WorkState.SUCCEEDED
    assert info.output_data["paths"] == [str(folder / "a"), str(folder / "b")]


def test_the_test_driver_refuses_work_without_triggers(client, clock):
    request = OneTimeWorkRequest(changed_paths, initial_delay=60)
    client.enqueue(request)
    with pytest.raises(InvalidInputError, match="has no content triggers"):
        TestDriver(client).set_content_changed(request.id, ["/x"])


def test_run_worker_and_a_plain_function_see_no_paths_by_default():
    assert run_worker(PathsWorker).output_data == {"paths": []}
    assert run_worker(changed_paths).output_data == {"paths": []}


# --- end to end ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_scheduler_runs_the_work_when_a_file_arrives(wm, folder):
    constraints = Constraints(content_triggers=[ContentTrigger(folder)],
                              trigger_content_update_delay=0.2)
    requests = [OneTimeWorkRequest(PathsWorker, constraints=constraints),
                OneTimeWorkRequest(changed_paths, constraints=constraints)]
    wm.enqueue(requests)
    wm.daemon.start()
    for request in requests:
        info = wm.get_work_info_by_id(request.id)
        assert info.state is WorkState.ENQUEUED and info.waiting_for_content
    (folder / "photo.png").write_bytes(b"x")
    for info in wm.wait(requests, timeout=60):
        assert info.state is WorkState.SUCCEEDED
        assert info.output_data["paths"] == [str(folder / "photo.png")]


@pytest.mark.slow
def test_a_change_while_no_scheduler_runs_counts(wm, folder):
    request = OneTimeWorkRequest(PathsWorker, constraints=Constraints(
        content_triggers=[ContentTrigger(folder)]))
    wm.enqueue(request)
    wm.daemon.start()
    assert wm.daemon.stop()
    (folder / "while-down.png").write_bytes(b"x")
    info = wm.wait(request.id, timeout=60)  # (wait starts the scheduler again)
    assert info.output_data["paths"] == [str(folder / "while-down.png")]
