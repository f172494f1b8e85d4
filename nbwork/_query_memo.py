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

from ._spec import WorkSpec
from ._store.reads import Memo
from .info import WorkInfo

READ_MEMO_LIMIT = 20_000
"""Decoded records (and their infos) kept per store; forgotten all at once past it."""
RESULTS_LIMIT = 64
"""Query results kept per store (see ``ReadMemo.result``); forgotten all at once past it."""


class ReadMemo:
    """``records``: ``{id: (stamp of the stored record, spec)}`` for ``Store.read_many``;
    ``infos``: ``{id: (spec, its info)}``, the info of the very spec object the records
    memo holds (a new stored version is a new spec, so its info is made again)."""

    def __init__(self) -> None:
        self.records: Memo = {}
        self.infos: dict[str, tuple[WorkSpec, WorkInfo]] = {}
        self.results: dict[Hashable, tuple[int, list[WorkInfo]]] = {}

    def trim(self) -> None:
        # The kept results go with the records: they hold the same infos, and would
        # otherwise keep infos alive that the memo forgot.
        if len(self.records) > READ_MEMO_LIMIT or len(self.results) > RESULTS_LIMIT:
            if len(self.records) > READ_MEMO_LIMIT:
                self.records.clear()
                self.infos.clear()
            self.results.clear()

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
