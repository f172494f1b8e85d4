"""Waiters learn of a commit from the store's change signal (inotify), not by polling.

Every test here sets the safety-net poll to a huge interval: a wait that returns did so
because a commit woke it (with no signal it would hang until the test's timeout).
"""

import os
import shutil
import sys
import threading

import pytest

from nbwork import OneTimeWorkRequest, WorkState, _changes, _observe
from nbwork._store import Store

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="change signals use inotify (Linux)")

HUGE = 1e6


def noop():
    return None


@pytest.fixture
def no_poll(monkeypatch):
    """Only a change signal can end a wait: its polls are a million seconds apart. Yields
    what each of the waits' ``ChangeListener.wait`` returned (True: woken by a signal)."""
    monkeypatch.setattr(_observe, "NOTIFIED_WAIT_POLL", HUGE)
    monkeypatch.setattr(_observe, "POLLED_START", 0)
    monkeypatch.setattr(_observe, "ENSURE_RUNNING_INTERVAL", HUGE)
    woken: list[bool] = []
    wait = _changes.ChangeListener.wait

    def noting_wait(self, timeout):
        woken.append(wait(self, timeout))
        return woken[-1]

    monkeypatch.setattr(_changes.ChangeListener, "wait", noting_wait)
    return woken


def _commit(store: Store, value: int = 1) -> None:
    with store.transaction() as txn:
        txn.set_value("x", value)


def test_a_commit_wakes_a_listener_registered_before_it(tmp_path):
    store = Store(str(tmp_path / "s"))
    try:
        with _changes.listening(store.changes.path, store.path) as listener:
            assert listener.available
            assert not listener.wait(0)  # nothing committed since it listens
            _commit(store)
            assert listener.wait(30)
            assert not listener.wait(0)  # the event was consumed
    finally:
        store.close()


def test_a_commit_in_another_thread_wakes_a_blocked_listener(tmp_path):
    store = Store(str(tmp_path / "s"))
    other = Store(store.path)  # another connection, as another process would have
    try:
        with _changes.listening(store.changes.path, store.path) as listener:
            thread = threading.Thread(target=_commit, args=(other,))
            thread.start()
            assert listener.wait(30)
            thread.join()
    finally:
        other.close()
        store.close()


def test_a_reused_listener_hears_the_store_made_anew_at_the_same_path(tmp_path):
    path = str(tmp_path / "s")
    first = Store(path)
    with _changes.listening(first.changes.path, first.path):
        pass  # given back to the pool of idle listeners
    first.close()
    shutil.rmtree(path)
    second = Store(path)
    try:
        with _changes.listening(second.changes.path, second.path) as listener:
            assert listener.inode == os.stat(second.changes.path).st_ino
            _commit(second)
            assert listener.wait(30)
    finally:
        second.close()


def test_a_cancel_in_another_thread_ends_a_wait(client, no_poll, monkeypatch):
    request = OneTimeWorkRequest(noop)
    client.enqueue(request)
    waiting = threading.Event()
    wait = _changes.ChangeListener.wait

    def noting_wait(self, timeout):
        waiting.set()
        return wait(self, timeout)

    monkeypatch.setattr(_changes.ChangeListener, "wait", noting_wait)

    def cancel():
        waiting.wait(30)
        client.cancel_work_by_id(request.id)

    thread = threading.Thread(target=cancel)
    thread.start()
    info = client.wait(request, timeout=60)
    thread.join()
    assert info.state is WorkState.CANCELLED
    assert no_poll == [True]  # woken by the cancel's commit, not by the end of a pause


def test_no_wake_up_is_lost_between_the_look_and_the_wait(client, no_poll, monkeypatch):
    """A commit after the waiter read the counter and looked, before it blocks: the
    listener registered first has queued its event, so the wait still ends."""
    request = OneTimeWorkRequest(noop)
    client.enqueue(request)
    look = _observe.Wait._look_by_id
    looks = []

    def look_then_cancel(self):
        result = look(self)
        looks.append(result[0])
        if len(looks) == 1:
            client.cancel_work_by_id(request.id)  # in the gap
        return result

    monkeypatch.setattr(_observe.Wait, "_look_by_id", look_then_cancel)
    info = client.wait(request, timeout=60)
    assert info.state is WorkState.CANCELLED
    assert looks == [False, True]
    assert no_poll == [True]


def test_without_inotify_a_wait_polls(client, monkeypatch):
    monkeypatch.setattr(_changes, "_libc", lambda: None)
    monkeypatch.setattr(_changes, "_idle", {})
    with _changes.listening(client._store.changes.path, client._store.path) as listener:
        assert not listener.available
        assert not listener.wait(0)
    request = OneTimeWorkRequest(noop)
    client.enqueue(request)
    look = _observe.Wait._look_by_id

    def look_then_cancel(self):
        result = look(self)
        if not result[0]:
            client.cancel_work_by_id(request.id)
        return result

    monkeypatch.setattr(_observe.Wait, "_look_by_id", look_then_cancel)
    assert client.wait(request, timeout=60).state is WorkState.CANCELLED


@pytest.mark.slow
def test_the_scheduler_wakes_a_waiter(wm, no_poll):
    """A real scheduler's commits end a wait whose polls are a million seconds apart."""
    wm.daemon.ensure_running()
    woken = no_poll
    for _ in range(3):
        request = OneTimeWorkRequest(noop)
        wm.enqueue(request)
        assert wm.wait(request, timeout=120).state is WorkState.SUCCEEDED
    assert woken and all(woken)  # every pause ended by a commit's signal
