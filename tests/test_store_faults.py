"""Every read and write of a store whose database is damaged, cannot be opened, or sits on
a full disk raises ``StoreError`` saying what happened to the store and what to do: never
a bare ``sqlite3`` or unpickling error (``nbwork/_store/faults.py`` is the one place that
translates them)."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

from nbwork import StoreError, WorkManager, WorkState
from nbwork._store import Store
from tests.test_query_reads import _fill

BAD_PICKLE = b"\x80\x05\x95garbage that no unpickler accepts"
DAMAGED = "is damaged .*Restore db/cache.db from a backup, or move the store away"


def _damage_pages(store_path: str) -> None:
    """Overwrite every page of the database but its first two (the header and schema stay,
    so SQLite opens it and then finds the tables' pages malformed)."""
    database = os.path.join(store_path, "db", "cache.db")
    size = os.path.getsize(database)
    with open(database, "r+b") as f:
        for offset in range(2 * 4096, size, 4096):
            f.seek(offset)
            f.write(bytes(range(256)) * 16)


def _set_raw(store_path: str, key: str, value: bytes) -> None:
    with sqlite3.connect(os.path.join(store_path, "db", "cache.db")) as db:
        changed = db.execute("UPDATE Cache SET value = ?, mode = 4 WHERE key = ? AND raw = 1",
                             (value, key)).rowcount
    assert changed == 1, key


READS = {
    "get": lambda store, ids: store.get(ids[0]),
    "read": lambda store, ids: store.read(ids[-1]),
    "read_many": lambda store, ids: store.read_many(ids),
    "get_many": lambda store, ids: store.get_many(ids, {}),
    "state_index": lambda store, ids: store.state_index(WorkState.SUCCEEDED),
    "all_ids": lambda store, ids: store.all_ids(),
    "tag_ids": lambda store, ids: store.tag_ids("t1"),
    "executor": lambda store, ids: store.executor(),
    "durability": lambda store, ids: store.durability(),
    "get_value": lambda store, ids: store.get_value("lease"),
    "device_state": lambda store, ids: store.device_state(),
    "change_counter": lambda store, ids: store.change_counter(),
}


@pytest.mark.parametrize("read", READS)
def test_a_read_of_a_damaged_database_says_so_and_how_to_recover(tmp_path, read):
    path = str(tmp_path / "store")
    ids = _fill(path, 300)
    store = Store(path, create=False)
    try:
        _damage_pages(path)
        with pytest.raises(StoreError, match=DAMAGED) as caught:
            READS[read](store, ids)
        assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    finally:
        store.close()


def test_a_write_to_a_damaged_database_says_so_and_how_to_recover(tmp_path):
    path = str(tmp_path / "store")
    ids = _fill(path, 300)
    store = Store(path, create=False)
    try:
        _damage_pages(path)
        with pytest.raises(StoreError, match=DAMAGED), store.transaction() as txn:
            spec = txn.get(ids[0])
            spec.state = WorkState.CANCELLED
            txn.put(spec)
    finally:
        store.close()


def test_a_client_opening_a_damaged_database_is_told_what_to_do(tmp_path):
    path = str(tmp_path / "store")
    _fill(path, 300)
    _damage_pages(path)
    with pytest.raises(StoreError, match=DAMAGED):
        WorkManager(path, resume=False, create=False).get_work_infos()


def test_a_damaged_setting_is_a_store_error_not_an_unpickling_error(tmp_path):
    path = str(tmp_path / "store")
    ids = _fill(path, 5)
    store = Store(path)
    store.set_executor("local")
    store.close()
    _set_raw(path, "config", BAD_PICKLE)
    with pytest.raises(StoreError, match=r"is damaged \(the value 'config' cannot be decoded: "
                       r"UnpicklingError: .*\); .*Restore db/cache.db from a backup"):
        Store(path)
    # The records themselves are intact, and say so once the setting is repaired.
    with sqlite3.connect(os.path.join(path, "db", "cache.db")) as db:
        db.execute("DELETE FROM Cache WHERE key = 'config'")
    store = Store(path)
    assert [s.id for s in store.get_many(ids)] == ids
    store.close()


def test_a_database_that_cannot_be_opened_says_what_to_check(tmp_path):
    path = str(tmp_path / "store")
    _fill(path, 5)
    database = os.path.join(path, "db", "cache.db")
    os.unlink(database)
    os.mkdir(database)  # there, but no file SQLite can open
    with pytest.raises(StoreError, match=r"could not be opened \(unable to open database "
                       r"file\); check that .*/db and its files exist and that you can read "
                       r"and write them \(ls -la .*/db\)"):
        WorkManager(path, resume=False, create=False)
    assert os.path.isdir(database)  # nothing was replaced


def test_on_a_full_disk_reads_answer_and_a_write_says_to_free_space(small_disk):
    from tests.reliability import fill_disk

    path = str(small_disk / "store")
    ids = _fill(path, 200)
    store = Store(path, create=False)
    try:
        fill_disk(str(small_disk / "filler"))
        assert [s.id for s in store.get_many(ids)] == ids
        assert len(store.state_index(WorkState.SUCCEEDED)) == 200
        with pytest.raises(StoreError, match="is full; nothing was written. Free some space "
                           r"\(or prune old work: nbwork prune\) and try again") as caught:
            store.set_value("big", os.urandom(4 << 20))
        assert caught.value.transient
        os.unlink(small_disk / "filler")  # space returns: the same store writes again
        store.set_value("big", b"fits")
        assert store.get_value("big") == b"fits"
    finally:
        store.close()
    shutil.rmtree(path)


COMPOSED = {
    # Public methods of Store that are not wrapped by faults.reads / faults.writes, and why
    # their faults are still translated.
    "transaction": "its body runs inside faults.guard",
    "check_integrity": "runs inside faults.guard",
    "set_executor": "a transaction",
    "set_durability": "a transaction, then _apply_durability (writes)",
    "set_device_state": "a transaction",
    "enable_journal": "set_value (writes)",
    "log_path": "builds a path, touches nothing",
    "close": "closing releases connections; nothing is read or written",
    "turn": "reads the counters through _read_counters (reads)",
    "checkpointer": "reads the level through durability (reads); the thread logs its faults",
}


def test_every_public_method_of_the_store_goes_through_faults():
    """A new entry point of the store is wrapped by ``reads`` / ``writes`` or listed above
    with why its faults are translated anyway."""
    public = {name: value for name, value in vars(Store).items()
              if callable(value) and not name.startswith("_")}
    unguarded = {name for name, method in public.items()
                 if getattr(method, "translates_faults", None) not in ("read", "written")}
    assert unguarded <= set(COMPOSED), unguarded - set(COMPOSED)
    assert set(COMPOSED) <= set(public), set(COMPOSED) - set(public)  # no stale entry
