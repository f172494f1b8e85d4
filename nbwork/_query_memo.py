"""What queries decoded, shared by the ``WorkManager``s of one store in a process.

A query decodes the record of every work it returns and builds its ``WorkInfo``; the memo
keeps both per stored version of a work (its stamp, see ``_store.reads``), so
asking again decodes only what changed. It is shared by every manager of the same store in
the process, as the store's watcher is: a second manager (a view or a panel request that
opens its own, a notebook cell run again) starts from what the first one decoded instead
of decoding thousands of records again (issue 15: the first query of a new manager cost
1.6x a read by id per info). It lives as long as one of those managers does.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from itertools import compress
from operator import is_not
from typing import Any, NamedTuple

from ._spec import WorkSpec
from ._store.reads import Memo
from .info import WorkInfo

READ_MEMO_LIMIT = 20_000
"""Decoded records (and their infos) kept per store; forgotten all at once past it."""
RESULTS_LIMIT = 64
"""Query results kept per store (see ``ReadMemo.result``); forgotten all at once past it."""


class Basis(NamedTuple):
    """What a query's last full evaluation read and returned: ``records``, the specs
    ``Store.read_many`` gave, in its order; ``infos``, the result; ``positions``, the index
    in ``infos`` of each record that matched."""

    records: list[WorkSpec]
    infos: list[WorkInfo]
    positions: dict[str, int]


PATCH_SHARE = 0.05
"""A refresh in which more of the records changed is evaluated in full."""


class ReadMemo:
    """``records``: ``{id: (stamp of the stored record, spec)}`` for ``Store.read_many``;
    ``infos``: ``{id: (spec, its info)}``, the info of the very spec object the records
    memo holds (a new stored version is a new spec, so its info is made again)."""

    def __init__(self) -> None:
        self.records: Memo = {}
        self.infos: dict[str, tuple[WorkSpec, WorkInfo]] = {}
        self.results: dict[Hashable, tuple[int, list[WorkInfo]]] = {}
        self.bases: dict[Hashable, Basis] = {}

    def trim(self) -> None:
        # The kept results go with the records: they hold the same infos, and would
        # otherwise keep infos alive that the memo forgot.
        if len(self.records) > READ_MEMO_LIMIT or len(self.results) > RESULTS_LIMIT:
            if len(self.records) > READ_MEMO_LIMIT:
                self.records.clear()
                self.infos.clear()
            self.results.clear()
            self.bases.clear()

    def result(self, query: Hashable, counter: int) -> list[WorkInfo] | None:
        """The infos ``query`` returned when the store's change counter was ``counter``, if
        it still is: every transaction that writes a record moves the counter, so nothing
        it returned can have changed (several tables, panels or waits of one process ask
        the same query after each change; only the first reads the store)."""
        hit = self.results.get(query)
        return list(hit[1]) if hit is not None and hit[0] == counter else None

    def keep(self, query: Hashable, counter: int, infos: list[WorkInfo]) -> None:
        """Remember ``infos`` as the result of ``query`` read at ``counter`` (a counter read
        before the records: a commit in between makes the result look older, never
        newer). Not a result of more infos than the memo keeps records."""
        if len(infos) <= READ_MEMO_LIMIT:
            self.results[query] = (counter, list(infos))

    def keep_basis(self, query: Hashable, records: list[Any], infos: list[WorkInfo],
                   matched: list[WorkSpec]) -> None:
        """Remember what a full evaluation of ``query`` read (``records``) and returned
        (``infos``, made from ``matched`` in that order), for ``patched``. Not when a record
        could not be read (its info comes from elsewhere) or a result is too big."""
        if len(records) > READ_MEMO_LIMIT or not all(type(r) is WorkSpec for r in records):
            self.bases.pop(query, None)
            return
        self.bases[query] = Basis(records, infos, {s.id: i for i, s in enumerate(matched)})

    def patched(self, query: Hashable, records: list[Any],
                matches: Callable[[WorkSpec], bool], order: Callable[[WorkSpec], Any],
                make: Callable[[WorkSpec], WorkInfo]) -> list[WorkInfo] | None:
        """The result of ``query`` from its last full evaluation, when ``records`` (read
        with this memo, in the same order) are the same works as then and only a few of
        them are new versions, each still matching or not as before and in the same
        place in the order: their infos are made again, the rest kept. None otherwise.

        A live table refreshes after every change of one work; this skips the check, sort
        and lookup of every other info (half of a refresh of 2,000 works)."""
        basis = self.bases.get(query)
        if basis is None or len(basis.records) != len(records):
            return None
        # (Unchanged records are the very spec objects of the memo: an identity test.)
        changed = list(compress(range(len(records)), map(is_not, basis.records, records)))
        if len(changed) > PATCH_SHARE * len(records):
            return None
        infos = basis.infos
        if changed:
            infos = list(infos)
            for i in changed:
                old, new = basis.records[i], records[i]
                if type(new) is not WorkSpec or new.id != old.id or order(new) != order(old):
                    return None
                where = basis.positions.get(old.id)
                if matches(new) != (where is not None):
                    return None
                if where is not None:
                    infos[where] = make(new)
            self.bases[query] = Basis(records, infos, basis.positions)
        return list(infos)

    def info(self, spec: WorkSpec, make: Callable[[WorkSpec], WorkInfo]) -> WorkInfo:
        """The info of ``spec`` (read with ``records``), made by ``make`` once per version."""
        hit = self.infos.get(spec.id)
        if hit is not None and hit[0] is spec:
            return hit[1]
        info = make(spec)
        self.infos[spec.id] = (spec, info)
        return info


# (Threads of one process may share it: every entry is one consistent pair, and two
# threads that miss together only decode the same record twice.)
_memos: weakref.WeakValueDictionary[str, ReadMemo] = weakref.WeakValueDictionary()
_memos_lock = threading.Lock()


def memo_of(path: str, created: object = None) -> ReadMemo:
    """The read memo of the store at ``path`` (its absolute path), shared in this process.
    ``created``: when the store was made (its ``meta``), so that a store removed and made
    again at the same path, whose change counter starts over, never gets the results kept
    for the old one."""
    key = f"{path}\0{created!r}"
    with _memos_lock:
        memo = _memos.get(key)
        if memo is None:
            memo = _memos[key] = ReadMemo()
        return memo
