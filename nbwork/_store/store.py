"""``Store``: one store directory, opened; every read and write of its database.

Each public method is an entry point guarded by ``faults`` (``reads``, ``writes`` or
``transaction``), so what reaches a caller is ``StoreError`` in nbwork's words, never a
bare ``sqlite3`` error.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from .. import _layout
from .._spec import WorkSpec
from .._storedir import StoreDir
from ..errors import InvalidInputError, StoreError
from ..info import WorkState
from . import migration, opening, rows, shards
from .checkpoint import Checkpointer
from .codec import Unreadable, load_value, read_index, read_spec
from .faults import guard, reads, writes
from .reads import Memo, connect_unmapped, open_blob, read_records
from .transaction import CODE_CHUNK, Transaction

# SQLite's synchronous level per durability (WAL mode). "process": a commit is in the WAL
# file when it returns, so no process crash loses it, but the OS may still hold it in its
# page cache (a power loss may lose the last commits). "power": every commit is fsynced.
DURABILITY_LEVELS = {"process": 1, "power": 2}  # NORMAL, FULL
DEFAULT_DURABILITY = "process"
PAGE_CACHE_KIB = 8192
"""The page cache of a process that bounds its memory (``Store.bound_memory``)."""


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


class Store:
    """A store directory: work records, indexes, code blobs and logs."""

    def __init__(self, path: str, create: bool = True) -> None:
        """Open the store at ``path``; with ``create``, make it if it is not one yet (else
        ``NotAStoreError``, and nothing is created)."""
        with guard(os.path.abspath(path), "opened"):
            self.dir = StoreDir(path, create=create)
        self.path = self.dir.path
        self.log_dir = _layout.logs_dir(self.path)
        self.unreadable: dict[str, str] = {}  # id -> why its record cannot be read (seen here)
        # state -> its index as of a "counter:s": see state_index
        self._index_memo: dict[WorkState, shards.StateMemo] = {}
        # [change counter, "counter:s"] while a scheduler turn runs: see turn
        self._turn: list[int] | None = None
        self._blob_con: tuple[int, sqlite3.Connection] | None = None  # (pid, connection)
        try:
            with guard(self.path, "opened"):
                self._open(create)
        except BaseException:
            self.dir.close()
            raise

    def _open(self, create: bool) -> None:
        # In this order: a read-only open of a folder that is no store says just that (not
        # "make it private"), and nothing in a store is read before it is known to be this
        # user's alone.
        if not create:
            opening.check_is_store(self.dir)
        self.dir.check_private()
        opening.check_database(self.dir)
        self.dir.check_contents()
        self._cache = opening.open_cache(self.dir)
        try:
            self.journal = bool(load_value(self._cache, "journal"))
            self._apply_durability(self.durability())
            opening.check_schema(self._cache, self.path)
            migration.upgrade(self._cache, self.path)
        except BaseException:
            self._cache.close()
            raise

    @reads
    def bound_memory(self, page_cache_kib: int = PAGE_CACHE_KIB) -> None:
        """Read this thread's database through a page cache of ``page_cache_kib`` instead of
        diskcache's memory map of up to 64 MiB: for the scheduler, which runs for hours.
        Every page of the map it ever touched stayed in its resident memory until the
        database outgrew the map, so that memory grew with the store (10 MiB over a run of
        20,000 works); a page cache evicts what is least used."""
        con = self._cache._con
        con.execute("PRAGMA mmap_size = 0")
        con.execute(f"PRAGMA cache_size = -{int(page_cache_kib)}")

    @reads
    def check_not_damaged(self) -> None:
        """Raise the ``StoreError`` of a store that a scheduler found damaged since it was
        opened (one stat: for callers that wait on the scheduler)."""
        if self.dir.stat(_layout.DAMAGED) is not None:
            opening.check_database(self.dir)

    def check_integrity(self) -> None:
        """``PRAGMA quick_check`` of the database; a damaged one is marked (clients then
        refuse it too) and ``StoreError`` says what is wrong. For a scheduler that starts."""
        with guard(self.path, "read"):
            opening.check_integrity(self._cache, self.dir)

    def close(self) -> None:
        if self._blob_con is not None:
            self._blob_con[1].close()
            self._blob_con = None
        self._cache.close()
        self.dir.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One atomic read-modify-write; nothing is written if the body raises."""
        with guard(self.path, "written"):
            with self._cache.transact():
                txn = Transaction(self._cache, self.unreadable)
                txn.journal = self.journal
                yield txn
                txn.commit()
            self._update_index_memo(txn)
            if self._turn is not None:  # what our commit set: true as of the commit
                if txn.counter_after is not None:
                    self._turn[0] = txn.counter_after
                if txn.states_counter_after is not None:
                    self._turn[1] = txn.states_counter_after

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Read the change counters once, in one statement, for a whole turn of the
        scheduler: ``change_counter`` and the memo check of ``state_index`` use them, and
        this process's commits move them. A commit by another process during the turn is
        seen at the next one (it wakes the scheduler), as if it came just after this read:
        an idle scheduler read the counters 13 times per work."""
        if self._turn is not None:
            yield
            return
        self._turn = self._read_counters()
        try:
            yield
        finally:
            self._turn = None

    @reads
    def _read_counters(self) -> list[int]:
        rows = dict(self._cache._con.execute(
            "SELECT key, value FROM Cache WHERE raw = 1 AND key IN ('counter', ?)",
            (shards.COUNTER,)).fetchall())
        return [rows.get("counter", 0), rows.get(shards.COUNTER, 0)]

    # reads outside a transaction --------------------------------------------------------

    @reads
    def get(self, id: str) -> WorkSpec | None:
        """The record of ``id``; None when there is none or it cannot be read."""
        record = self._read(id)
        return record if isinstance(record, WorkSpec) else None

    @reads
    def get_many(self, ids: Iterable[str], memo: Memo | None = None) -> list[WorkSpec]:
        """The records of ``ids`` that exist and can be read, in that order (see
        ``read_many``)."""
        return [r for r in self._read_many(ids, memo) if isinstance(r, WorkSpec)]

    @reads
    def read_many(self, ids: Iterable[str], memo: Memo | None = None
                  ) -> list[WorkSpec | Unreadable]:
        """The records of ``ids`` that exist, in that order (``Unreadable`` for one that
        cannot be decoded), read in one statement per few hundred ids (see ``reads``).

        ``memo`` (``reads.Memo``, kept by the caller across calls): a record whose stamp did
        not change is neither read nor decoded again, and its spec from the memo is returned
        (callers must not mutate specs read with a memo)."""
        return self._read_many(ids, memo)

    def _read_many(self, ids: Iterable[str], memo: Memo | None
                   ) -> list[WorkSpec | Unreadable]:
        ids = list(ids)
        if len(ids) < 4 and memo is None:
            return [r for r in (self._read(i) for i in ids) if r is not None]
        records = read_records(self._cache, ids, memo, self.unreadable)
        out: list[WorkSpec | Unreadable] = []
        for i in ids:
            record = records.get(i)
            if isinstance(record, Unreadable):
                record = Unreadable(i, record.reason, self.indexed_state(i))
            if record is not None:
                out.append(record)
        return out

    @reads
    def read(self, id: str) -> WorkSpec | Unreadable | None:
        """The record of ``id``, an ``Unreadable`` (with the state its index gives) when it
        cannot be decoded, or None when there is none."""
        return self._read(id)

    def _read(self, id: str) -> WorkSpec | Unreadable | None:
        record = read_spec(self._cache, id, self.unreadable)
        if isinstance(record, Unreadable):
            return Unreadable(id, record.reason, self.indexed_state(id))
        return record

    @reads
    def indexed_state(self, id: str) -> WorkState | None:
        """The state whose index holds ``id`` (without reading its record)."""
        for state in WorkState:
            if id in self.state_index(state):
                return state
        return None

    def _index_value(self, key: str, default: Any) -> Any:
        value, rebuilt = read_index(self._cache, key, default)
        if rebuilt:
            with self.transaction() as txn:  # write the rebuilt index back
                value = txn._index(key, default)
        return value

    @reads
    def state_index(self, state: WorkState) -> dict[str, float]:
        """``{id: sort key}`` of the works in ``state``; do not mutate the result.

        Reused while the change counter of states stands still: the scheduler reads the
        ENQUEUED index several times per wake-up, and reading the counter costs far less
        than unpickling an index of thousands of works. When it moved, only the shards
        whose stored bytes changed are unpickled again (see ``shards``).
        """
        memo = self._index_memo.get(state)
        counter = self._turn[1] if self._turn is not None else self._cache.get(
            shards.COUNTER, 0)
        if memo is not None and memo.counter == counter:
            return memo.index
        if state in rows.ROW_STATES:
            # The counter was read before the rows: a commit in between makes the memo
            # look older than it is (scanned again next time), never newer.
            memo = shards.StateMemo(counter, self._rows(state))
        else:
            memo = shards.refresh(self._cache, state, memo,
                                  lambda key: self._index_value(key, {}))
        self._index_memo[state] = memo
        if self._turn is not None:  # read now: newer than the turn's, as true
            self._turn[1] = memo.counter
        return memo.index

    def _rows(self, state: WorkState) -> dict[str, float]:
        """The rows of a finished state (one range query), repaired when one is damaged."""
        index = rows.scan_state(self._cache, state)
        if index is None:
            with self.transaction() as txn:
                index = txn.state_index(state)
        return index

    def _update_index_memo(self, txn: Transaction) -> None:
        """Apply a commit of this process to the memo of the state indexes: the scheduler's
        own commits would otherwise make it re-read the shards they changed after each."""
        after = txn.states_counter_after
        if after is None:
            return
        for state, memo in list(self._index_memo.items()):
            self._index_memo[state] = shards.apply(memo, state, after, txn.index_moves)

    @reads
    def tag_ids(self, tag: str) -> list[str]:
        return list(self._index_value(f"i:t:{tag}", {}))

    @reads
    def unique_ids(self, name: str) -> list[str]:
        return list(self._index_value(f"i:u:{name}", []))

    @reads
    def all_ids(self) -> list[str]:
        ids: list[str] = []
        for state in WorkState:
            ids.extend(self.state_index(state))
        return ids

    # code blobs -------------------------------------------------------------------------

    def _blob_connection(self) -> sqlite3.Connection:
        """This process's connection for blobs (see ``reads.connect_unmapped``)."""
        pid = os.getpid()
        if self._blob_con is None or self._blob_con[0] != pid:
            # Through the open directory, as diskcache's (see _storedir).
            con = connect_unmapped(self.dir.join(_layout.DB_DIR, _layout.DB_FILE),
                                   DURABILITY_LEVELS[self.durability()])
            self._blob_con = (pid, con)
        return self._blob_con[1]

    def checkpointer(self) -> Checkpointer:
        """A ``Checkpointer`` of this store's log, not started yet: for the scheduler."""
        return Checkpointer(self.dir.join(_layout.DB_DIR, _layout.DB_FILE),
                            DURABILITY_LEVELS[self.durability()])

    @reads
    def get_code(self, key: str) -> bytes | None:
        return self._cache.get(f"code:{key}")

    @reads
    def open_code(self, key: str, chunk_size: int = CODE_CHUNK) -> tuple[int, Iterator[bytes]]:
        """``(size, pieces)`` of the code blob ``key``, read piece by piece: a worker that
        captured a big global (an image, a model) is never whole in the scheduler's memory
        (``get_code`` peaked at twice its size: SQLite's buffer and the bytes made of it).
        Raises ``StoreError`` if there is no such blob."""
        opened = open_blob(self._blob_connection(), f"code:{key}", chunk_size, self.path)
        if opened is not None:
            return opened
        payload = self._cache.get(f"code:{key}")
        if payload is None:
            raise StoreError(
                f"the worker code {key[:12]} is missing from the store {self.path!r}")
        return len(payload), iter([payload])

    # side values and settings -----------------------------------------------------------

    @reads
    def get_value(self, key: str, default: Any = None) -> Any:
        return load_value(self._cache, key, default)

    @writes
    def set_value(self, key: str, value: Any) -> None:
        """Set a side value (lease, device state) without bumping the change counter."""
        self._cache.set(key, value)

    def _config(self) -> dict[str, Any]:
        return load_value(self._cache, "config") or {}

    @reads
    def executor(self) -> str:
        """Where this store's scheduler runs work: ``"local"`` (the default) or a
        ``"dask://HOST:PORT"`` address."""
        return self._config().get("executor", "local")

    def set_executor(self, address: str) -> None:
        with self.transaction() as txn:
            config = dict(txn.get_value("config") or {})
            config["executor"] = address
            txn.set_value("config", config)

    @reads
    def durability(self) -> str:
        """What a commit survives: ``"process"`` (the default) or ``"power"``."""
        level = self._config().get("durability", DEFAULT_DURABILITY)
        return level if level in DURABILITY_LEVELS else DEFAULT_DURABILITY

    def set_durability(self, level: str) -> None:
        level = check_durability(level)
        with self.transaction() as txn:
            config = dict(txn.get_value("config") or {})
            config["durability"] = level
            txn.set_value("config", config)
        self._apply_durability(level)

    @writes
    def _apply_durability(self, level: str) -> None:
        """Make diskcache's Settings (read by every new connection, in every process and
        thread) and this thread's connection agree with the store's level. The config is
        the truth: a crash between its commit and this write is repaired at the next open."""
        wanted = DURABILITY_LEVELS[level]
        if getattr(self._cache, "sqlite_synchronous", None) != wanted:
            self._cache.reset("sqlite_synchronous", wanted)
        if self._blob_con is not None and self._blob_con[0] == os.getpid():
            self._blob_con[1].execute(f"PRAGMA synchronous = {wanted}")

    @reads
    def synchronous(self) -> int:
        """SQLite's synchronous level of this thread's connection (1 NORMAL, 2 FULL)."""
        return self._cache._con.execute("PRAGMA synchronous").fetchone()[0]

    @reads
    def device_state(self) -> dict[str, bool] | None:
        """The simulated device state (``TestDriver``), or None when the host's is used."""
        return load_value(self._cache, "device")

    def set_device_state(self, values: dict[str, bool] | None) -> None:
        """Set (or with None, clear) the simulated device state; bumps the change counter so
        observers and the scheduler see it."""
        with self.transaction() as txn:
            if values is None:
                txn.delete_value("device")
            else:
                txn.set_value("device", dict(values))

    def enable_journal(self) -> None:
        """Journal every state change from now on (``j:<id>``, see ``nbwork._store``).

        Read when a process opens the store: enable it on a new store before any client or
        scheduler opens it. It costs a read and a write per state change.
        """
        self.set_value("journal", True)
        self.journal = True

    @reads
    def journal_of(self, id: str) -> list[list[Any]]:
        """The journaled state changes of a work: [from, to, run_attempt_count] each."""
        return [list(e) for e in load_value(self._cache, f"j:{id}", [])]

    @reads
    def change_counter(self) -> int:
        if self._turn is not None:  # read at the start of the scheduler's turn
            return self._turn[0]
        return self._cache.get("counter", 0)

    def log_path(self, id: str) -> str:
        return _layout.work_log_path(self.path, id)
