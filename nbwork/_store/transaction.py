"""``Transaction``: one consistent read-modify-write over records and indexes.

Every multi-key change goes through ``Store.transaction()``: one SQLite transaction
(``BEGIN IMMEDIATE``), so a crash leaves all of it or none of it, and the secondary indexes
never disagree with the records. A transaction reads each record and index once, keeps
what it changes, and writes it all in ``commit``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import diskcache

from .._spec import WorkSpec
from ..info import WorkState
from . import rows
from .batch import DELETED, write_rows
from .codec import (
    Unreadable,
    all_records,
    load_value,
    read_index,
    read_spec,
    record_key,
    shard_keys,
    sort_key,
    state_key,
)
from .faults import LOW_LEVEL
from .reads import select_records

log = logging.getLogger("nbwork.store")

CODE_CHUNK = 1 << 20
"""Bytes of a code blob read or compared at a time."""


def _stored_blob_matches(cache: diskcache.Cache, key: str, payload: bytes) -> bool | None:
    """Is the blob under ``key`` equal to ``payload`` (None: there is none)? Compared piece
    by piece: a worker that captured a big global is never read whole."""
    con = cache._con  # (inside a transaction: its own connection)
    row = con.execute("SELECT rowid, mode FROM Cache WHERE key = ? AND raw = 1",
                      (key,)).fetchone()
    if row is None:
        return None
    if row[1] != diskcache.core.MODE_RAW or not hasattr(con, "blobopen"):
        try:
            return cache.get(key) == payload
        except LOW_LEVEL:
            raise
        except Exception:  # not even a blob any more
            return False
    view = memoryview(payload)
    with con.blobopen("Cache", "value", row[0], readonly=True) as blob:
        if len(blob) != len(view):
            return False
        for start in range(0, len(view), CODE_CHUNK):
            if blob.read(CODE_CHUNK) != view[start:start + CODE_CHUNK]:
                return False
    return True

def _entry(spec: WorkSpec) -> tuple:
    """What the indexes hold of ``spec``: (state, sort key, tags, unique name, its rows)."""
    return (spec.state, sort_key(spec), spec.tags, spec.unique_name, rows.entry(spec))


class Transaction:
    """A consistent read-modify-write over records and indexes (a ``WorkSet`` for _rules)."""

    def __init__(self, cache: diskcache.Cache, unreadable: dict[str, str] | None = None) -> None:
        self._cache = cache
        self.unreadable = {} if unreadable is None else unreadable  # id -> why (see Store)
        self._specs: dict[str, WorkSpec | None] = {}
        # id -> (state, sort key, tags, unique name, its rows if finished: see rows.entry)
        self._before: dict[str, tuple | None] = {}
        self._dirty: set[str] = set()
        self._indexes: dict[str, Any] = {}
        self._dirty_indexes: set[str] = set()
        self._writes: dict[str, Any] = {}
        self._deletes: set[str] = set()
        self._row_changes: dict[str, Any] = {}  # finished states' rows to write (DELETED: remove)
        self._code_refs: dict[str, int] = {}
        self._codes_present: set[str] = set()  # code keys known to exist in this transaction
        self.counter_after: int | None = None  # the change counter this commit set, if any
        self.counter_before: int | None = None
        self.states_counter_after: int | None = None  # "counter:s" this commit set, if any
        # (state before, state after, id, sort key after) of every work whose state-index
        # entry this commit changed: lets the store update its memo of the indexes in place.
        self.index_moves: list[tuple[WorkState | None, WorkState | None, str, float]] = []
        self.journal = False  # see Store.enable_journal

    # records ----------------------------------------------------------------------------

    def get(self, id: str) -> WorkSpec | None:
        """The record of ``id``; None when there is none or it cannot be read (see
        ``Unreadable``: such a work is left alone, as if it were not there)."""
        if id not in self._specs:
            self._remember(id, read_spec(self._cache, id, self.unreadable))
        return self._specs[id]

    def _remember(self, id: str, record: WorkSpec | Unreadable | None) -> None:
        spec = record if isinstance(record, WorkSpec) else None
        self._specs[id] = spec
        self._before[id] = _entry(spec) if spec else None

    def get_many(self, ids: Iterable[str]) -> list[WorkSpec]:
        """The records of ``ids`` that exist and can be read, in that order. Those not read
        yet are read in one statement per few hundred: an enqueue of 10,000 new works
        checked each id with a read of its own (a third of its statements)."""
        ids = list(ids)
        unread = [i for i in dict.fromkeys(ids) if i not in self._specs]
        if len(unread) > 3:
            records = select_records(self._cache, unread, None, self.unreadable)
            for id in unread:
                self._remember(id, records.get(id))
        return [s for s in (self.get(i) for i in ids) if s is not None]

    def adopt(self, spec: WorkSpec) -> WorkSpec:
        """Take ``spec`` as the stored record of its work without reading it: for a writer
        that knows it holds the current record (it wrote it, and the change counter shows
        nobody wrote since). The caller's object is then this transaction's to change."""
        if spec.id not in self._specs:
            self._specs[spec.id] = spec
            self._before[spec.id] = _entry(spec)
        return self._specs[spec.id]

    def change_counter(self) -> int:
        """The change counter as of the last commit (inside a transaction: current)."""
        return self._cache.get("counter", 0)

    def put(self, spec: WorkSpec) -> None:
        if spec.id not in self._specs:
            self.get(spec.id)
        self._specs[spec.id] = spec
        self._dirty.add(spec.id)

    def add(self, spec: WorkSpec) -> None:
        """Insert a new record (its code blob gains a reference)."""
        self.put(spec)
        self._code_refs[spec.code_key] = self._code_refs.get(spec.code_key, 0) + 1

    def move_code_reference(self, old_key: str, new_key: str) -> None:
        """A work now runs ``new_key`` instead of ``old_key`` (after an update)."""
        if old_key != new_key:
            self._code_refs[new_key] = self._code_refs.get(new_key, 0) + 1
            self._code_refs[old_key] = self._code_refs.get(old_key, 0) - 1

    def delete(self, id: str) -> None:
        spec = self.get(id)
        if spec is not None:
            self._code_refs[spec.code_key] = self._code_refs.get(spec.code_key, 0) - 1
            self._specs[id] = None
            self._dirty.add(id)

    # indexes and other keys -------------------------------------------------------------

    def _index(self, key: str, default: Any) -> Any:
        if key not in self._indexes:
            value, rebuilt = read_index(self._cache, key, default)
            self._indexes[key] = value
            if rebuilt:
                self._dirty_indexes.add(key)
        return self._indexes[key]

    def state_index(self, state: WorkState) -> dict[str, float]:
        """``{id: sort key}`` of the works in ``state`` (a merged copy of its shards; for a
        finished state, its rows in sort order)."""
        if state in rows.ROW_STATES:
            return self._rows(state)
        merged: dict[str, float] = {}
        for key in shard_keys(state):
            merged.update(self._index(key, {}))
        return merged

    def _rows(self, state: WorkState) -> dict[str, float]:
        index = rows.scan_state(self._cache, state)
        if index is None:  # a damaged row: rebuilt from the records, in this transaction
            specs = [r for r in self.all_records() if isinstance(r, WorkSpec)]
            rows.rebuild(self._cache, state, specs)
            index = rows.scan_state(self._cache, state) or {}
        return index

    def expired(self, now: float, after: str = "", limit: int = 1000) -> list[tuple[str, str]]:
        """``(expiry key, id)`` of up to ``limit`` finished works whose retention ended by
        ``now``, in expiry order, after the key ``after`` (see ``rows.expired``)."""
        return rows.expired(self._cache, now, after, limit)

    def unique_ids(self, name: str) -> list[str]:
        return list(self._index(f"i:u:{name}", []))

    def tag_ids(self, tag: str) -> list[str]:
        return list(self._index(f"i:t:{tag}", {}))

    def has_code(self, key: str) -> bool:
        if key in self._codes_present:  # a batch of works shares one or two blobs
            return True
        present = f"code:{key}" in self._writes or f"code:{key}" in self._cache
        if present:
            self._codes_present.add(key)
        return present

    def put_code(self, key: str, payload: bytes) -> None:
        """Store blob ``key`` (the hash of ``payload``) unless an intact copy is there: a
        corrupt one is replaced, so it cannot poison every later enqueue of that worker."""
        if key in self._codes_present or f"code:{key}" in self._writes:
            return
        stored = _stored_blob_matches(self._cache, f"code:{key}", payload)
        if stored is False:
            log.warning("the stored code blob %s was corrupt; replacing it", key[:12])
        if not stored:
            self._writes[f"code:{key}"] = payload
        self._codes_present.add(key)

    def get_value(self, key: str, default: Any = None) -> Any:
        if key in self._writes:
            return self._writes[key]
        return load_value(self._cache, key, default)

    def set_value(self, key: str, value: Any) -> None:
        self._writes[key] = value

    def delete_value(self, key: str) -> None:
        self._writes.pop(key, None)
        self._deletes.add(key)

    # unreadable records ---------------------------------------------------------------

    def all_records(self) -> list[WorkSpec | Unreadable]:
        """Every work record, read one by one (a full scan: for rare repairs only)."""
        return list(all_records(self._cache, self.unreadable))

    def forget_unreadable(self, id: str) -> None:
        """Remove the record of ``id`` (which cannot be read) and every index entry of it.

        What it referenced cannot be known: its code blob keeps one reference too many
        (it stays until the store is discarded), and dependents are the caller's to settle."""
        self._deletes.add(record_key(id))
        self._specs[id] = None
        for state in rows.forget(self._cache, id):
            self.index_moves.append((state, None, id, 0.0))
        for state in set(WorkState) - rows.ROW_STATES:
            shard = self._index(state_key(state, id), {})
            if id in shard:
                self._mutable_index(state_key(state, id), {}).pop(id, None)
                self.index_moves.append((state, None, id, 0.0))
        for key in list(self._cache.iterkeys()):
            if isinstance(key, str) and key.startswith(("i:t:", "i:u:")):
                index = self._index(key, {} if key.startswith("i:t:") else [])
                if id in index:
                    index = self._mutable_index(key, index)
                    if isinstance(index, dict):
                        index.pop(id, None)
                    else:
                        index.remove(id)

    # commit -----------------------------------------------------------------------------

    def _mutable_index(self, key: str, default: Any) -> Any:
        index = self._indexes.get(key)  # (inline: called per index entry of every commit)
        if index is None:
            index = self._index(key, default)
        self._dirty_indexes.add(key)
        return index

    def _reindex(self, id: str) -> None:
        before = self._before.get(id)
        spec = self._specs[id]
        after = _entry(spec) if spec else None
        if before == after:
            return
        if before is None or after is None or before[:2] != after[:2] \
                or before[4] != after[4]:
            if before is not None:
                self._unindex_state(id, before)
            if after is not None:
                self._index_state(spec, after)
            self.index_moves.append((before[0] if before else None,
                                     after[0] if after else None, id,
                                     after[1] if after else 0.0))
        old_tags = set(before[2]) if before else set()
        new_tags = set(after[2]) if after else set()
        for tag in old_tags - new_tags:
            self._mutable_index(f"i:t:{tag}", {}).pop(id, None)
        for tag in new_tags - old_tags:
            self._mutable_index(f"i:t:{tag}", {})[id] = spec.enqueue_time if spec else 0.0
        old_name = before[3] if before else None
        new_name = after[3] if after else None
        if old_name != new_name:
            if old_name is not None:
                ids = self._mutable_index(f"i:u:{old_name}", [])
                if id in ids:
                    ids.remove(id)
            if new_name is not None:
                self._mutable_index(f"i:u:{new_name}", []).append(id)

    def _unindex_state(self, id: str, before: tuple) -> None:
        if before[0] in rows.ROW_STATES:
            for key in before[4] or ():
                if key is not None:
                    self._row_changes[key] = DELETED
        else:
            self._mutable_index(state_key(before[0], id), {}).pop(id, None)

    def _index_state(self, spec: WorkSpec, after: tuple) -> None:
        if after[0] in rows.ROW_STATES:
            # Two small rows, whatever the store's size (a later value of a key wins).
            self._row_changes.update(rows.values(spec))
        else:
            self._mutable_index(state_key(after[0], spec.id), {})[spec.id] = after[1]

    def _journal(self, id: str, spec: WorkSpec | None) -> None:
        """Record a state change of ``id`` in its journal (in this same transaction, so the
        journal holds exactly the committed transitions: e.g. how often it SUCCEEDED)."""
        before = self._before.get(id)
        old = before[0].value if before else None
        new = spec.state.value if spec else None
        if old != new:
            key = f"j:{id}"
            entry = [old, new, spec.run_attempt_count if spec else None]
            self._cache.set(key, [*load_value(self._cache, key, []), entry])

    def commit(self) -> bool:
        """Write everything; True if anything changed.

        Every record, index shard and value is written in one ``write_rows`` (a few
        statements for the whole transaction, not a ``Cache.set`` per key): the last value
        given for a key is the one written, as when they were set one by one in this
        order."""
        cache = self._cache
        pending: dict[str, Any] = {}
        for id in self._dirty:
            self._reindex(id)
            spec = self._specs[id]
            if self.journal:
                self._journal(id, spec)
            pending[record_key(id)] = DELETED if spec is None else spec.to_record()
        pending.update(self._row_changes)
        for key in self._dirty_indexes:
            pending[key] = self._indexes[key] or DELETED
        for key, delta in self._code_refs.items():
            if delta == 0:
                continue
            refs = cache.get(f"i:c:{key}", 0) + delta
            if refs > 0:
                pending[f"i:c:{key}"] = refs
            else:
                pending[f"i:c:{key}"] = DELETED
                pending[f"code:{key}"] = DELETED
                self._writes.pop(f"code:{key}", None)
        for key, value in self._writes.items():
            pending.pop(key, None)  # (keeps the order of the writes: a later one wins)
            pending[key] = value
        for key in self._deletes:
            pending.pop(key, None)
            pending[key] = DELETED
        write_rows(cache, pending.items())
        changed = bool(self._dirty or self._dirty_indexes or self._writes or self._deletes)
        if changed:
            self.counter_after = cache.incr("counter", default=0)
            self.counter_before = self.counter_after - 1
        if self.index_moves:
            self.states_counter_after = cache.incr("counter:s", default=0)
        return changed
