"""A worker that captured a big global (an image, a DataFrame, a model) must not take the
scheduler down: its code blob is read once and sent to each worker process once, whatever
the number of queued works, and an enqueue of such a worker warns, naming the global.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import warnings

import pytest

from nbwork import OneTimeWorkRequest, WorkManager, WorkState
from nbwork._code import LARGE_WORKER
from nbwork.errors import LargeWorkerWarning
from tests.conftest import stop_scheduler, wait_until

MiB = 1 << 20


def worker_with_global(size: int, name: str = "BIG"):
    """A notebook-style function worker whose code refers to a global of ``size`` bytes
    (defined as if in a notebook cell, so it is pickled by value with that global)."""
    namespace = {"__name__": "__main__", name: os.urandom(size)}
    exec(f"def use_global(n: int) -> dict:\n    return {{'n': n, 'size': len({name})}}\n",
         namespace)
    return namespace["use_global"]


def peak_rss(pid: int) -> int:
    """The peak resident set size of a live process (``VmHWM``), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def scheduler_peak_for(path: str, global_size: int, works: int) -> int:
    wm = WorkManager(path)
    worker = worker_with_global(global_size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LargeWorkerWarning)
        wm.enqueue([OneTimeWorkRequest(worker, input_data={"n": i}) for i in range(works)])
    # One enqueue of 300 works serializes (and warns about) the worker once.
    assert len(caught) == (global_size > LARGE_WORKER)
    if caught:
        assert "captured globals: `BIG` (20 MiB)" in str(caught[0].message)
        assert caught[0].filename == __file__
    pid = wm.daemon.start()
    try:
        wait_until(lambda: all(i.state.is_finished for i in wm.get_work_infos()),
                   timeout=300, what=f"{works} works to finish")
        assert {i.state for i in wm.get_work_infos()} == {WorkState.SUCCEEDED}
        assert wm.daemon.pid == pid, "the scheduler must have lived through the whole run"
        return peak_rss(pid)
    finally:
        stop_scheduler(path)


@pytest.mark.slow
def test_scheduler_memory_does_not_grow_with_payload_times_queued_works(tmp_path):
    works = 300
    small = scheduler_peak_for(str(tmp_path / "small"), 1024, works)
    big = scheduler_peak_for(str(tmp_path / "big"), 20 * MiB, works)
    # One copy of the blob while its attempts are in flight, and none per attempt: before,
    # each queued attempt held its own copy (300 × 20 MiB peaked at 2.65 GiB).
    assert big < 2 * small, f"scheduler peak RSS {big / MiB:.0f} MiB with a 20 MiB global, " \
                            f"{small / MiB:.0f} MiB with 1 KiB"


def mapped_files(pid: int) -> set[str]:
    """The files a live process has memory-mapped (``/proc/<pid>/maps``)."""
    with open(f"/proc/{pid}/maps") as f:
        return {parts[5].strip() for parts in (line.split(maxsplit=5) for line in f)
                if len(parts) == 6}


def database_file(path: str) -> str:
    from nbwork import _layout

    return os.path.realpath(os.path.join(path, _layout.DB_DIR, _layout.DB_FILE))


def test_a_store_that_bounds_its_memory_reads_through_a_page_cache(client, store_path):
    """``Store.bound_memory``: no memory map of the database (diskcache maps 64 MiB of it,
    and every page touched stayed resident), a page cache of the given size instead."""
    from nbwork._store import Store

    request = OneTimeWorkRequest(worker_with_global(16), input_data={"n": 1})
    client.enqueue(request)
    store = Store(store_path, create=False)
    try:
        con = store._cache._con
        assert con.execute("PRAGMA mmap_size").fetchone()[0] > 0  # diskcache's default
        store.bound_memory(page_cache_kib=2048)
        assert con.execute("PRAGMA mmap_size").fetchone()[0] == 0
        assert con.execute("PRAGMA cache_size").fetchone()[0] == -2048
        assert store.get(request.id).state is WorkState.ENQUEUED  # and it still reads
    finally:
        store.close()


@pytest.mark.slow
def test_the_scheduler_never_maps_its_database(tmp_path):
    """Its resident memory grew with the store (every page of diskcache's 64 MiB map it had
    touched stayed resident: 10 MiB over a run of 20,000 works): it reads through a page
    cache of bounded size instead."""
    path = str(tmp_path / "store")
    wm = WorkManager(path)
    worker = worker_with_global(16)
    wm.enqueue([OneTimeWorkRequest(worker, input_data={"n": i}) for i in range(300)])
    # All of it into the database file: pages still in the write-ahead log are read from
    # there, and a scheduler that read only those would map nothing even with a map.
    with contextlib.closing(sqlite3.connect(database_file(path))) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pid = wm.daemon.start()
    try:
        wait_until(lambda: all(i.state.is_finished for i in wm.get_work_infos()),
                   timeout=120, what="300 works to finish")
        database, mapped = database_file(path), mapped_files(pid)
        assert f"{database}-shm" in mapped  # (every connection in WAL mode maps that one)
        assert database not in mapped
        assert wm.daemon.pid == pid
    finally:
        stop_scheduler(path)
