"""Writing the keys of a transaction in a few statements, as rows diskcache reads back.

``Cache.set`` costs a pickle, a ``SELECT``, an ``INSERT`` or ``UPDATE`` and diskcache's
per-call overhead (a nested transaction, a ``getpid``) for every key: an ``enqueue`` of
10,000 requests spent most of its commit there (issue 15). ``write_rows`` writes every
value of a commit with one ``executemany`` (an upsert on diskcache's unique ``(key, raw)``
index) and every removal with another, on the connection of the caller's transaction:
all of it commits or none of it does.

The rows are those ``Cache.set`` writes for the same value (``encode`` follows
``diskcache.Disk.store``: the same modes, ``size`` 0 for a value kept in the row,
``expire_time`` and ``tag`` NULL, ``access_count`` 0), so ``Cache.get`` reads them back
identically. What diskcache would keep in a file of its own (a value of at least
``disk_min_file_size``) or whose old value sits in one, is left to ``Cache.set`` and
``Cache.delete``, which write and clean up those files.
"""

from __future__ import annotations

import pickle
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any

import diskcache

MODE_RAW = diskcache.core.MODE_RAW
MODE_PICKLE = diskcache.core.MODE_PICKLE
CHUNK = 500
"""Keys per ``SELECT ... IN (...)``: well under SQLite's 999 variables."""

DELETED = object()
"""The value of a key the commit removes."""

_UPSERT = (
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag,"
    " size, mode, filename, value) VALUES (?, 1, ?, NULL, ?, 0, NULL, 0, ?, NULL, ?)"
    " ON CONFLICT(key, raw) DO UPDATE SET store_time = excluded.store_time,"
    " expire_time = NULL, access_time = excluded.access_time, access_count = 0, tag = NULL,"
    " size = 0, mode = excluded.mode, filename = NULL, value = excluded.value")
_DELETE = "DELETE FROM Cache WHERE key = ? AND raw = 1"
_INT64 = (-(2**63), 2**63 - 1)


def encode(disk: diskcache.Disk, value: Any) -> tuple[int, Any] | None:
    """``(mode, column value)`` of ``value`` kept in its row, as ``Disk.store`` makes it;
    None when diskcache would keep it in a file (the caller then uses ``Cache.set``)."""
    kind = type(value)
    limit = disk.min_file_size
    if (kind is str and len(value) < limit) or kind is float or (
            kind is int and _INT64[0] <= value <= _INT64[1]):
        return MODE_RAW, value
    if kind is bytes:
        return (MODE_RAW, sqlite3.Binary(value)) if len(value) < limit else None
    if kind is str:
        return None
    data = pickle.dumps(value, protocol=disk.pickle_protocol)
    return (MODE_PICKLE, sqlite3.Binary(data)) if len(data) < limit else None


def write_rows(cache: diskcache.Cache, items: Iterable[tuple[str, Any]]) -> None:
    """Write ``items`` (``(key, value)`` pairs, ``DELETED`` to remove a key; string keys) inside
    the caller's transaction on ``cache``."""
    changes = dict(items)
    if not changes:
        return
    if type(cache._disk) is not diskcache.Disk:  # another row format: diskcache's own way
        _one_by_one(cache, changes)
        return
    con = cache._con
    in_files = _keys_in_files(con, changes)
    now = time.time()
    rows: list[tuple[str, float, float, int, Any]] = []
    gone: list[tuple[str]] = []
    slow: dict[str, Any] = {}
    for key, value in changes.items():
        if key in in_files:
            slow[key] = value
        elif value is DELETED:
            gone.append((key,))
        else:
            encoded = encode(cache._disk, value)
            if encoded is None:
                slow[key] = value
            else:
                rows.append((key, now, now, *encoded))
    if rows:
        con.executemany(_UPSERT, rows)
    if gone:
        con.executemany(_DELETE, gone)
    _one_by_one(cache, slow)


def _keys_in_files(con: sqlite3.Connection, keys: Iterable[str]) -> set[str]:
    """The keys among ``keys`` whose stored value is in a file of diskcache's. None at all
    when diskcache's running total of file sizes (its ``Settings`` ``size``, kept by its
    triggers; 0 for a value kept in its row) is 0: one small read for the usual store."""
    total = con.execute("SELECT value FROM Settings WHERE key = 'size'").fetchone()
    if total is not None and not total[0]:
        return set()
    keys = list(keys)
    found: set[str] = set()
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start:start + CHUNK]
        found.update(k for (k,) in con.execute(
            "SELECT key FROM Cache WHERE raw = 1 AND filename IS NOT NULL AND key IN "
            f"({','.join('?' * len(chunk))})", chunk))
    return found


def _one_by_one(cache: diskcache.Cache, changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        if value is DELETED:
            cache.delete(key)
        else:
            cache.set(key, value)
