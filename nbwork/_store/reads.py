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
import struct
from collections.abc import Iterable, Iterator
from typing import Any

import diskcache

from .._spec import WorkSpec
from .codec import Unreadable, decode_spec, read_spec, record_key
from .faults import SQLITE_TIMEOUT, guard

MANY_CHUNK = 500
"""Ids per ``SELECT ... IN (...)``: well under SQLite's 999 variables."""

_PICKLED = diskcache.core.MODE_PICKLE
_DIGEST = struct.Struct("<qq")
Memo = dict[str, tuple[bytes, WorkSpec]]
"""``{id: (digest of the stored bytes, spec)}``, kept by a reader across reads."""


def read_records(cache: diskcache.Cache, ids: Iterable[str], memo: Memo | None,
                 unreadable: dict[str, str]) -> dict[str, WorkSpec | Unreadable]:
    """The records of ``ids`` that exist (``Unreadable`` for one that cannot be decoded).

    ``memo``: a record whose stored bytes did not change is not decoded again, and its spec
    from the memo is returned (callers must not mutate specs read with a memo). A digest
    rather than the bytes, so the memo of a big store stays small: the length and Python's
    own 64-bit hash of the bytes (salted per process, which is all the memo lives), a tenth
    of the cost of a cryptographic digest, which was a fifth of a query's time."""
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
    con = cache._con
    for start in range(0, len(ids), MANY_CHUNK):
        keys = [record_key(i) for i in ids[start:start + MANY_CHUNK]]
        rows = con.execute(
            "SELECT key, mode, filename, value FROM Cache WHERE raw = 1 AND key IN "
            f"({','.join('?' * len(keys))})", keys).fetchall()
        for key, mode, filename, value in rows:
            id = key[2:]
            if mode != _PICKLED or filename is not None:
                record = read_spec(cache, id, unreadable)  # diskcache's own way
                if record is not None:
                    records[id] = record
                continue
            # (Inline, not a function per record: this loop is most of a query's time.)
            if memo is None:
                records[id] = decode_spec(id, lambda v=value: pickle.loads(v), unreadable)
                continue
            digest = _DIGEST.pack(len(value), hash(value))
            hit = memo.get(id)
            if hit is not None and hit[0] == digest:
                records[id] = hit[1]
                continue
            record = decode_spec(id, lambda v=value: pickle.loads(v), unreadable)
            records[id] = record
            if isinstance(record, WorkSpec):
                memo[id] = (digest, record)
    return records


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
