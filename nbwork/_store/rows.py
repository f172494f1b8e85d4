"""Finished works as one index row each, and the expiry index (store schema 2).

A state index of pickled shards (``i:s:<STATE>:<h>``) suits the few works waiting or
running, not the finished ones, which pile up: at 100,000 finished works, finishing one
unpickled and rewrote a 275 KB shard, and the expired-work prune decoded every finished
record inside one write transaction (issue 15). So each finished work has its own rows:

    i:f:<STATE>:<sort key, fixed width>:<id>   its sort key (a float, stored as such)
    i:x:<expiry time, fixed width>:<id>        its state: it may be pruned from then on

Finishing a work writes two small rows; a state is listed in sort order by one range query
on the key (``key >= prefix AND key < prefix-end``, on SQLite's index of the key), and
the expired works are the ``i:x:`` rows up to now. The times are written as fixed-width
text, so that the text order of the keys is their time order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import diskcache

from .._rules import expiry_time
from .._spec import WorkSpec
from ..info import FINISHED_STATES, WorkState
from .codec import sort_key

log = logging.getLogger("nbwork.store")

ROW_STATES = frozenset(FINISHED_STATES)
"""States whose index is one row per work (the others keep their shards)."""

EXPIRY_PREFIX = "i:x:"

_TIME_WIDTH = 20  # "0001764636000.123456": any time from 1970 to the year 300,000


def time_text(t: float) -> str:
    """``t`` as fixed-width text that sorts as the number does (a negative time, which no
    clock gives, sorts as 0)."""
    return f"{max(float(t), 0.0):0{_TIME_WIDTH}.6f}"


def row_prefix(state: WorkState) -> str:
    return f"i:f:{state.value}:"


def row_key(state: WorkState, sort: float, id: str) -> str:
    return f"{row_prefix(state)}{time_text(sort)}:{id}"


def expiry_key(expires: float, id: str) -> str:
    return f"{EXPIRY_PREFIX}{time_text(expires)}:{id}"


def _end(prefix: str) -> str:
    """The first key after every key that starts with ``prefix`` (its last character plus
    one: ':' -> ';')."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _range(cache: diskcache.Cache, start: str, end: str, limit: int = -1,
           columns: str = "key, value") -> list[Any]:
    """Rows with ``start <= key < end`` in key order: one range over SQLite's index of the
    key (``raw = 1``: keys that are strings, as every key of the store)."""
    return cache._con.execute(
        f"SELECT {columns} FROM Cache WHERE key >= ? AND key < ? AND raw = 1 "
        "ORDER BY key LIMIT ?", (start, end, limit)).fetchall()


def scan_state(cache: diskcache.Cache, state: WorkState) -> dict[str, float] | None:
    """``{id: sort key}`` of the works in ``state``, in sort order; None when a row is not
    what this module writes (the caller rebuilds the rows from the records)."""
    prefix = row_prefix(state)
    index: dict[str, float] = {}
    for key, value in _range(cache, prefix, _end(prefix)):
        if type(value) is not float or key.count(":") != 4:
            log.error("the index row %r of the store cannot be read (it holds a %s); "
                      "rebuilding the %s rows from the records", key, type(value).__name__,
                      state.value)
            return None
        index[key.rsplit(":", 1)[1]] = value
    return index


def entry(spec: WorkSpec) -> tuple[str, str | None] | None:
    """(row key, expiry key) of a finished work; None for one whose state is in shards."""
    if spec.state not in ROW_STATES:
        return None
    expires = expiry_time(spec)
    return (row_key(spec.state, sort_key(spec), spec.id),
            None if expires is None else expiry_key(expires, spec.id))


def values(spec: WorkSpec) -> list[tuple[str, float | str]]:
    """The rows of a finished work, ``(key, value)``, for the transaction's one batched
    write (a ``Cache.set`` each cost more than the rest of a work's finish); [] for a work
    whose state is in shards."""
    keys = entry(spec)
    if keys is None:
        return []
    found: list[tuple[str, float | str]] = [(keys[0], float(sort_key(spec)))]
    if keys[1] is not None:
        found.append((keys[1], spec.state.value))
    return found


def insert_many(cache: diskcache.Cache, items: Iterator[tuple[str, Any]] | list) -> None:
    """New rows ``(key, float or short str)`` in one statement, as diskcache's own insert
    of a raw value writes them, without its round trips per key: the upgrade of a store of
    100,000 finished works writes 200,000 rows (inside a transaction of the caller's)."""
    now = time.time()
    cache._con.executemany(
        "INSERT OR REPLACE INTO Cache (key, raw, store_time, expire_time, access_time, "
        "access_count, tag, size, mode, filename, value) "
        "VALUES (?, 1, ?, NULL, ?, 0, NULL, 0, ?, NULL, ?)",
        ((key, now, now, diskcache.core.MODE_RAW, value) for key, value in items))


def expired(cache: diskcache.Cache, now: float, after: str = "",
            limit: int = 1000) -> list[tuple[str, str]]:
    """``(expiry key, id)`` of up to ``limit`` works whose retention ended by ``now``, in
    expiry order, from the first key after ``after``."""
    start = after + "\0" if after else EXPIRY_PREFIX
    end = EXPIRY_PREFIX + time_text(now) + ";"  # (';' sorts right after ':')
    return [(key, key.rsplit(":", 1)[1])
            for (key,) in _range(cache, start, end, limit, columns="key")]


def forget(cache: diskcache.Cache, id: str) -> list[WorkState]:
    """Remove every row of ``id`` (whose record cannot be read, so its keys are unknown: a
    scan of the rows, for rare repairs only); returns the states it was listed in."""
    found = []
    for prefix in ("i:f:", EXPIRY_PREFIX):
        for (key,) in _range(cache, prefix, _end(prefix), columns="key"):
            if key.endswith(":" + id):
                cache.delete(key)
                if prefix == "i:f:":
                    found.append(WorkState(key.split(":")[2]))
    return found


def rebuild(cache: diskcache.Cache, state: WorkState, specs: Iterable[WorkSpec]) -> None:
    """Replace the rows of ``state`` by rows made from ``specs``, the readable records
    (inside a transaction of the caller's): the repair of a damaged row."""
    prefix = row_prefix(state)
    cache._con.execute("DELETE FROM Cache WHERE key >= ? AND key < ? AND raw = 1",
                       (prefix, _end(prefix)))
    for spec in specs:
        if spec.state is state:
            cache.set(row_key(state, sort_key(spec), spec.id), float(sort_key(spec)))
