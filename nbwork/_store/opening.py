"""Opening a store's database, and refusing one that is missing, emptied or damaged.

Beside the database (``db/``, see ``_layout``): ``nbwork.store``, the marker that says the
database exists (``_storedir`` writes it and opens the directory safely), and
``nbwork.damaged`` once a scheduler found the database damaged. A store whose database went
missing or empty is refused rather than silently replaced by an empty one.
"""

from __future__ import annotations

import sqlite3
import time

import diskcache

from .. import _layout
from .._storedir import StoreDir
from ..errors import NotAStoreError, StoreError
from .checkpoint import AUTOCHECKPOINT_PAGES
from .codec import load_value
from .faults import SQLITE_TIMEOUT, is_damage, translate

STORE_SCHEMA = 3
"""1: every state index in pickled shards; 2: finished states as one row per work, and the
expiry index (see ``rows``); 3: records written as tuples (``_spec.RECORD_LAYOUT``). An
older store is upgraded when opened (``migration``)."""


def open_cache(store_dir: StoreDir) -> diskcache.Cache:
    """The database of the (checked) store directory, created if there is none yet."""
    store_dir.make_dir(_layout.LOGS_DIR)
    if store_dir.stat(_layout.DB_DIR) is None:
        # Made here, private whatever the umask: SQLite gives its write-ahead log and
        # shared-memory files the mode of the database file.
        store_dir.make_dir(_layout.DB_DIR)
        store_dir.create_file(f"{_layout.DB_DIR}/{_layout.DB_FILE}")
    cache = diskcache.Cache(
        # Through the open directory: a rename of a folder above the store cannot point
        # diskcache (and SQLite's later connections) at another one.
        store_dir.join(_layout.DB_DIR),
        timeout=SQLITE_TIMEOUT,
        eviction_policy="none",
        size_limit=2**62,
        cull_limit=0,
        statistics=False,
        tag_index=False,
        # Index values grow with the store; as SQLite blobs they are written in the
        # transaction itself instead of as one file per version.
        disk_min_file_size=2**30,
        # A commit that checkpoints takes milliseconds: the scheduler's Checkpointer
        # keeps the log short instead, off every commit's path (see checkpoint).
        sqlite_wal_autocheckpoint=AUTOCHECKPOINT_PAGES,
    )
    try:
        if load_value(cache, "meta") is None:
            # (A database that holds works but no "meta" was made before the marker of the
            # schema existed: schema 1, to be upgraded.)
            schema = 1 if "counter" in cache else STORE_SCHEMA
            cache.add("meta", {"schema": schema, "created": time.time()})
        for name in (_layout.LOGS_DIR, _layout.DB_DIR,
                     *(f"{_layout.DB_DIR}/{file}" for file in _layout.DB_FILES)):
            store_dir.tighten(name)
        if not store_dir.has_marker():
            # The database holds data now (a checkpoint moves it out of the write-ahead log
            # into the file itself), so the marker may say so.
            cache._sql("PRAGMA wal_checkpoint(TRUNCATE)")
            store_dir.write_marker()
    except BaseException:
        cache.close()
        raise
    return cache


def check_schema(cache: diskcache.Cache, path: str) -> None:
    meta = load_value(cache, "meta") or {}
    if meta.get("schema", STORE_SCHEMA) > STORE_SCHEMA:
        raise StoreError(
            f"the store {path!r} was written by a newer nbwork (schema {meta['schema']}); "
            "upgrade nbwork to use it")


def check_is_store(store_dir: StoreDir) -> None:
    """Refuse a folder that is no store (for an open that must not create one)."""
    # (No marker but a database: a store made before the marker existed, or one being
    # created right now; it gets its marker when opened.)
    if not store_dir.has_marker() and not store_dir.database_size():
        raise NotAStoreError(
            f"{store_dir.path!r} is not an nbwork store (it has no {_layout.DB_DIR}/"
            f"{_layout.DB_FILE}); nothing was created. Commands that enqueue work create a "
            "store")


def check_database(store_dir: StoreDir) -> None:
    """Refuse a store whose database went missing or empty, or that a scheduler found
    damaged."""
    path = store_dir.path
    damaged = store_dir.read_file(_layout.DAMAGED)
    if damaged is not None:
        raise _damaged(path, damaged.strip())
    if store_dir.has_marker() and not store_dir.database_size():
        what = "is missing" if store_dir.database_size() is None else \
            "is empty (0 bytes: truncated?)"
        raise StoreError(
            f"the database of the store {path!r} {what}; nbwork will not start an empty "
            "store in its place, which would lose every work silently. Restore "
            f"{_layout.database_path(path)} from a backup, or to start over remove the "
            f"store: rm -r {path}")


def check_integrity(cache: diskcache.Cache, store_dir: StoreDir) -> None:
    """``PRAGMA quick_check`` of the database; a damaged one is marked (clients then refuse
    it too) and ``StoreError`` says what is wrong."""
    try:
        rows = [r[0] for r in cache._sql("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise translate(exc, store_dir.path, "read") from exc  # (I/O is no damage)
        rows = [str(exc)]
    if rows == ["ok"]:
        return
    found = "; ".join(rows[:5]) + (f" (and {len(rows) - 5} more)" if len(rows) > 5 else "")
    note = f"PRAGMA quick_check found: {found} (at {time.strftime('%Y-%m-%d %H:%M:%S')})"
    try:
        store_dir.write_file(_layout.DAMAGED, note + "\n")
    except OSError:
        pass  # the refusal below still stands
    raise _damaged(store_dir.path, note)


def _damaged(path: str, why: str) -> StoreError:
    return StoreError(
        f"the database of the store {path!r} is damaged: {why}. nbwork will not run work "
        f"from it half-broken. Restore {_layout.DB_DIR}/{_layout.DB_FILE} from a backup (or "
        "move the store away and start a new one), then delete "
        f"{_layout.in_store(path, _layout.DAMAGED)}")
