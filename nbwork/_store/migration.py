"""Upgrading a store written by an older nbwork, in place, when it is opened.

Schema 1 -> 2: the indexes of the finished states move from pickled shards (``i:s:``) to
one row per work, with the expiry index beside them (see ``rows``). Schema 2 -> 3: records
are written in ``RECORD_LAYOUT`` 2 (a tuple); those of layout 1 (a dict) are read as they
are and rewritten in the new layout the next time their work changes, so the upgrade only
marks the store as schema 3, which older versions, which cannot read the new layout, then
refuse to open. The whole upgrade is
one SQLite transaction (``BEGIN IMMEDIATE``): a process killed in the middle leaves the
store as it was (schema 1; the next open upgrades it again), and of two processes that open
an old store at once, one upgrades while the other waits for the write lock, then sees
schema 2 and has nothing to do.
"""

from __future__ import annotations

import logging
import time

import diskcache

from .._spec import WorkSpec
from . import rows
from .codec import load_value, read_index, shard_keys
from .opening import STORE_SCHEMA
from .reads import select_records

log = logging.getLogger("nbwork.store")

UPGRADE_WAIT = 30 * 60.0
"""How long an open waits for another process's upgrade of the same store (an upgrade of
a store of 100,000 finished works takes about ten seconds; SQLite's lock wait is
``SQLITE_TIMEOUT`` per try)."""

DECODE_CHUNK = 2000
"""Records decoded at a time: the upgrade of a big store never holds them all."""


def schema_of(cache: diskcache.Cache) -> int:
    return (load_value(cache, "meta") or {}).get("schema", STORE_SCHEMA)


def upgrade(cache: diskcache.Cache, path: str) -> bool:
    """Bring the store to ``STORE_SCHEMA`` if it is older; True if this call upgraded it."""
    if schema_of(cache) >= STORE_SCHEMA:
        return False
    deadline = time.monotonic() + UPGRADE_WAIT
    while True:
        try:
            with cache.transact():  # BEGIN IMMEDIATE: the write lock, for all of it
                schema = schema_of(cache)
                if schema >= STORE_SCHEMA:
                    return False  # another process upgraded it while this one waited
                started = time.monotonic()
                moved = finished_to_rows(cache) if schema < 2 else 0
                meta = dict(load_value(cache, "meta") or {})
                meta.update(schema=STORE_SCHEMA, upgraded=time.time())
                cache.set("meta", meta)
                # Readers that memoised the old indexes by these counters read them again.
                cache.incr("counter", default=0)
                cache.incr("counter:s", default=0)
        except diskcache.Timeout:
            # Another process holds the write lock for longer than SQLite waits: most
            # likely it is upgrading this same store. Wait on.
            if time.monotonic() > deadline:
                raise
            continue
        log.warning("upgraded the store %r from schema %s to %s (%d finished works "
                    "re-indexed in %.1f s)", path, schema, STORE_SCHEMA, moved,
                    time.monotonic() - started)
        return True


def finished_to_rows(cache: diskcache.Cache) -> int:
    """Schema 1 -> 2 inside a transaction of the caller's: every finished state's shards
    become rows (same ids, same sort keys: the listing does not change), and each readable
    finished record gets its expiry row. Returns how many works moved."""
    moved = 0
    for state in sorted(rows.ROW_STATES, key=lambda s: s.value):
        index: dict[str, float] = {}
        for key in shard_keys(state):
            shard, _ = read_index(cache, key, {})  # (a damaged one: from the records)
            index.update(shard)
            cache.delete(key)
        rows.insert_many(cache, ((rows.row_key(state, sort, id), float(sort))
                                 for id, sort in index.items()))
        ids = list(index)
        for start in range(0, len(ids), DECODE_CHUNK):
            records = select_records(cache, ids[start:start + DECODE_CHUNK], None, {})
            expiries = []
            for record in records.values():
                # (An unreadable record keeps its row, so it is still listed as such.)
                if isinstance(record, WorkSpec) and record.state is state:
                    entry = rows.entry(record)
                    if entry is not None and entry[1] is not None:
                        expiries.append((entry[1], state.value))
            rows.insert_many(cache, expiries)
        moved += len(index)
    return moved

