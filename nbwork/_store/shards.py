"""The memo of a sharded state index, refreshed shard by shard.

A state index is 16 shards (``codec.shard_keys``). Any commit that moves a work moves the
store's ``counter:s``, and the memo of every state index used to be dropped whole with it:
an idle scheduler re-read all 16 shards of ENQUEUED and RUNNING after each client enqueue
(half of its store calls per work, issue 15). Now a stale memo reads the raw bytes of the
16 shards and ``counter:s`` in one statement (one snapshot: the counter and the shards
agree), and unpickles only the shards whose bytes changed (their length and hash).

The memo's own commits (``apply``) change its shard dicts in place of a re-read; a shard
changed that way has no digest (its bytes were written by diskcache, not read), so it is
read again at the next refresh.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import diskcache

from ..info import WorkState
from .codec import shard_keys, state_key
from .faults import LOW_LEVEL

_PICKLED = diskcache.core.MODE_PICKLE
COUNTER = "counter:s"
Shard = tuple[tuple[int, int] | None, dict[str, float]]
"""(digest of the stored bytes, or None when unknown; the shard's ``{id: sort key}``)."""
_ABSENT: Shard = ((0, 0), {})


@dataclass
class StateMemo:
    """The index of one state as of ``counter`` (``counter:s``; -1: to be checked), and the
    shards it is the union of."""

    counter: int
    index: dict[str, float]
    shards: dict[str, Shard] = field(default_factory=dict)


def refresh(cache: diskcache.Cache, state: WorkState, memo: StateMemo | None,
            read_one: Callable[[str], dict[str, float]]) -> StateMemo:
    """The memo of ``state`` as the store holds it now: one statement, and an unpickle per
    shard that changed since ``memo``. ``read_one(key)`` reads a shard diskcache's way
    (a value stored otherwise, or one that does not decode: it rebuilds it)."""
    keys = shard_keys(state)
    rows = cache._con.execute(
        "SELECT key, mode, filename, value FROM Cache WHERE raw = 1 AND key IN "
        f"({','.join('?' * (len(keys) + 1))})", [COUNTER, *keys]).fetchall()
    found = {key: (mode, filename, value) for key, mode, filename, value in rows}
    counter_row = found.pop(COUNTER, None)
    counter = counter_row[2] if counter_row is not None else 0
    old = memo.shards if memo is not None else {}
    shards: dict[str, Shard] = {}
    changed: list[str] = []
    for key in keys:
        shard = _shard(found.get(key), old.get(key), key, read_one)
        shards[key] = shard
        if shard is not old.get(key):
            changed.append(key)
    if memo is not None and not changed:
        return StateMemo(counter, memo.index, shards)
    if memo is None or len(changed) == len(keys):
        index: dict[str, float] = {}
        for _, values in shards.values():
            index.update(values)
    else:
        index = dict(memo.index)  # callers may hold the old one: never mutated
        for key in changed:
            for id in old[key][1] if key in old else ():
                index.pop(id, None)
            index.update(shards[key][1])
    return StateMemo(counter, index, shards)


def _shard(row: tuple[int, str | None, Any] | None, held: Shard | None, key: str,
           read_one: Callable[[str], dict[str, float]]) -> Shard:
    if row is None:  # no such shard (yet)
        return held if held is not None and held[0] == _ABSENT[0] else _ABSENT
    mode, filename, value = row
    if mode != _PICKLED or filename is not None:
        return None, read_one(key)  # diskcache's own way; no digest: read again next time
    digest = (len(value), hash(value))
    if held is not None and held[0] == digest:
        return held
    try:
        values = pickle.loads(value)
    except LOW_LEVEL:
        raise
    except Exception:
        values = None
    if not isinstance(values, dict):
        return None, read_one(key)  # rebuilt (and written back) there
    return digest, values


def apply(memo: StateMemo, state: WorkState, after: int,
          moves: list[tuple[WorkState | None, WorkState | None, str, float]]) -> StateMemo:
    """The memo after a commit of this process that set ``counter:s`` to ``after``: exact
    if the memo was as of ``after - 1`` (nobody else moved a work in between), else to be
    checked at the next read (the shards this commit changed are read again then)."""
    mine = [m for m in moves if state in (m[0], m[1])]
    if memo.counter != after - 1:
        if not mine:
            return StateMemo(-1, memo.index, memo.shards)
        shards = dict(memo.shards)
        for _, _, id, _ in mine:
            key = state_key(state, id)
            if key in shards:
                shards[key] = (None, shards[key][1])
        return StateMemo(-1, memo.index, shards)
    if not mine:
        return StateMemo(after, memo.index, memo.shards)
    index = dict(memo.index)  # callers may still hold the old one: never mutate it
    shards = dict(memo.shards)
    copied: set[str] = set()
    for before, now, id, sort_key in mine:
        key = state_key(state, id)
        if key not in copied:
            copied.add(key)
            shards[key] = (None, dict(shards.get(key, _ABSENT)[1]))
        values = shards[key][1]
        if before is state:
            index.pop(id, None)
            values.pop(id, None)
        if now is state:
            index[id] = sort_key
            values[id] = sort_key
    return StateMemo(after, index, shards)

