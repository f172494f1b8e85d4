"""A commit writes all its keys in a few statements (``_store.batch.write_rows``), in
diskcache's own row format: what it writes reads back through ``Cache.get`` exactly as
if ``Cache.set`` had written it, and a failure half-way through leaves nothing."""

from __future__ import annotations

import sqlite3
import time

import diskcache
import pytest

from nbwork import OneTimeWorkRequest, StoreError, WorkState, _ops
from nbwork._code import serialize_worker
from nbwork._records import spec_of_request as _spec_of
from nbwork._store import Store
from nbwork._store.batch import DELETED, write_rows
from nbwork._store.codec import record_key, shard_keys
from tests import helpers

BIG = 4096  # disk_min_file_size of the caches below: bigger values go to files


def _spec_dict() -> dict:
    request = OneTimeWorkRequest(helpers.add, tags=["t", "ünï"], input_data={"a": 1})
    code_key, _ = serialize_worker(request.worker, request.worker_name)
    return _spec_of(request, code_key, (), None).to_dict()


VALUES = {
    "w:record": _spec_dict(),
    "i:s:ENQUEUED:0": {"0abc": 1.5, "0def": 2.5},
    "i:u:name": ["a", "b"],
    "int": 7, "negative": -3, "huge int": 2**70, "float": 0.25, "bool": True, "none": None,
    "str": "text", "bytes": b"\x00\x01code", "empty list": [],
    "clé ünïcode ✓": {"ключ": "значение"},
    "big pickle": list(range(2000)), "big bytes": b"x" * (BIG + 1), "big str": "y" * BIG,
}


def _cache(path) -> diskcache.Cache:
    return diskcache.Cache(str(path), eviction_policy="none", cull_limit=0,
                           disk_min_file_size=BIG)


def _rows(cache: diskcache.Cache) -> dict:
    """Every row but its times, a file's contents instead of its name."""
    rows = {}
    for key, raw, expire, tag, size, mode, filename, value, count in cache._sql(
            "SELECT key, raw, expire_time, tag, size, mode, filename, value, access_count "
            "FROM Cache").fetchall():
        if filename is not None:
            with open(f"{cache.directory}/{filename}", "rb") as f:
                value = f.read()
        rows[key] = (raw, expire, tag, size, mode, value, count)
    return rows


def _both(tmp_path, *steps: dict) -> tuple[diskcache.Cache, diskcache.Cache]:
    """The same steps of changes, as ``Cache.set``/``delete`` and as ``write_rows``."""
    one, batched = _cache(tmp_path / "set"), _cache(tmp_path / "batch")
    for changes in steps:
        with one.transact():
            for key, value in changes.items():
                one.delete(key) if value is DELETED else one.set(key, value)
        with batched.transact():
            write_rows(batched, changes.items())
    return one, batched


def _settings(cache: diskcache.Cache) -> dict:
    return dict(cache._sql("SELECT key, value FROM Settings WHERE key IN ('count', 'size')"))


def test_rows_written_in_one_batch_read_back_as_if_set_one_by_one(tmp_path):
    one, batched = _both(tmp_path, VALUES)
    for key, value in VALUES.items():
        assert batched.get(key) == value and type(batched.get(key)) is type(value), key
    assert _rows(batched) == _rows(one)
    assert _settings(batched) == _settings(one)


def test_a_batch_updates_and_deletes_rows_and_their_files_as_diskcache_does(tmp_path):
    changed = {key: [key, "changed"] for key in list(VALUES)[::2]}
    changed.update({key: DELETED for key in list(VALUES)[1::4]})
    changed["big bytes"] = b"now small"         # its old value was in a file
    changed["big str"] = DELETED                # so was this one's
    changed["int"] = b"z" * (BIG * 2)           # a small value becomes a file
    changed["never there"] = DELETED
    one, batched = _both(tmp_path, VALUES, changed)
    assert _rows(batched) == _rows(one)
    assert _settings(batched) == _settings(one)
    for key in {*VALUES, *changed}:
        assert batched.get(key, "absent") == one.get(key, "absent"), key
    assert len(list((tmp_path / "batch").rglob("*.val"))) == len(
        list((tmp_path / "set").rglob("*.val")))  # no file left behind


def test_a_commit_writes_its_records_without_a_set_per_key(store_path, monkeypatch):
    store = Store(store_path)
    calls = []
    for name in ("set", "delete"):
        original = getattr(diskcache.Cache, name)
        monkeypatch.setattr(diskcache.Cache, name,
                            lambda self, key, *a, _o=original, **k: calls.append(key)
                            or _o(self, key, *a, **k))
    ids = _enqueue(store, 200)
    assert len(calls) < 5, calls
    assert [s.id for s in store.get_many(ids)] == ids
    assert set(ids) <= set(store.state_index(WorkState.ENQUEUED))
    store.close()


def _enqueue(store: Store, count: int, tag: str = "t") -> list[str]:
    works = []
    for _ in range(count):
        request = OneTimeWorkRequest(helpers.add, tags=[tag])
        code_key, payload = serialize_worker(request.worker, request.worker_name)
        works.append(_ops.NewWork(_spec_of(request, code_key, (), None), payload))
    _ops.enqueue(store, works, [], time.time())
    return [w.spec.id for w in works]


def _snapshot(store_path: str) -> dict:
    cache = diskcache.Cache(f"{store_path}/db")
    try:
        return {k: v for k, *v in cache._sql(
            "SELECT key, raw, mode, value FROM Cache ORDER BY key").fetchall()}
    finally:
        cache.close()


def test_a_commit_that_fails_half_way_leaves_nothing_and_says_so(store_path, monkeypatch):
    store = Store(store_path)
    _enqueue(store, 5)
    before = _snapshot(store_path)
    # A trigger of this connection only: the 30th of 60 new records cannot be inserted,
    # after the first 29 were, inside the one statement that writes them all.
    ids = []
    original = _ops.enqueue

    def enqueue_failing(store, works, *args):
        ids.extend(w.spec.id for w in works)
        store._cache._sql(
            "CREATE TEMP TRIGGER fail BEFORE INSERT ON Cache WHEN NEW.key = "
            f"'{record_key(works[29].spec.id)}' BEGIN SELECT RAISE(ABORT, 'disk I/O'); END")
        return original(store, works, *args)

    monkeypatch.setattr(_ops, "enqueue", enqueue_failing)
    with pytest.raises(StoreError, match="could not be written: disk I/O"):
        _enqueue(store, 60, tag="lost")
    monkeypatch.setattr(_ops, "enqueue", original)
    assert _snapshot(store_path) == before
    assert store.get_many(ids) == [] and store.tag_ids("lost") == []
    assert not set(ids) & {i for key in shard_keys(WorkState.ENQUEUED)
                           for i in (store.get_value(key) or {})}
    store._cache._sql("DROP TRIGGER fail")
    assert len(store.get_many(_enqueue(store, 60, tag="kept"))) == 60  # the store goes on
    store.close()


def test_write_rows_inside_a_rolled_back_transaction_leaves_nothing(tmp_path):
    cache = _cache(tmp_path / "c")
    cache.set("kept", 1)
    with pytest.raises(sqlite3.IntegrityError), cache.transact():
        write_rows(cache, {"a": {"x": 1}, "kept": DELETED}.items())
        cache._sql("INSERT INTO Cache(key, raw) VALUES ('a', 1)")  # a conflict: rolls back
    assert list(cache) == ["kept"] and cache.get("kept") == 1
