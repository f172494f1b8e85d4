"""What the scheduler remembers of the store between transactions, and the one rule that
says when that is still true.

The rule: everything here is valid as of the store's change counter ``seen``. A commit of
this scheduler moves ``seen`` forward when its ``counter_before`` is ``seen`` (nobody else
committed in between); any other sign of a commit by someone else (a counter read that
differs from ``seen``, a commit of ours that did not follow ``seen``) forgets all of it and
raises ``news``, which the loop takes to look at its running attempts again (a cancel, a
changed constraint). Nothing else in the scheduler compares change counters.

Kept here: records as the store holds them (those of this scheduler's running attempts as
it last wrote them, and due works it read outside a transaction): the next transaction
adopts them instead of reading them back, which keeps reads out of the transactions that
block clients. Also the constraints of works it read (with many works waiting for the
charger, each wake-up must not reload every one of them).

Our own commits change the works they start and finish, and the BLOCKED dependents of the
latter; a record held of any other work stays true through them. (Records whose state one
of our commits moved are dropped all the same.)
"""

from __future__ import annotations

import weakref
from typing import Any

from ._spec import WorkSpec


class RecordCache:
    def __init__(self) -> None:
        self._seen = -1
        self._news = True
        self._held: dict[str, WorkSpec] = {}
        # The transaction whose counter was last looked at, weakly: a strong reference kept
        # the last transaction alive after it ended, with every index shard it had loaded
        # (the scheduler's memory grew with every finished work).
        self._looked_in: weakref.ref[Any] | None = None
        self.constraints: dict[str, dict[str, Any]] = {}
        """work id -> the constraints that gate it ({} when none or overridden)."""

    def look(self, counter: int) -> None:
        """Compare a change counter read now (in a transaction or not) with ``seen``."""
        if counter != self._seen:
            self._forget()
            self._seen = counter

    def take_news(self) -> bool:
        """Did anybody else write since the last call?"""
        news, self._news = self._news, False
        return news

    def current(self, txn: Any, work_id: str) -> WorkSpec | None:
        """The record of ``work_id`` in ``txn``: the one held if nobody else wrote since,
        else read from the store."""
        looked_in = self._looked_in() if self._looked_in is not None else None
        if looked_in is not txn:  # one counter read per transaction
            self._looked_in = weakref.ref(txn)
            self.look(txn.change_counter())
        held = self._held.get(work_id)
        return txn.adopt(held) if held is not None else txn.get(work_id)

    def holds(self, work_id: str) -> bool:
        return work_id in self._held

    def read(self, counter: int, specs: list[WorkSpec]) -> None:
        """Records read outside a transaction that began after ``counter`` was read (a commit
        in between makes them look older than they are: dropped at the next look)."""
        self.look(counter)
        for spec in specs:
            self._held[spec.id] = spec

    def committed(self, txn: Any, written: list[WorkSpec] = (),  # type: ignore[assignment]
                  ended: list[str] = ()) -> None:  # type: ignore[assignment]
        """After a commit of ours: ``written`` are our running attempts' records as written,
        ``ended`` the works no longer ours. Our commits change states, never constraints,
        and never cancel anything: what we hold stays true."""
        if txn.counter_after is None:  # nothing was written
            return
        if txn.counter_before != self._seen:
            # Somebody committed just before us (the counter read inside the transaction
            # makes "nobody else" exact): forget, and look at the running attempts again.
            self._forget()
        self._seen = txn.counter_after
        for _, _, work_id, _ in txn.index_moves:
            self._held.pop(work_id, None)
        for spec in written:
            self._held[spec.id] = spec
        for work_id in ended:
            self._held.pop(work_id, None)

    def failed(self) -> None:
        """A transaction of ours did not commit: records it changed in place are not the
        store's."""
        self._forget()

    def _forget(self) -> None:
        self._held.clear()
        self.constraints.clear()  # cleared in place: the dispatcher holds this dict
        self._news = True
