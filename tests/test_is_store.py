"""``nbwork.is_store`` and ``nbwork.check_store``: the store's own test of a path, for
viewers that look at many (the Work panel), opening no database and creating nothing."""

from __future__ import annotations

import os

import pytest

from nbwork import StoreError, WorkManager, check_store, is_store
from nbwork.errors import NotAStoreError


def test_a_store_is_what_a_manager_made_not_any_folder_with_a_db(tmp_path):
    plain = tmp_path / "plain"
    (plain / "db").mkdir(parents=True)
    (plain / "db" / "cache.db").write_bytes(b"")  # an empty database: refused by the store too
    assert not is_store(plain) and not is_store(tmp_path / "missing")
    with pytest.raises(NotAStoreError, match="not an nbwork store"):
        check_store(plain)
    assert sorted(os.listdir(plain)) == ["db"] and os.listdir(plain / "db") == ["cache.db"]
    store = tmp_path / "store"
    WorkManager(store)
    assert is_store(store) and is_store(str(store))
    check_store(store)
    os.unlink(store / "nbwork.store")  # a store made before the marker: its database says so
    assert is_store(store)
    check_store(store)


def test_a_store_others_can_write_is_refused_in_the_stores_own_words(tmp_path):
    store = tmp_path / "store"
    WorkManager(store)
    for unsafe in (store, store / "db"):
        unsafe.chmod(0o770)
        with pytest.raises(StoreError, match="can be written by other users") as error:
            check_store(store)
        assert not isinstance(error.value, NotAStoreError)
        unsafe.chmod(0o700)
    store.chmod(0o777)
    with pytest.raises(StoreError) as opening:
        WorkManager(store, create=False)
    with pytest.raises(StoreError) as checking:
        check_store(store)
    assert str(checking.value) == str(opening.value)
