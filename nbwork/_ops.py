"""Store operations shared by clients and the scheduler: enqueue, cancel, prune.

Each is one store transaction that asks ``_rules`` what to do; nothing here knows about
processes. Whatever raises leaves the store untouched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import _rules
from ._content import has_triggers, triggers_listing, triggers_of
from ._records import REQUEST_FIELDS, NewWork
from ._spec import WorkSpec
from ._store import Store, Transaction, Unreadable
from .errors import InvalidRequestError
from .info import FINISHED_STATES, UpdateResult, WorkState
from .request import ExistingPeriodicWorkPolicy, ExistingWorkPolicy


@dataclass
class UniqueGroup:
    """Works enqueued under one unique name with one policy; ``roots`` get APPEND's leaves."""

    name: str
    policy: ExistingWorkPolicy | ExistingPeriodicWorkPolicy
    members: list[str] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)


@dataclass
class EnqueueOutcome:
    enqueued: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)


def enqueue(store: Store, works: list[NewWork], groups: list[UniqueGroup],
            now: float) -> EnqueueOutcome:
    """Insert ``works`` (in dependency order) applying each unique group's policy, atomically."""
    listings = content_listings(works)
    with store.transaction() as txn:
        return enqueue_in(txn, works, groups, now, listings)


def content_listings(works: Iterable[NewWork]) -> dict[str, dict]:
    """What the content triggers of each new work see now (read before the transaction,
    which holds the store's write lock): "changed after enqueue" is measured against it."""
    return {w.spec.id: triggers_listing(triggers_of(w.spec.constraints))
            for w in works if has_triggers(w.spec)}


CONTENT_LISTING_KEY = "cs:{}"
"""The listing a waiting content-triggered work's changes are measured against."""


def enqueue_in(txn: Transaction, works: list[NewWork], groups: list[UniqueGroup], now: float,
               listings: dict[str, dict] | None = None) -> EnqueueOutcome:
    """``enqueue`` inside a transaction of the caller's."""
    result = EnqueueOutcome()
    by_id = {w.spec.id: w for w in works}
    for spec in txn.get_many(by_id):  # one read per few hundred ids, not one per work
        work = by_id[spec.id]
        raise InvalidRequestError(
            f"request {work.spec.id} ({work.spec.worker_name}) was already enqueued; a "
            "request can be enqueued only once: build a new request for another run"
        )
    dropped: set[str] = set()
    for group in groups:
        existing = txn.get_many(txn.unique_ids(group.name))
        if isinstance(group.policy, ExistingPeriodicWorkPolicy):
            plan = _rules.plan_unique_periodic(existing, group.policy, group.name)
        else:
            if any(s.is_periodic for s in existing if not s.is_finished):
                raise InvalidRequestError(
                    f"unique work {group.name!r} holds periodic work; use "
                    "enqueue_unique_periodic_work for that name, or another name"
                )
            plan = _rules.plan_unique(existing, group.policy)
        if plan.drop_new:
            dropped.update(group.members)
            continue
        if plan.update is not None:
            new = by_id[group.members[0]].spec
            _apply_update(txn, plan.update, new, by_id[new.id].payload)
            dropped.add(new.id)
            result.updated.append(plan.update)
            continue
        result.stop.extend(_rules.cancel(txn, plan.cancel, now))
        for wid in plan.detach:
            spec = txn.get(wid)
            if spec is not None:
                spec.unique_name = None
                txn.put(spec)
        for root in group.roots:
            spec = by_id[root].spec
            spec.prerequisites = (*plan.prerequisites, *spec.prerequisites)
    # Work that depends on dropped work in this batch is dropped with it.
    for work in works:
        if work.spec.id not in dropped and dropped.intersection(work.spec.prerequisites):
            dropped.add(work.spec.id)
    for work in works:
        if work.spec.id in dropped:
            continue
        work.spec.enqueue_order = len(result.enqueued)
        txn.put_code(work.spec.code_key, work.payload)
        _rules.insert_new(txn, work.spec, now)
        txn.add(work.spec)
        if listings and work.spec.id in listings:
            txn.set_value(CONTENT_LISTING_KEY.format(work.spec.id), listings[work.spec.id])
        result.enqueued.append(work.spec.id)
    result.dropped = [w.spec.id for w in works if w.spec.id in dropped]
    return result


def _apply_update(txn: Transaction, work_id: str, new: WorkSpec, payload: bytes) -> None:
    """Give an existing unfinished work a new spec from its next run on (generation + 1)."""
    spec = txn.get(work_id)
    assert spec is not None
    old_code = spec.code_key
    for name in REQUEST_FIELDS:
        setattr(spec, name, getattr(new, name))
    spec.generation += 1
    if spec.state is WorkState.ENQUEUED:
        # As WorkManager, the waiting run is rescheduled under the new spec (its backoff,
        # interval, flex or initial delay) from the same starting point.
        if spec.backing_off:
            spec.next_run_at = _rules.backoff_run_at(spec)
        elif spec.is_periodic and spec.period_count > 0:
            spec.next_run_at = _rules.next_period_at(spec, spec.last_enqueue_time)
        elif spec.run_attempt_count == 0:
            spec.next_run_at = _rules.first_run_at(spec, spec.last_enqueue_time)
    txn.put_code(spec.code_key, payload)
    txn.move_code_reference(old_code, spec.code_key)
    txn.put(spec)


def update(store: Store, new: WorkSpec, payload: bytes) -> UpdateResult:
    """``update_work``: give an unfinished work a new spec (same id); returns NOT_APPLIED
    (finished), APPLIED_FOR_NEXT_RUN (running: the attempt in flight keeps its spec) or
    APPLIED_IMMEDIATELY."""
    with store.transaction() as txn:
        spec = txn.get(new.id)
        if spec is None:
            raise InvalidRequestError(
                f"update_work: no work with id {new.id} in this store; enqueue the request "
                "instead")
        if spec.is_periodic != new.is_periodic:
            kinds = ("one-time", "periodic")
            raise InvalidRequestError(
                f"update_work: work {new.id} is {kinds[spec.is_periodic]} work and cannot "
                f"become {kinds[new.is_periodic]} work; cancel it and enqueue a new request")
        if spec.is_finished:
            return UpdateResult.NOT_APPLIED
        if spec.run_after != new.run_after:
            # Like its prerequisites, how it waits for them is fixed when it is enqueued.
            raise InvalidRequestError(
                f"update_work: work {new.id} runs after its prerequisites with run_after="
                f"{spec.run_after}, and an update cannot change that; build the request with "
                f"run_after={spec.run_after!r}, or cancel the work and enqueue a new one")
        running = spec.state is WorkState.RUNNING
        _apply_update(txn, new.id, new, payload)
        spec = txn.get(new.id)
        assert spec is not None
        if spec.state is WorkState.ENQUEUED and spec.run_attempt_count == 0 \
                and spec.period_count == 0:
            # Not run yet: the new initial delay (and flex) counts from when it was enqueued.
            spec.next_run_at = _rules.first_run_at(spec, spec.last_enqueue_time)
            txn.put(spec)
    return UpdateResult.APPLIED_FOR_NEXT_RUN if running else UpdateResult.APPLIED_IMMEDIATELY


def cancel(store: Store, ids: Iterable[str], now: float) -> list[str]:
    """Cancel works and their dependents; returns the ids that were RUNNING."""
    with store.transaction() as txn:
        return _rules.cancel(txn, list(ids), now)


def cancel_unique(store: Store, name: str, now: float) -> list[str]:
    with store.transaction() as txn:
        return _rules.cancel(txn, txn.unique_ids(name), now, from_finished=False)


def cancel_tag(store: Store, tag: str, now: float) -> list[str]:
    with store.transaction() as txn:
        return _rules.cancel(txn, txn.tag_ids(tag), now, from_finished=False)


def cancel_all(store: Store, now: float) -> list[str]:
    with store.transaction() as txn:
        ids: list[str] = []
        for state in (WorkState.ENQUEUED, WorkState.BLOCKED, WorkState.RUNNING):
            ids.extend(txn.state_index(state))
        return _rules.cancel(txn, ids, now)


PRUNE_CHUNK = 1000
"""Expired works read and removed per transaction: the store is never write-locked for
long, however many expire at once."""


def prune(store: Store, now: float, expired_only: bool = False) -> list[str]:
    """Remove finished work with no unfinished dependent (past its retention when
    ``expired_only``); returns the removed ids. Their logs go too.

    With ``expired_only`` (the scheduler's periodic prune) only the expired works are read,
    from the store's expiry index, and removed ``PRUNE_CHUNK`` per transaction; otherwise
    (``prune_work``) every finished work is considered, in one transaction."""
    if expired_only:
        return _prune_expired(store, now)
    with store.transaction() as txn:
        candidates = [wid for state in FINISHED_STATES for wid in txn.state_index(state)]
        pruned = [s for s in txn.get_many(candidates) if _rules.is_prunable(s, txn, None)]
        _remove(txn, pruned)
    _remove_logs(store, pruned)
    return [s.id for s in pruned]


def _prune_expired(store: Store, now: float) -> list[str]:
    removed: list[str] = []
    after = ""
    while True:
        with store.transaction() as txn:
            batch = txn.expired(now, after, PRUNE_CHUNK)
            specs = {s.id: s for s in txn.get_many(wid for _, wid in batch)}
            pruned = [s for s in specs.values() if _rules.is_prunable(s, txn, now)]
            _remove(txn, pruned)
            for key, wid in batch:
                if wid not in specs and wid not in txn.unreadable:
                    txn.delete_value(key)  # the row of a record that is gone
        _remove_logs(store, pruned)
        removed.extend(s.id for s in pruned)
        if len(batch) < PRUNE_CHUNK:
            return removed
        after = batch[-1][0]  # (what stays, with an unfinished dependent, is passed over)


def _remove(txn: Transaction, pruned: list[WorkSpec]) -> None:
    gone = {s.id for s in pruned}
    for spec in pruned:
        for pid in spec.prerequisites:
            parent = txn.get(pid)
            if parent is not None and pid not in gone:
                parent.dependents = tuple(d for d in parent.dependents if d != spec.id)
                txn.put(parent)
        txn.delete(spec.id)
        if has_triggers(spec):
            txn.delete_value(CONTENT_LISTING_KEY.format(spec.id))


def _remove_logs(store: Store, pruned: list[WorkSpec]) -> None:
    for spec in pruned:
        try:
            os.unlink(store.log_path(spec.id))
        except FileNotFoundError:
            pass


def prune_unreadable(store: Store, now: float) -> list[str]:
    """Remove every work whose record cannot be read (``Unreadable``), with its index entries
    and log; the work that waited for one of them can never run, so it is cancelled (one
    with ``RunAfter.ALL_FINISHED`` runs without it). Returns the removed ids. (A full scan
    of the records, in one transaction.)"""
    with store.transaction() as txn:
        records = txn.all_records()
        gone = {r.id for r in records if isinstance(r, Unreadable)}
        for wid in gone:
            txn.forget_unreadable(wid)
        waiting, joins = [], []
        for spec in records:
            if not isinstance(spec, WorkSpec):
                continue
            if gone.intersection(spec.dependents):
                spec = txn.get(spec.id) or spec
                spec.dependents = tuple(d for d in spec.dependents if d not in gone)
                txn.put(spec)
            if not spec.is_finished and gone.intersection(spec.prerequisites):
                # A work that runs after its prerequisites finished, whatever they ended
                # as, may run without one that is gone; any other never can.
                (joins if _rules.runs_after_all_finished(spec) else waiting).append(spec.id)
        _rules.cancel(txn, waiting, now)
        _rules.unblock(txn, joins, now)
    for wid in gone:
        store.unreadable.pop(wid, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(store.log_path(wid))
    return sorted(gone)
