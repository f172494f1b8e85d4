"""The write-ahead log is checkpointed by the scheduler's ``Checkpointer`` thread, not inside
a commit: a commit that checkpointed took 5-12 ms instead of well under one, which was the
slowest of 100 idle enqueue -> SUCCEEDED round trips (issue 15's p99)."""

from __future__ import annotations

import struct

import pytest

from nbwork import OneTimeWorkRequest, WorkManager, WorkState
from nbwork._store import Store
from nbwork._store.checkpoint import AUTOCHECKPOINT_PAGES
from tests.conftest import stop_scheduler, wait_until
from tests.test_scheduler_memory import database_file


def noop() -> None:
    return None


def log_frames(path: str) -> tuple[int, int]:
    """(frames in the write-ahead log, frames of it already copied into the database), from
    the log's index, the ``-shm`` file: ``mxFrame`` of its header and ``nBackfill`` of its
    checkpoint information (SQLite's documented WAL-index layout, native byte order)."""
    with open(f"{database_file(path)}-shm", "rb") as f:
        head = f.read(100)
    return struct.unpack_from("=I", head, 16)[0], struct.unpack_from("=I", head, 96)[0]


def write_records(store: Store, count: int) -> None:
    from nbwork import _ops
    from nbwork._code import serialize_worker
    from nbwork._records import spec_of_request

    requests = [OneTimeWorkRequest(noop, initial_delay=3600) for _ in range(count)]
    code_key, payload = serialize_worker(noop, requests[0].worker_name)
    works = [_ops.NewWork(spec_of_request(r, code_key, (), None), payload) for r in requests]
    with store.transaction() as txn:
        _ops.enqueue_in(txn, works, [], 0.0)


def test_no_connection_of_a_store_checkpoints_before_its_backstop(store_path):
    store = Store(store_path)
    try:
        assert AUTOCHECKPOINT_PAGES > 1000  # (SQLite's default, reached every 1.5 s)
        con = store._cache._con
        assert con.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == AUTOCHECKPOINT_PAGES
        write_records(store, 200)
        frames, copied = log_frames(store_path)
        assert frames > 0 and copied < frames  # the commit left its frames in the log
    finally:
        store.close()


def test_the_checkpointer_copies_the_log_when_it_was_written_and_only_then(store_path):
    store = Store(store_path)
    checkpointer = store.checkpointer()
    try:
        write_records(store, 50)
        frames, copied = log_frames(store_path)
        assert copied < frames
        assert checkpointer.checkpoint_if_written()
        assert log_frames(store_path) == (frames, frames)
        assert not checkpointer.checkpoint_if_written()  # nothing written since
        write_records(store, 50)
        assert checkpointer.checkpoint_if_written()
        frames, copied = log_frames(store_path)
        assert copied == frames
        assert checkpointer.checkpoints == 2
    finally:
        checkpointer.close()
        store.close()


def test_the_checkpointer_thread_checkpoints_and_stops_when_closed(store_path):
    store = Store(store_path)
    checkpointer = store.checkpointer()
    checkpointer.interval = 0.01
    checkpointer.start()
    try:
        write_records(store, 50)
        wait_until(lambda: log_frames(store_path)[1] == log_frames(store_path)[0] > 0,
                   timeout=10, what="the thread to checkpoint the log")
        thread = checkpointer._thread
    finally:
        checkpointer.close()
        store.close()
    assert thread is not None and not thread.is_alive()


def test_closing_the_checkpointer_checkpoints_what_was_written_last(store_path):
    store = Store(store_path)
    checkpointer = store.checkpointer()
    checkpointer.interval = 3600.0  # never on its own: only close() can do it
    checkpointer.start()
    try:
        write_records(store, 50)
    finally:
        checkpointer.close()
    try:
        frames, copied = log_frames(store_path)
        assert copied == frames > 0
    finally:
        store.close()


def test_a_checkpointer_that_cannot_checkpoint_logs_it_once_and_goes_on(store_path, caplog):
    import sqlite3

    store = Store(store_path)
    checkpointer = store.checkpointer()
    try:
        write_records(store, 10)
        broken = sqlite3.connect(":memory:")
        broken.close()
        checkpointer._con = broken  # every statement raises sqlite3.ProgrammingError
        checkpointer._look()
        checkpointer._look()
        assert sum("could not checkpoint" in r.message for r in caplog.records) == 1
        checkpointer._con = None  # a new connection: it works again
        checkpointer._look()
        frames, copied = log_frames(store_path)
        assert copied == frames > 0
    finally:
        checkpointer.close()
        store.close()


@pytest.mark.slow
def test_the_scheduler_checkpoints_the_log_it_wrote(tmp_path):
    path = str(tmp_path / "store")
    wm = WorkManager(path)
    try:
        wm.enqueue([OneTimeWorkRequest(noop) for _ in range(20)])
        wait_until(lambda: all(i.state is WorkState.SUCCEEDED for i in wm.get_work_infos()),
                   timeout=60, what="20 works to succeed")
        # No commit of the client or the scheduler reached AUTOCHECKPOINT_PAGES: only the
        # scheduler's Checkpointer copies the log.
        wait_until(lambda: log_frames(path)[1] == log_frames(path)[0] > 0, timeout=30,
                   what="the scheduler to checkpoint the log")
    finally:
        stop_scheduler(path)
