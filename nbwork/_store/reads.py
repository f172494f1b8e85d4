"""Reads that bypass diskcache's one-key-at-a-time calls: many records in one statement,
and code blobs piece by piece.

A query returning thousands of works paid a statement and diskcache's per-call overhead
for each (issue 15: slower per work than a read by id); ``read_records`` reads them in one
``SELECT ... IN (...)`` per ``MANY_CHUNK`` ids, inside one read transaction (a consistent
snapshot). A worker that captured a big global (an image, a model) is never whole in the
scheduler's memory: ``open_blob`` hands it out in pieces, read through a connection that
does not memory-map the database.
"""

from __future__ import annotations

import pickle
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

import diskcache

from .._spec import WorkSpec
from .codec import Unreadable, decode_spec, read_spec, record_key
from .faults import SQLITE_TIMEOUT, guard

MANY_CHUNK = 500
"""Ids per ``SELECT ... IN (...)``: well under SQLite's 999 variables."""

_PICKLED = diskcache.core.MODE_PICKLE
Stamp = tuple[float, int]
"""What tells one stored version of a record from another without reading it: the time it
was written (``store_time``, which every write sets, diskcache's and ``batch``'s) and its
length in bytes."""
Memo = dict[str, tuple[Stamp, WorkSpec]]
"""``{id: (stamp of the stored bytes, spec)}``, kept by a reader across reads."""


def read_records(cache: diskcache.Cache, ids: Iterable[str], memo: Memo | None,
                 unreadable: dict[str, str]) -> dict[str, WorkSpec | Unreadable]:
    """The records of ``ids`` that exist (``Unreadable`` for one that cannot be decoded).

    ``memo``: a record whose stamp did not change is neither read nor decoded again, and
    its spec from the memo is returned (callers must not mutate specs read with a memo).
    The stamps of all are read first (small rows), then the bytes of those that changed:
    a query of 2,000 works after one of them changed read and hashed all 2,000 records."""
    con = cache._con
    con.execute("BEGIN")
    try:
        return select_records(cache, ids, memo, unreadable)
    finally:
        con.execute("COMMIT")


def select_records(cache: diskcache.Cache, ids: Iterable[str], memo: Memo | None,
                   unreadable: dict[str, str]) -> dict[str, WorkSpec | Unreadable]:
    """``read_records`` inside a transaction of the caller's."""
    ids = list(ids)
    records: dict[str, WorkSpec | Unreadable] = {}
    if memo:
        ids = _changed(cache, ids, memo, records)
    for _, rows in _record_rows(cache, ids, "key, mode, filename, value, store_time"):
        for key, mode, filename, value, store_time in rows:
            id = key[2:]
            if mode != _PICKLED or filename is not None:
                record = read_spec(cache, id, unreadable)  # diskcache's own way
                if record is not None:
                    records[id] = record
                continue
            # (Inline, not a function per record: this loop is most of a query's time.)
            record = decode_spec(id, lambda v=value: pickle.loads(v), unreadable)
            records[id] = record
            if memo is not None and isinstance(record, WorkSpec):
                memo[id] = ((store_time, len(value)), record)
    return records


def _changed(cache: diskcache.Cache, ids: list[str], memo: Memo,
             records: dict[str, WorkSpec | Unreadable]) -> list[str]:
    """Put in ``records`` the memo's spec of each of ``ids`` whose stamp is the stored one;
    the others, to be read."""
    unread: list[str] = []
    for chunk, rows in _record_rows(cache, ids, "key, store_time, length(value)"):
        stamps = {key[2:]: (store_time, size) for key, store_time, size in rows}
        for id in chunk:
            stamp = stamps.get(id)
            if stamp is None:
                continue  # no such record
            hit = memo.get(id)
            if hit is not None and hit[0] == stamp:
                records[id] = hit[1]
            else:
                unread.append(id)
    return unread


def _record_rows(cache: diskcache.Cache, ids: list[str],
                 columns: str) -> Iterator[tuple[list[str], list[Any]]]:
    """``(ids, rows)`` per ``MANY_CHUNK`` of ``ids``: the ``columns`` of their records' rows,
    in one ``SELECT ... IN (...)`` each."""
    con = cache._con
    for start in range(0, len(ids), MANY_CHUNK):
        chunk = ids[start:start + MANY_CHUNK]
        keys = [record_key(i) for i in chunk]
        yield chunk, con.execute(
            f"SELECT {columns} FROM Cache WHERE raw = 1 AND key IN "
            f"({','.join('?' * len(keys))})", keys).fetchall()


def connect_unmapped(database: str, synchronous: int) -> sqlite3.Connection:
    """A connection that reads without memory-mapping the database: diskcache maps up to
    64 MiB of it, and every page of a blob read through the map stayed in the reader's
    resident memory."""
    con = sqlite3.connect(database, timeout=SQLITE_TIMEOUT, isolation_level=None,
                          check_same_thread=False)
    con.execute("PRAGMA mmap_size = 0")
    con.execute(f"PRAGMA synchronous = {synchronous}")
    return con


def open_blob(con: sqlite3.Connection, key: str, chunk_size: int,
              path: str) -> tuple[int, Iterator[bytes]] | None:
    """``(size, pieces)`` of the raw blob under ``key``, or None when it is not stored as
    one (absent, or a value diskcache pickled): the caller then reads it whole."""
    row = con.execute("SELECT rowid, mode FROM Cache WHERE key = ? AND raw = 1",
                      (key,)).fetchone()
    if row is None or row[1] != diskcache.core.MODE_RAW or not hasattr(con, "blobopen"):
        return None
    blob = con.blobopen("Cache", "value", row[0], readonly=True)
    return len(blob), _pieces(blob, chunk_size, path)


def _pieces(blob: Any, chunk_size: int, path: str) -> Iterator[bytes]:
    with guard(path, "read"), blob:
        while chunk := blob.read(chunk_size):
            yield chunk
