"""The store: the only code that touches diskcache.

Layout of one diskcache directory (keys are strings so SQLite indexes them natively):

    meta              {"schema": 1, "created": ...}
    w:<id>            the WorkSpec record of a work (a dict)
    code:<sha256>     the serialized worker (cloudpickle), shared by every work that runs it
    i:s:<STATE>:<h>   {id: sort key} of the works in a state (ENQUEUED: next run time) whose
                      id starts with hex digit <h>: 16 shards, so a transaction rewrites
                      only the shards of the works it touches, not the whole index
    i:t:<tag>         {id: enqueue time} of the works with a tag
    i:u:<name>        [id, ...] of the works under a unique name, in enqueue order
    i:c:<sha256>      how many works use a code blob (it is deleted at zero)
    counter           bumped by every committed transaction: readers notice changes cheaply
    counter:s         bumped by every transaction that moves a work between state indexes
                      (not by progress reports): readers of the state indexes re-read them
                      only when it moves
    lease             the running scheduler: pid, token, heartbeat (for status; the lock
                      file is what makes it exclusive)
    device            the simulated device state of the TestDriver, when set
    config            settings kept with the store: {"executor": "local" | "dask://HOST:PORT",
                      "durability": "process" | "power"}; the durability is also written
                      to diskcache's own Settings table (sqlite_synchronous), which every
                      new connection of every process applies
    journal, j:<id>   when ``journal`` is set (``Store.enable_journal``, for fault-injection
                      tests and debugging), every state change of a work is appended to
                      ``j:<id>`` as [from, to, run_attempt_count] in the same transaction

Beside the database (``db/``): ``nbwork.store``, the marker that says the database exists
(see ``_storedir``, which also opens the directory safely), ``nbwork.damaged`` once a
scheduler found the database damaged, ``logs/``, the scheduler's lock, FIFO and log.

A record or index that cannot be decoded does not stop the store: a record is reported as
``Unreadable`` (the scheduler skips it; ``prune_unreadable`` removes it), an index is rebuilt
from the records.

Every multi-key change goes through ``Store.transaction()``: one SQLite transaction
(``BEGIN IMMEDIATE``), so a crash leaves all of it or none of it, and the secondary indexes
never disagree with the records.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import pickle
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import diskcache

from ._spec import WorkSpec
from ._storedir import DAMAGED, DB_DIR, DB_FILE, StoreDir
from .errors import InvalidInputError, NotAStoreError, StoreError
from .info import WorkState

STORE_SCHEMA = 1
_SQLITE_TIMEOUT = 60.0
_MANY_CHUNK = 500  # ids per SELECT ... IN (...): well under SQLite's 999 variables
log = logging.getLogger("nbwork.store")


SHARDS = "0123456789abcdef"

# SQLite's synchronous level per durability (WAL mode). "process": a commit is in the WAL
# file when it returns, so no process crash loses it, but the OS may still hold it in its
# page cache (a power loss may lose the last commits). "power": every commit is fsynced.
DURABILITY_LEVELS = {"process": 1, "power": 2}  # NORMAL, FULL
DEFAULT_DURABILITY = "process"


def check_durability(value: object) -> str:
    """``"process"`` or ``"power"``; anything else is a clear error."""
    text = value.strip().lower() if isinstance(value, str) else None
    if text in DURABILITY_LEVELS:
        return text
    raise InvalidInputError(
        f"durability must be 'process' (nothing committed is lost when a process crashes; "
        f"the default) or 'power' (an enqueue that returned survives a power loss; slower "
        f"commits), not {value!r}"
    )


def _state_key(state: WorkState, id: str) -> str:
    return f"i:s:{state.value}:{id[0]}"


def _shard_keys(state: WorkState) -> list[str]:
    return [f"i:s:{state.value}:{shard}" for shard in SHARDS]


def _sort_key(spec: WorkSpec) -> float:
    return spec.next_run_at if spec.state is WorkState.ENQUEUED else spec.enqueue_time


@dataclass(frozen=True)
class Unreadable:
    """A work whose stored record cannot be decoded (a bad pickle, an unknown state...):
    reported as such, skipped by the scheduler, removed by ``prune_unreadable``."""

    id: str
    reason: str
    state: WorkState | None = None  # the state its index entry says, if any


_STORE_FAULTS = (sqlite3.Error, diskcache.Timeout, OSError)
"""Errors of the store itself (locked, full, damaged): never taken for one bad record."""


def _read_spec(cache: diskcache.Cache, id: str,
               unreadable: dict[str, str]) -> WorkSpec | Unreadable | None:
    """The record of ``id``; an ``Unreadable`` (noted in ``unreadable``) when it cannot be
    decoded, so that one bad record never stops the scheduler or a listing."""
    missing = object()
    record = _decode_spec(id, lambda: cache.get(f"w:{id}", missing), unreadable, missing)
    return None if record is missing else record


def _decode_spec(id: str, load: Any, unreadable: dict[str, str],
                 missing: Any = None) -> Any:
    """``WorkSpec.from_dict(load())``, or an ``Unreadable`` when that fails (``missing`` is
    passed through: no record)."""
    try:
        raw = load()
        if raw is missing:
            return missing
        if not isinstance(raw, dict):
            raise TypeError(f"a work record is a dict, this is a {type(raw).__name__}")
        spec = WorkSpec.from_dict(raw)
        if spec.id != id:
            raise ValueError(f"the record under {id} is the record of work {spec.id}")
        return spec
    except _STORE_FAULTS:
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        if unreadable.get(id) != reason:
            log.error("the record of work %s cannot be read (%s); it is skipped. Remove it "
                      "with 'nbwork prune --unreadable' (wm.prune_work(unreadable=True))",
                      id, reason)
        unreadable[id] = reason
        return Unreadable(id, reason)


_INDEX_TYPES = {"s": dict, "t": dict, "u": list}


def _read_index(cache: diskcache.Cache, key: str, default: Any) -> tuple[Any, bool]:
    """(the index under ``key``, False), or (one rebuilt from the records, True) when the
    stored one cannot be decoded or is not an index."""
    try:
        value = cache.get(key)
        if value is None:
            return default, False
        if isinstance(value, _INDEX_TYPES.get(key.split(":")[1], object)):
            return value, False
        problem = f"it holds a {type(value).__name__}"
    except _STORE_FAULTS:
        raise
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
    log.error("the index %r of the store cannot be read (%s); rebuilding it from the records",
              key, problem)
    return _rebuild_index(cache, key), True


def _all_records(cache: diskcache.Cache,
                 unreadable: dict[str, str]) -> Iterator[WorkSpec | Unreadable]:
    for key in list(cache.iterkeys()):
        if isinstance(key, str) and key.startswith("w:"):
            record = _read_spec(cache, key[2:], unreadable)
            if record is not None:
                yield record


def _rebuild_index(cache: diskcache.Cache, key: str) -> Any:
    _, kind, rest = key.split(":", 2)
    specs = [r for r in _all_records(cache, {}) if isinstance(r, WorkSpec)]
    if kind == "s":
        state, shard = rest.rsplit(":", 1)
        return {s.id: _sort_key(s) for s in specs
                if s.state.value == state and s.id.startswith(shard)}
    if kind == "t":
        return {s.id: s.enqueue_time for s in specs if rest in s.tags}
    named = sorted((s for s in specs if s.unique_name == rest), key=lambda s: s.enqueue_time)
    return [s.id for s in named]


_DAMAGE_SIGNS = ("not a database", "malformed", "corrupt")
"""What SQLite says of a damaged database file."""



def _translate(exc: BaseException, path: str) -> StoreError:
    code = getattr(exc, "errno", None)
    text = str(exc).lower()
    if isinstance(exc, diskcache.Timeout) or "database is locked" in text:
        error = StoreError(
            f"the store {path!r} stayed locked by another process for {_SQLITE_TIMEOUT:g} s; "
            "try again (is a process stuck inside a transaction?)"
        )
    elif code in (errno.ENOSPC, errno.EDQUOT) or "full" in text:
        error = StoreError(
            f"the disk holding the store {path!r} is full; nothing was written. Free some "
            "space (or prune old work: nbwork prune) and try again"
        )
    elif isinstance(exc, sqlite3.DatabaseError) and any(sign in text for sign in _DAMAGE_SIGNS):
        return StoreError(
            f"the database of the store {path!r} is damaged ({exc}); nbwork will not run work "
            "from it half-broken. Restore db/cache.db from a backup, or move the store away "
            "and start a new one")
    else:
        return StoreError(f"the store {path!r} could not be written: {exc}")
    error.transient = True
    return error


CODE_CHUNK = 1 << 20


def _pieces(blob: Any, chunk_size: int, path: str) -> Iterator[bytes]:
    try:
        with blob:
            while chunk := blob.read(chunk_size):
                yield chunk
    except sqlite3.Error as exc:
        raise _translate(exc, path) from exc


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
        except _STORE_FAULTS:
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


def _translated(method):
    """A read of the store that raises ``StoreError`` (never a bare sqlite3 error: a damaged
    or full store must say so in nbwork's words)."""

    @functools.wraps(method)
    def read(self: "Store", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except _STORE_FAULTS as exc:
            raise _translate(exc, self.path) from exc

    return read


class Transaction:
    """A consistent read-modify-write over records and indexes (a ``WorkSet`` for _rules)."""

    def __init__(self, cache: diskcache.Cache, unreadable: dict[str, str] | None = None) -> None:
        self._cache = cache
        self.unreadable = {} if unreadable is None else unreadable  # id -> why (see Store)
        self._specs: dict[str, WorkSpec | None] = {}
        self._before: dict[str, tuple[WorkState, float, tuple[str, ...], str | None] | None] = {}
        self._dirty: set[str] = set()
        self._indexes: dict[str, Any] = {}
        self._dirty_indexes: set[str] = set()
        self._writes: dict[str, Any] = {}
        self._deletes: set[str] = set()
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
            record = _read_spec(self._cache, id, self.unreadable)
            spec = record if isinstance(record, WorkSpec) else None
            self._specs[id] = spec
            self._before[id] = (
                (spec.state, _sort_key(spec), spec.tags, spec.unique_name) if spec else None
            )
        return self._specs[id]

    def get_many(self, ids: Iterable[str]) -> list[WorkSpec]:
        return [s for s in (self.get(i) for i in ids) if s is not None]

    def adopt(self, spec: WorkSpec) -> WorkSpec:
        """Take ``spec`` as the stored record of its work without reading it: for a writer
        that knows it holds the current record (it wrote it, and the change counter shows
        nobody wrote since). The caller's object is then this transaction's to change."""
        if spec.id not in self._specs:
            self._specs[spec.id] = spec
            self._before[spec.id] = (spec.state, _sort_key(spec), spec.tags, spec.unique_name)
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
            value, rebuilt = _read_index(self._cache, key, default)
            self._indexes[key] = value
            if rebuilt:
                self._dirty_indexes.add(key)
        return self._indexes[key]

    def state_index(self, state: WorkState) -> dict[str, float]:
        """``{id: sort key}`` of the works in ``state`` (a merged copy of its shards)."""
        merged: dict[str, float] = {}
        for key in _shard_keys(state):
            merged.update(self._index(key, {}))
        return merged

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
        return self._cache.get(key, default)

    def set_value(self, key: str, value: Any) -> None:
        self._writes[key] = value

    def delete_value(self, key: str) -> None:
        self._writes.pop(key, None)
        self._deletes.add(key)

    # unreadable records ---------------------------------------------------------------

    def all_records(self) -> list[WorkSpec | Unreadable]:
        """Every work record, read one by one (a full scan: for rare repairs only)."""
        return list(_all_records(self._cache, self.unreadable))

    def forget_unreadable(self, id: str) -> None:
        """Remove the record of ``id`` (which cannot be read) and every index entry of it.

        What it referenced cannot be known: its code blob keeps one reference too many
        (it stays until the store is discarded), and dependents are the caller's to settle."""
        self._deletes.add(f"w:{id}")
        self._specs[id] = None
        for state in WorkState:
            shard = self._index(_state_key(state, id), {})
            if id in shard:
                self._mutable_index(_state_key(state, id), {}).pop(id, None)
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
        index = self._index(key, default)
        self._dirty_indexes.add(key)
        return index

    def _reindex(self, id: str) -> None:
        before = self._before.get(id)
        spec = self._specs[id]
        after = (spec.state, _sort_key(spec), spec.tags, spec.unique_name) if spec else None
        if before == after:
            return
        if before is None or after is None or before[:2] != after[:2]:
            if before is not None:
                self._mutable_index(_state_key(before[0], id), {}).pop(id, None)
            if after is not None:
                self._mutable_index(_state_key(after[0], id), {})[id] = after[1]
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

    def _journal(self, id: str, spec: WorkSpec | None) -> None:
        """Record a state change of ``id`` in its journal (in this same transaction, so the
        journal holds exactly the committed transitions: e.g. how often it SUCCEEDED)."""
        before = self._before.get(id)
        old = before[0].value if before else None
        new = spec.state.value if spec else None
        if old != new:
            key = f"j:{id}"
            entry = [old, new, spec.run_attempt_count if spec else None]
            self._cache.set(key, [*self._cache.get(key, []), entry])

    def commit(self) -> bool:
        """Write everything; True if anything changed."""
        cache = self._cache
        for id in self._dirty:
            self._reindex(id)
            spec = self._specs[id]
            if self.journal:
                self._journal(id, spec)
            if spec is None:
                cache.delete(f"w:{id}")
            else:
                cache.set(f"w:{id}", spec.to_dict())
        for key in self._dirty_indexes:
            value = self._indexes[key]
            if value:
                cache.set(key, value)
            else:
                cache.delete(key)
        for key, delta in self._code_refs.items():
            if delta == 0:
                continue
            refs = cache.get(f"i:c:{key}", 0) + delta
            if refs > 0:
                cache.set(f"i:c:{key}", refs)
            else:
                cache.delete(f"i:c:{key}")
                cache.delete(f"code:{key}")
                self._writes.pop(f"code:{key}", None)
        for key, value in self._writes.items():
            cache.set(key, value)
        for key in self._deletes:
            cache.delete(key)
        changed = bool(self._dirty or self._dirty_indexes or self._writes or self._deletes)
        if changed:
            self.counter_after = cache.incr("counter", default=0)
            self.counter_before = self.counter_after - 1
        if self.index_moves:
            self.states_counter_after = cache.incr("counter:s", default=0)
        return changed


class Store:
    """A store directory: work records, indexes, code blobs and logs."""

    def __init__(self, path: str, create: bool = True) -> None:
        """Open the store at ``path``; with ``create``, make it if it is not one yet (else
        ``NotAStoreError``, and nothing is created)."""
        try:
            self.dir = StoreDir(path, create=create)
        except OSError as exc:
            raise _translate(exc, os.path.abspath(path)) from exc
        self.path = self.dir.path
        self.log_dir = os.path.join(self.path, "logs")
        self.unreadable: dict[str, str] = {}  # id -> why its record cannot be read (seen here)
        # state -> ("counter:s" when read, the index): see state_index
        self._index_memo: dict[WorkState, tuple[int, dict[str, float]]] = {}
        self._blob_con: tuple[int, sqlite3.Connection] | None = None  # (pid, connection)
        try:
            # In this order: a read-only open of a folder that is no store says just that
            # (not "make it private"), and nothing in a store is read before it is known
            # to be this user's alone.
            if not create:
                self._check_is_store()
            self.dir.check_private()
            self._check_database()
            self.dir.check_contents()
            self.dir.make_dir("logs")
            new = self.dir.stat(DB_DIR) is None
            if new:
                # Made here, private whatever the umask: SQLite gives its write-ahead log
                # and shared-memory files the mode of the database file.
                self.dir.make_dir(DB_DIR)
                self.dir.create_file(os.path.join(DB_DIR, DB_FILE))
            self._cache = diskcache.Cache(
                # Through the open directory: a rename of a folder above the store cannot
                # point diskcache (and SQLite's later connections) at another one.
                self.dir.join(DB_DIR),
                timeout=_SQLITE_TIMEOUT,
                eviction_policy="none",
                size_limit=2**62,
                cull_limit=0,
                statistics=False,
                tag_index=False,
                # Index values grow with the store; as SQLite blobs they are written in
                # the transaction itself instead of as one file per version.
                disk_min_file_size=2**30,
            )
            if self._cache.get("meta") is None:
                self._cache.add("meta", {"schema": STORE_SCHEMA, "created": time.time()})
            for name in ("logs", DB_DIR, *(os.path.join(DB_DIR, DB_FILE + end)
                                           for end in ("", "-wal", "-shm"))):
                self.dir.tighten(name)
            if not self.dir.has_marker():
                # The database holds data now (a checkpoint moves it out of the write-ahead
                # log into the file itself), so the marker may say so.
                self._cache._sql("PRAGMA wal_checkpoint(TRUNCATE)")
                self.dir.write_marker()
        # sqlite3.Error too: opening writes diskcache's settings, and on a full disk that
        # raised a bare "sqlite3.OperationalError: database or disk is full" to the user.
        except (OSError, diskcache.Timeout, sqlite3.Error) as exc:
            self.dir.close()
            raise _translate(exc, self.path) from exc
        except BaseException:
            self.dir.close()
            raise
        self.journal = bool(self._cache.get("journal"))
        self._apply_durability(self.durability())
        meta = self._cache.get("meta") or {}
        if meta.get("schema", STORE_SCHEMA) > STORE_SCHEMA:
            self.close()
            raise StoreError(
                f"the store {self.path!r} was written by a newer nbwork (schema "
                f"{meta['schema']}); upgrade nbwork to use it"
            )

    def check_not_damaged(self) -> None:
        """Raise the ``StoreError`` of a store that a scheduler found damaged since it was
        opened (one stat: for callers that wait on the scheduler)."""
        if self.dir.stat(DAMAGED) is not None:
            self._check_database()

    def _check_is_store(self) -> None:
        # (No marker but a database: a store made before the marker existed, or one being
        # created right now; it gets its marker when opened.)
        if not self.dir.has_marker() and not self.dir.database_size():
            raise NotAStoreError(
                f"{self.path!r} is not an nbwork store (it has no {DB_DIR}/{DB_FILE}); nothing "
                "was created. Commands that enqueue work create a store")

    def _check_database(self) -> None:
        """Refuse a store whose database went missing or empty, or that a scheduler found
        damaged."""
        damaged = self.dir.read_file(DAMAGED)
        if damaged is not None:
            raise StoreError(
                f"the database of the store {self.path!r} is damaged: {damaged.strip()}. "
                "nbwork will not run work from it half-broken. Restore db/cache.db from a "
                "backup (or move the store away and start a new one), then delete "
                f"{os.path.join(self.path, DAMAGED)}")
        if self.dir.has_marker() and not self.dir.database_size():
            what = "is missing" if self.dir.database_size() is None else \
                "is empty (0 bytes: truncated?)"
            raise StoreError(
                f"the database of the store {self.path!r} {what}; nbwork will not start an "
                "empty store in its place, which would lose every work silently. Restore "
                f"{os.path.join(self.path, DB_DIR, DB_FILE)} from a backup, or to start "
                f"over remove the store: rm -r {self.path}")

    def check_integrity(self) -> None:
        """``PRAGMA quick_check`` of the database; a damaged one is marked (clients then
        refuse it too) and ``StoreError`` says what is wrong. For a scheduler that starts."""
        try:
            rows = [r[0] for r in self._cache._sql("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            if not any(sign in str(exc).lower() for sign in _DAMAGE_SIGNS):
                raise _translate(exc, self.path) from exc  # (an I/O error is no damage)
            rows = [str(exc)]
        if rows == ["ok"]:
            return
        found = "; ".join(rows[:5]) + (f" (and {len(rows) - 5} more)" if len(rows) > 5 else "")
        note = f"PRAGMA quick_check found: {found} (at {time.strftime('%Y-%m-%d %H:%M:%S')})"
        try:
            self.dir.write_file(DAMAGED, note + "\n")
        except OSError:
            pass  # the refusal below still stands
        raise StoreError(
            f"the database of the store {self.path!r} is damaged: {note}. nbwork will not run "
            "work from it half-broken. Restore db/cache.db from a backup (or move the store "
            f"away and start a new one), then delete {os.path.join(self.path, DAMAGED)}")

    def close(self) -> None:
        if self._blob_con is not None:
            self._blob_con[1].close()
            self._blob_con = None
        self._cache.close()
        self.dir.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One atomic read-modify-write; nothing is written if the body raises."""
        try:
            with self._cache.transact():
                txn = Transaction(self._cache, self.unreadable)
                txn.journal = self.journal
                yield txn
                txn.commit()
            self._update_index_memo(txn)
        except (OSError, diskcache.Timeout) as exc:
            raise _translate(exc, self.path) from exc
        except Exception as exc:  # sqlite3 errors (full disk, I/O) come as their own types
            if type(exc).__module__ == "sqlite3":
                raise _translate(exc, self.path) from exc
            raise

    # reads outside a transaction --------------------------------------------------------

    @_translated
    def get(self, id: str) -> WorkSpec | None:
        """The record of ``id``; None when there is none or it cannot be read."""
        record = self.read(id)
        return record if isinstance(record, WorkSpec) else None

    @_translated
    def get_many(self, ids: Iterable[str],
                 memo: dict[str, tuple[bytes, WorkSpec]] | None = None) -> list[WorkSpec]:
        """The records of ``ids`` that exist and can be read, in that order (see
        ``read_many``)."""
        return [r for r in self.read_many(ids, memo) if isinstance(r, WorkSpec)]

    def read_many(self, ids: Iterable[str], memo: dict[str, tuple[bytes, WorkSpec]] | None = None
                  ) -> list[WorkSpec | Unreadable]:
        """The records of ``ids`` that exist, in that order (``Unreadable`` for one that
        cannot be decoded), read in one SQL statement per ``_MANY_CHUNK`` ids inside one
        read transaction (a consistent snapshot): a query returning thousands of works paid
        a statement and diskcache's per-call overhead for each (issue 15: slower per work
        than a read by id).

        ``memo`` (``{id: (digest of the stored bytes, spec)}``, kept by the caller across
        calls): a record whose stored bytes did not change is not decoded again, and its
        spec from the memo is returned (callers must not mutate specs read with a memo).
        A 128-bit digest rather than the bytes: the memo of a big store stays small."""
        ids = list(ids)
        if len(ids) < 4 and memo is None:
            return [r for r in (self.read(i) for i in ids) if r is not None]
        records: dict[str, WorkSpec | Unreadable] = {}
        try:
            con = self._cache._con
            con.execute("BEGIN")
            try:
                for start in range(0, len(ids), _MANY_CHUNK):
                    keys = [f"w:{i}" for i in ids[start:start + _MANY_CHUNK]]
                    rows = con.execute(
                        "SELECT key, mode, filename, value FROM Cache WHERE raw = 1 AND key IN "
                        f"({','.join('?' * len(keys))})", keys).fetchall()
                    for key, mode, filename, value in rows:
                        id = key[2:]
                        if mode != diskcache.core.MODE_PICKLE or filename is not None:
                            record = _read_spec(self._cache, id, self.unreadable)
                            if record is not None:
                                records[id] = record
                            continue
                        digest = (hashlib.blake2b(value, digest_size=16).digest()
                                  if memo is not None else b"")
                        hit = memo.get(id) if memo is not None else None
                        if hit is not None and hit[0] == digest:
                            records[id] = hit[1]
                            continue
                        record = _decode_spec(id, lambda v=value: pickle.loads(v),
                                              self.unreadable)
                        records[id] = record
                        if memo is not None and isinstance(record, WorkSpec):
                            memo[id] = (digest, record)
            finally:
                con.execute("COMMIT")
        except (OSError, diskcache.Timeout, sqlite3.Error) as exc:
            raise _translate(exc, self.path) from exc
        out: list[WorkSpec | Unreadable] = []
        for i in ids:
            record = records.get(i)
            if isinstance(record, Unreadable):
                record = Unreadable(i, record.reason, self.indexed_state(i))
            if record is not None:
                out.append(record)
        return out

    @_translated
    def read(self, id: str) -> WorkSpec | Unreadable | None:
        """The record of ``id``, an ``Unreadable`` (with the state its index gives) when it
        cannot be decoded, or None when there is none."""
        record = _read_spec(self._cache, id, self.unreadable)
        if isinstance(record, Unreadable):
            return Unreadable(id, record.reason, self.indexed_state(id))
        return record

    def indexed_state(self, id: str) -> WorkState | None:
        """The state whose index holds ``id`` (without reading its record)."""
        for state in WorkState:
            if id in self.state_index(state):
                return state
        return None

    def _index_value(self, key: str, default: Any) -> Any:
        value, rebuilt = _read_index(self._cache, key, default)
        if rebuilt:
            with self.transaction() as txn:  # write the rebuilt index back
                value = txn._index(key, default)
        return value

    @_translated
    def state_index(self, state: WorkState) -> dict[str, float]:
        """``{id: sort key}`` of the works in ``state``; do not mutate the result.

        Reused while the change counter stands still: the scheduler reads the ENQUEUED
        index several times per wake-up, and reading the counter costs far less than
        unpickling an index of thousands of works.
        """
        counter = self._cache.get("counter:s", 0)
        cached = self._index_memo.get(state)
        if cached is not None and cached[0] == counter:
            return cached[1]
        # The counter is read before the shards: a commit in between makes the memo look
        # older than it is (read again next time), never newer.
        index: dict[str, float] = {}
        for key in _shard_keys(state):
            index.update(self._index_value(key, {}))
        self._index_memo[state] = (counter, index)
        return index

    def _update_index_memo(self, txn: Transaction) -> None:
        """Apply a commit of this process to the memo of the state indexes, if nobody else
        moved a work in between (then the memo plus this commit is exactly the store): the
        scheduler's own commits would otherwise make it re-read every index after each."""
        after = txn.states_counter_after
        if after is None:
            return
        for state, (counter, index) in list(self._index_memo.items()):
            if counter != after - 1:
                del self._index_memo[state]
                continue
            moves = [m for m in txn.index_moves if state in (m[0], m[1])]
            if moves:
                index = dict(index)  # callers may still hold the old one: never mutate it
                for before, now, id, sort_key in moves:
                    if before is state:
                        index.pop(id, None)
                    if now is state:
                        index[id] = sort_key
            self._index_memo[state] = (after, index)

    @_translated
    def tag_ids(self, tag: str) -> list[str]:
        return list(self._index_value(f"i:t:{tag}", {}))

    @_translated
    def unique_ids(self, name: str) -> list[str]:
        return list(self._index_value(f"i:u:{name}", []))

    @_translated
    def all_ids(self) -> list[str]:
        ids: list[str] = []
        for state in WorkState:
            ids.extend(self.state_index(state))
        return ids

    def _blob_connection(self) -> sqlite3.Connection:
        """A connection of this process that reads without memory-mapping the database:
        diskcache maps up to 64 MiB of it, and every page of a blob read through the map
        stayed in the reader's resident memory."""
        pid = os.getpid()
        if self._blob_con is None or self._blob_con[0] != pid:
            # Through the open directory, as diskcache's (see _storedir).
            con = sqlite3.connect(self.dir.join(DB_DIR, diskcache.core.DBNAME),
                                  timeout=_SQLITE_TIMEOUT, isolation_level=None,
                                  check_same_thread=False)
            con.execute("PRAGMA mmap_size = 0")
            con.execute(f"PRAGMA synchronous = {DURABILITY_LEVELS[self.durability()]}")
            self._blob_con = (pid, con)
        return self._blob_con[1]

    @_translated
    def get_code(self, key: str) -> bytes | None:
        return self._cache.get(f"code:{key}")

    def open_code(self, key: str, chunk_size: int = CODE_CHUNK) -> tuple[int, Iterator[bytes]]:
        """``(size, pieces)`` of the code blob ``key``, read piece by piece: a worker that
        captured a big global (an image, a model) is never whole in the scheduler's memory
        (``get_code`` peaked at twice its size: SQLite's buffer and the bytes made of it).
        Raises ``StoreError`` if there is no such blob."""
        try:
            con = self._blob_connection()
            row = con.execute("SELECT rowid, mode FROM Cache WHERE key = ? AND raw = 1",
                              (f"code:{key}",)).fetchone()
            if row is not None and row[1] == diskcache.core.MODE_RAW and hasattr(con, "blobopen"):
                blob = con.blobopen("Cache", "value", row[0], readonly=True)
                return len(blob), _pieces(blob, chunk_size, self.path)
            payload = self._cache.get(f"code:{key}") if row is not None else None
        except (OSError, diskcache.Timeout, sqlite3.Error) as exc:
            raise _translate(exc, self.path) from exc
        if payload is None:
            raise StoreError(f"the worker code {key[:12]} is missing from the store {self.path!r}")
        return len(payload), iter([payload])

    @_translated
    def get_value(self, key: str, default: Any = None) -> Any:
        return self._cache.get(key, default)

    def set_value(self, key: str, value: Any) -> None:
        """Set a side value (lease, device state) without bumping the change counter."""
        try:
            self._cache.set(key, value)
        # sqlite3.Error too (a full disk): the scheduler's heartbeat must get a StoreError.
        except (OSError, diskcache.Timeout, sqlite3.Error) as exc:
            raise _translate(exc, self.path) from exc

    @_translated
    def executor(self) -> str:
        """Where this store's scheduler runs work: ``"local"`` (the default) or a
        ``"dask://HOST:PORT"`` address."""
        return (self._cache.get("config") or {}).get("executor", "local")

    def set_executor(self, address: str) -> None:
        with self.transaction() as txn:
            config = dict(txn.get_value("config") or {})
            config["executor"] = address
            txn.set_value("config", config)

    def durability(self) -> str:
        """What a commit survives: ``"process"`` (the default) or ``"power"``."""
        level = (self._cache.get("config") or {}).get("durability", DEFAULT_DURABILITY)
        return level if level in DURABILITY_LEVELS else DEFAULT_DURABILITY

    def set_durability(self, level: str) -> None:
        level = check_durability(level)
        with self.transaction() as txn:
            config = dict(txn.get_value("config") or {})
            config["durability"] = level
            txn.set_value("config", config)
        self._apply_durability(level)

    def _apply_durability(self, level: str) -> None:
        """Make diskcache's Settings (read by every new connection, in every process and
        thread) and this thread's connection agree with the store's level. The config is
        the truth: a crash between its commit and this write is repaired at the next open."""
        wanted = DURABILITY_LEVELS[level]
        try:
            if getattr(self._cache, "sqlite_synchronous", None) != wanted:
                self._cache.reset("sqlite_synchronous", wanted)
            if self._blob_con is not None and self._blob_con[0] == os.getpid():
                self._blob_con[1].execute(f"PRAGMA synchronous = {wanted}")
        except (OSError, diskcache.Timeout, sqlite3.Error) as exc:
            raise _translate(exc, self.path) from exc

    def synchronous(self) -> int:
        """SQLite's synchronous level of this thread's connection (1 NORMAL, 2 FULL)."""
        try:
            return self._cache._con.execute("PRAGMA synchronous").fetchone()[0]
        except (OSError, diskcache.Timeout, sqlite3.Error) as exc:
            raise _translate(exc, self.path) from exc

    @_translated
    def device_state(self) -> dict[str, bool] | None:
        """The simulated device state (``TestDriver``), or None when the host's is used."""
        return self._cache.get("device")

    def set_device_state(self, values: dict[str, bool] | None) -> None:
        """Set (or with None, clear) the simulated device state; bumps the change counter so
        observers and the scheduler see it."""
        with self.transaction() as txn:
            if values is None:
                txn.delete_value("device")
            else:
                txn.set_value("device", dict(values))

    def enable_journal(self) -> None:
        """Journal every state change from now on (``j:<id>``, see the module docstring).

        Read when a process opens the store: enable it on a new store before any client or
        scheduler opens it. It costs a read and a write per state change.
        """
        self.set_value("journal", True)
        self.journal = True

    @_translated
    def journal_of(self, id: str) -> list[list[Any]]:
        """The journaled state changes of a work: [from, to, run_attempt_count] each."""
        return [list(e) for e in self._cache.get(f"j:{id}", [])]

    @_translated
    def change_counter(self) -> int:
        return self._cache.get("counter", 0)

    def log_path(self, id: str) -> str:
        return os.path.join(self.log_dir, f"{id}.log")
