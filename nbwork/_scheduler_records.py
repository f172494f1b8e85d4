"""What the scheduler remembers of the store between transactions, and the one rule that
says when that is still true.

The rule: everything here is valid as of the store's change counter ``seen``. A commit of
this scheduler moves ``seen`` forward when its ``counter_before`` is ``seen`` (nobody else
committed in between); any other sign of a commit by someone else (a counter read that
differs from ``seen``, a commit of ours that did not follow ``seen``) forgets all of it and
raises ``news``, which the loop takes to look at its running attempts again (a cancel, a
changed constraint). Nothing else in the scheduler compares change counters.

Kept here: the records of this scheduler's running attempts as it last wrote them (the next
transaction need not read them back) and the constraints of works it read (with many works
waiting for the charger, each wake-up must not reload every one of them).
"""

from __future__ import annotations

from typing import Any

from ._spec import WorkSpec


class RecordCache:
    def __init__(self) -> None:
        self._seen = -1
        self._news = True
        self._own: dict[str, WorkSpec] = {}
        self._looked_in: Any = None  # the transaction whose counter was last looked at
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

    def own(self, txn: Any, work_id: str) -> WorkSpec | None:
        """The record of ``work_id`` in ``txn``: ours as last written if nobody else wrote
        since, else read from the store."""
        if self._looked_in is not txn:  # one counter read per transaction
            self._looked_in = txn
            self.look(txn.change_counter())
        own = self._own.get(work_id)
        return txn.adopt(own) if own is not None else txn.get(work_id)

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
        for spec in written:
            self._own[spec.id] = spec
        for work_id in ended:
            self._own.pop(work_id, None)

    def failed(self) -> None:
        """A transaction of ours did not commit: records it changed in place are not the
        store's."""
        self._forget()

    def _forget(self) -> None:
        self._own.clear()
        self.constraints.clear()  # cleared in place: the dispatcher holds this dict
        self._news = True
