"""The index of finished works (one row per work, store schema 2), the expiry index and its
chunked prune, and the upgrade of a store written by schema 1 (issue 15)."""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import sqlite3
import subprocess
import sys
import tarfile

import pytest

from nbwork import OneTimeWorkRequest, WorkManager, WorkState, _ops
from nbwork._code import serialize_worker
from nbwork._records import spec_of_request
from nbwork._rules import DEFAULT_PRUNE_AGE
from nbwork._store import STORE_SCHEMA, Store, Transaction, migration, rows
from nbwork.errors import StoreError
from tests import helpers

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
DAY = DEFAULT_PRUNE_AGE


def _enqueue(store: Store, now: float, *requests, prerequisites=()) -> list[str]:
    works = []
    for request in requests:
        code_key, payload = serialize_worker(request.worker, request.worker_name)
        spec = spec_of_request(request, code_key, tuple(prerequisites), None)
        works.append(_ops.NewWork(spec, payload))
    _ops.enqueue(store, works, [], now)
    return [r.id for r in requests]


def _finish(store: Store, ids, at: float, state=WorkState.SUCCEEDED) -> None:
    with store.transaction() as txn:
        for wid in ids:
            spec = txn.get(wid)
            spec.state, spec.finish_time = state, at
            txn.put(spec)


def _keys(path: str, prefix: str) -> list[str]:
    with sqlite3.connect(os.path.join(path, "db", "cache.db")) as db:
        return [k for (k,) in db.execute(
            "SELECT key FROM Cache WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, prefix + "\x7f"))]


@pytest.fixture
def store(store_path):
    opened = Store(store_path)
    yield opened
    opened.close()


def test_a_finished_work_is_one_row_listed_in_enqueue_order(store, store_path):
    ids = [_enqueue(store, 1000.0 + n, OneTimeWorkRequest(helpers.echo))[0]
           for n in (5, 1, 3, 2, 4)]
    _finish(store, ids, 2000.0)
    assert len(_keys(store_path, "i:f:SUCCEEDED:")) == 5
    assert _keys(store_path, "i:s:SUCCEEDED:") == []  # no shard of a finished state
    index = store.state_index(WorkState.SUCCEEDED)
    assert list(index) == [ids[1], ids[3], ids[2], ids[4], ids[0]]
    assert index[ids[0]] == 1005.0
    assert store.indexed_state(ids[0]) is WorkState.SUCCEEDED
    assert sorted(store.all_ids()) == sorted(ids)
    assert store.state_index(WorkState.ENQUEUED) == {}


def test_finishing_one_work_writes_only_its_own_rows(store, store_path, monkeypatch):
    ids = _enqueue(store, 1000.0, *[OneTimeWorkRequest(helpers.echo) for _ in range(40)])
    _finish(store, ids[:39], 2000.0)
    from nbwork._store import transaction

    written = []
    real_set, real_write_rows = store._cache.set, transaction.write_rows

    def write_rows(cache, items):  # the commit's one batched write
        items = list(items)
        written.extend(key for key, _ in items)
        real_write_rows(cache, items)

    monkeypatch.setattr(store._cache, "set", lambda key, value, *a, **k: written.append(key)
                        or real_set(key, value, *a, **k))
    monkeypatch.setattr(transaction, "write_rows", write_rows)
    _finish(store, ids[39:], 2001.0)
    assert not [k for k in written if k.startswith("i:s:SUCCEEDED")]  # no shard of them
    index_keys = sorted(k for k in written if k.startswith(("i:f:", "i:x:")))
    assert index_keys == sorted([rows.row_key(WorkState.SUCCEEDED, 1000.0, ids[39]),
                                 rows.expiry_key(2001.0 + DAY, ids[39])])
    assert len(store.state_index(WorkState.SUCCEEDED)) == 40


def test_the_expiry_row_says_when_retention_ends(store, store_path):
    short = OneTimeWorkRequest(helpers.echo)
    kept = OneTimeWorkRequest(helpers.echo, keep_results_for=3600)
    _enqueue(store, 1000.0, short, kept)
    _finish(store, [short.id, kept.id], 2000.0, WorkState.FAILED)
    assert _keys(store_path, "i:x:") == sorted([rows.expiry_key(2000.0 + DAY, short.id),
                                                rows.expiry_key(2000.0 + DAY + 3600,
                                                                kept.id)])
    assert [i for _, i in rows.expired(store._cache, 2000.0 + DAY)] == [short.id]
    _ops.prune(store, 5000.0 + DAY)
    assert _keys(store_path, "i:x:") == [] and _keys(store_path, "i:f:") == []


def test_the_expired_prune_reads_only_expired_works_and_keeps_needed_ones(store,
                                                                         monkeypatch):
    old = _enqueue(store, 1000.0, *[OneTimeWorkRequest(helpers.echo) for _ in range(3)])
    recent = _enqueue(store, 1000.0, OneTimeWorkRequest(helpers.echo))
    parent = _enqueue(store, 1000.0, OneTimeWorkRequest(helpers.echo))
    child = _enqueue(store, 1000.0, OneTimeWorkRequest(helpers.echo), prerequisites=parent)
    _finish(store, old + parent, 2000.0)
    _finish(store, recent, 9000.0)
    decoded: list[str] = []
    real_get_many = Transaction.get_many

    def get_many(txn, ids):
        ids = list(ids)
        decoded.extend(ids)
        return real_get_many(txn, ids)

    monkeypatch.setattr(Transaction, "get_many", get_many)
    pruned = _ops.prune(store, 3000.0 + DAY, expired_only=True)
    assert sorted(pruned) == sorted(old)  # the parent waits for its unfinished child
    assert sorted(decoded) == sorted(old + parent)  # the one not expired is never read
    assert store.get(parent[0]) is not None and store.get(child[0]) is not None
    assert _ops.prune(store, 3000.0 + DAY, expired_only=True) == []


def test_the_expired_prune_removes_a_chunk_per_transaction(store, monkeypatch):
    monkeypatch.setattr(_ops, "PRUNE_CHUNK", 3)
    ids = _enqueue(store, 1000.0, *[OneTimeWorkRequest(helpers.echo) for _ in range(10)])
    _finish(store, ids, 2000.0)
    before = store.change_counter()
    pruned = _ops.prune(store, 2000.0 + DAY, expired_only=True)
    assert sorted(pruned) == sorted(ids)
    assert store.state_index(WorkState.SUCCEEDED) == {}
    assert store.change_counter() - before == 4  # 3 + 3 + 3 + 1, each its own commit


def test_explicit_prune_keeps_its_semantics(store):
    done = _enqueue(store, 1000.0, OneTimeWorkRequest(helpers.echo))
    parent = _enqueue(store, 1000.0, OneTimeWorkRequest(helpers.echo))
    _enqueue(store, 1000.0, OneTimeWorkRequest(helpers.echo), prerequisites=parent)
    _finish(store, done + parent, 2000.0)
    assert _ops.prune(store, 2001.0) == done  # retention does not count; dependents do


def test_a_damaged_row_is_rebuilt_from_the_records(store, store_path):
    ids = _enqueue(store, 1000.0, *[OneTimeWorkRequest(helpers.echo) for _ in range(6)])
    _finish(store, ids, 2000.0, WorkState.CANCELLED)
    key = _keys(store_path, "i:f:CANCELLED:")[0]
    with sqlite3.connect(os.path.join(store_path, "db", "cache.db")) as db:
        db.execute("UPDATE Cache SET value = ?, mode = 4 WHERE key = ?",
                   (b"\x80\x05garbage", key))
        db.execute("INSERT INTO Cache (key, raw, store_time, expire_time, access_time, "
                   "access_count, tag, size, mode, filename, value) VALUES "
                   "('i:f:CANCELLED:junk', 1, 0, NULL, 0, 0, NULL, 0, 1, NULL, 1.0)")
    reopened = Store(store_path)
    try:
        assert sorted(reopened.state_index(WorkState.CANCELLED)) == sorted(ids)
    finally:
        reopened.close()
    assert len(_keys(store_path, "i:f:CANCELLED:")) == 6  # written back, junk gone


def test_an_unreadable_finished_record_loses_its_rows(store, store_path):
    ids = _enqueue(store, 1000.0, *[OneTimeWorkRequest(helpers.echo) for _ in range(3)])
    _finish(store, ids, 2000.0)
    with sqlite3.connect(os.path.join(store_path, "db", "cache.db")) as db:
        db.execute("UPDATE Cache SET value = ?, mode = 4 WHERE key = ?",
                   (b"\x80\x05garbage", f"w:{ids[0]}"))
    assert store.read(ids[0]).state is WorkState.SUCCEEDED  # listed, as Unreadable
    assert _ops.prune_unreadable(store, 3000.0) == [ids[0]]
    assert ids[0] not in store.state_index(WorkState.SUCCEEDED)
    assert not any(k.endswith(ids[0]) for k in _keys(store_path, "i:"))


# the upgrade of stores written by schema 1 and 2 (made by tests/fixtures/make_old_store.py
# with the code of 956e2cb) ---------------------------------------------------------------

def _old_store(tmp_path, schema: int = 1) -> str:
    with tarfile.open(FIXTURES / f"schema{schema}_store.tar.gz") as tar:
        tar.extractall(tmp_path, filter="tar")
    return str(tmp_path / "store")


def _listing(path: str) -> list[dict]:
    wm = WorkManager(path, resume=False)
    return [{"id": i.id, "state": i.state.name, "output": dict(i.output_data),
             "tags": sorted(i.tags), "unique": i.unique_work_name,
             "prerequisites": list(i.prerequisites)} for i in wm.get_work_infos()]


def _expected(schema: int = 1) -> list[dict]:
    return json.loads((FIXTURES / f"schema{schema}_store.json").read_text())["works"]


def _schema(path: str) -> int:
    with sqlite3.connect(os.path.join(path, "db", "cache.db")) as db:
        [(value,)] = db.execute("SELECT value FROM Cache WHERE key = 'meta'").fetchall()
    return pickle.loads(value)["schema"]


def test_a_schema_1_store_is_upgraded_and_keeps_every_work(tmp_path):
    path = _old_store(tmp_path)
    assert _schema(path) == 1 and _keys(path, "i:s:SUCCEEDED:")
    assert _listing(path) == _expected()
    assert _schema(path) == STORE_SCHEMA == 3
    assert _keys(path, "i:s:SUCCEEDED:") == _keys(path, "i:s:CANCELLED:") == []
    wm = WorkManager(path, resume=False)
    expected = _expected()
    for tag in ("batch", "chain", "held"):
        assert [i.id for i in wm.get_work_infos_by_tag(tag)] == \
            [w["id"] for w in expected if tag in w["tags"]]
    nightly = [i.id for i in wm.get_work_infos_for_unique_work("nightly")]
    assert nightly == [w["id"] for w in expected if w["unique"] == "nightly"]
    [expired] = [w["id"] for w in expected if "expired" in w["tags"]]
    store = Store(path)
    try:  # the one finished long ago, and only it, is past its retention now
        assert _ops.prune(store, store.get(expired).finish_time + DAY + 1,
                          expired_only=True) == [expired]
    finally:
        store.close()


def _raw_records(path: str) -> dict[str, object]:
    with sqlite3.connect(os.path.join(path, "db", "cache.db")) as db:
        return {key[2:]: pickle.loads(value) for key, value in
                db.execute("SELECT key, value FROM Cache WHERE key LIKE 'w:%'")}


def test_a_schema_2_store_is_upgraded_and_keeps_every_work(tmp_path):
    """Written by the release before records became tuples: its records (dicts) are read
    as they are, and each is rewritten as a tuple when its work next changes."""
    path = _old_store(tmp_path, schema=2)
    assert _schema(path) == 2
    assert {type(r) for r in _raw_records(path).values()} == {dict}
    expected = _expected(schema=2)
    assert _listing(path) == expected
    assert _schema(path) == STORE_SCHEMA == 3
    wm = WorkManager(path, resume=False)
    wm.daemon.ensure_running = lambda: None  # (nothing here may start a scheduler)
    later = [w["id"] for w in expected if "later" in w["tags"]]
    wm.cancel_all_work_by_tag("later")
    records = _raw_records(path)
    assert {type(records[i]) for i in later} == {tuple}
    assert {type(r) for i, r in records.items() if i not in later} == {dict}
    for work in expected:
        if work["id"] in later:
            work["state"] = "CANCELLED"
    assert _listing(path) == expected
    assert [i.id for i in wm.get_work_infos_by_tag("batch")] == \
        [w["id"] for w in expected if "batch" in w["tags"]]


def test_an_upgrade_that_fails_midway_leaves_the_old_store_whole(tmp_path, monkeypatch):
    path = _old_store(tmp_path)
    calls = []

    def failing(*args):
        calls.append(args)
        raise RuntimeError("injected: the upgrade stops here")

    monkeypatch.setattr(migration, "select_records", failing)
    with pytest.raises(RuntimeError, match="injected"):
        Store(path)
    assert calls and _schema(path) == 1 and _keys(path, "i:s:SUCCEEDED:")
    assert _keys(path, "i:f:") == []  # none of its rows were committed
    monkeypatch.undo()
    assert _listing(path) == _expected()


def test_a_store_of_a_newer_schema_is_refused(store_path):
    Store(store_path).close()
    with sqlite3.connect(os.path.join(store_path, "db", "cache.db")) as db:
        db.execute("UPDATE Cache SET value = ? WHERE key = 'meta'",
                   (pickle.dumps({"schema": STORE_SCHEMA + 1}),))
    with pytest.raises(StoreError, match="newer nbwork"):
        Store(store_path)


KILLED_MIDWAY = """
import os, signal, sys
from nbwork._store import Store, migration
real = migration.select_records
def kill(*args):
    real(*args)
    os.kill(os.getpid(), signal.SIGKILL)  # inside the upgrade's transaction
migration.select_records = kill
Store(sys.argv[1])
"""


@pytest.mark.slow
def test_an_upgrade_killed_midway_is_redone_at_the_next_open(tmp_path):
    path = _old_store(tmp_path)
    done = subprocess.run([sys.executable, "-c", KILLED_MIDWAY, path], timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == -9
    assert _schema(path) == 1
    assert _listing(path) == _expected()
    assert _schema(path) == STORE_SCHEMA


def _open_at_once(path, barrier, results):
    import time

    real_rows, real_upgrade = migration.finished_to_rows, migration.upgrade
    upgraded = []

    def slow_rows(cache):
        time.sleep(1.5)  # the other process opens the store meanwhile
        return real_rows(cache)

    migration.finished_to_rows = slow_rows
    migration.upgrade = lambda cache, p: upgraded.append(real_upgrade(cache, p)) or \
        upgraded[-1]
    barrier.wait()
    store = Store(path)
    results.put((upgraded, len(store.all_ids())))
    store.close()


@pytest.mark.slow
def test_of_two_processes_opening_an_old_store_at_once_one_upgrades(tmp_path):
    path = _old_store(tmp_path)
    outcomes, codes = helpers.run_together(_open_at_once, (path,), 2, timeout=120)
    assert codes == [0, 0]
    assert sorted(o[0] for o in outcomes) == [[False], [True]]
    assert [o[1] for o in outcomes] == [len(_expected())] * 2
    assert _listing(path) == _expected()
