"""Keys of the database, and decoding what is under them.

A record or index that cannot be decoded does not stop the store: a record is reported as
``Unreadable`` (the scheduler skips it; ``prune_unreadable`` removes it), an index is rebuilt
from the records. Any other value that cannot be decoded is ``Undecodable`` (see
``faults``). Errors of the store itself (``LOW_LEVEL``: locked, full, damaged) are never
taken for one bad value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import diskcache

from .._spec import WorkSpec
from ..info import WorkState
from .faults import LOW_LEVEL, Undecodable

log = logging.getLogger("nbwork.store")

SHARDS = "0123456789abcdef"


def state_key(state: WorkState, id: str) -> str:
    """The shard of the index of ``state`` that holds ``id``."""
    return f"i:s:{state.value}:{id[0]}"


def shard_keys(state: WorkState) -> list[str]:
    return [f"i:s:{state.value}:{shard}" for shard in SHARDS]


def record_key(id: str) -> str:
    return f"w:{id}"


def sort_key(spec: WorkSpec) -> float:
    """A work's value in its state index: ENQUEUED by next run time, others by enqueue time."""
    return spec.next_run_at if spec.state is WorkState.ENQUEUED else spec.enqueue_time


@dataclass(frozen=True)
class Unreadable:
    """A work whose stored record cannot be decoded (a bad pickle, an unknown state...):
    reported as such, skipped by the scheduler, removed by ``prune_unreadable``."""

    id: str
    reason: str
    state: WorkState | None = None  # the state its index entry says, if any


def load_value(cache: diskcache.Cache, key: str, default: Any = None) -> Any:
    """The value under ``key`` (``default`` when there is none); ``Undecodable`` when its
    bytes no longer decode."""
    try:
        return cache.get(key, default)
    except LOW_LEVEL:
        raise
    except Exception as exc:
        raise Undecodable(key, f"{type(exc).__name__}: {exc}"[:300]) from exc


def read_spec(cache: diskcache.Cache, id: str,
              unreadable: dict[str, str]) -> WorkSpec | Unreadable | None:
    """The record of ``id``; an ``Unreadable`` (noted in ``unreadable``) when it cannot be
    decoded, so that one bad record never stops the scheduler or a listing."""
    missing = object()
    record = decode_spec(id, lambda: cache.get(record_key(id), missing), unreadable, missing)
    return None if record is missing else record


def decode_spec(id: str, load: Callable[[], Any], unreadable: dict[str, str],
                missing: Any = None) -> Any:
    """``WorkSpec.from_record(load())``, or an ``Unreadable`` when that fails (``missing`` is
    passed through: no record)."""
    try:
        raw = load()
        if raw is missing:
            return missing
        if not isinstance(raw, (tuple, dict)):
            raise TypeError(f"a work record is a tuple (or a dict, as older versions wrote "
                            f"it), this is a {type(raw).__name__}")
        spec = WorkSpec.from_record(raw)
        if spec.id != id:
            raise ValueError(f"the record under {id} is the record of work {spec.id}")
        return spec
    except LOW_LEVEL:
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


def read_index(cache: diskcache.Cache, key: str, default: Any) -> tuple[Any, bool]:
    """(the index under ``key``, False), or (one rebuilt from the records, True) when the
    stored one cannot be decoded or is not an index."""
    try:
        value = cache.get(key)
        if value is None:
            return default, False
        if isinstance(value, _INDEX_TYPES.get(key.split(":")[1], object)):
            return value, False
        problem = f"it holds a {type(value).__name__}"
    except LOW_LEVEL:
        raise
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
    log.error("the index %r of the store cannot be read (%s); rebuilding it from the records",
              key, problem)
    return rebuild_index(cache, key), True


def all_records(cache: diskcache.Cache,
                unreadable: dict[str, str]) -> Iterator[WorkSpec | Unreadable]:
    """Every work record, read one by one (a full scan: for rare repairs only)."""
    for key in list(cache.iterkeys()):
        if isinstance(key, str) and key.startswith("w:"):
            record = read_spec(cache, key[2:], unreadable)
            if record is not None:
                yield record


def rebuild_index(cache: diskcache.Cache, key: str) -> Any:
    _, kind, rest = key.split(":", 2)
    specs = [r for r in all_records(cache, {}) if isinstance(r, WorkSpec)]
    if kind == "s":
        state, shard = rest.rsplit(":", 1)
        return {s.id: sort_key(s) for s in specs
                if s.state.value == state and s.id.startswith(shard)}
    if kind == "t":
        return {s.id: s.enqueue_time for s in specs if rest in s.tags}
    named = sorted((s for s in specs if s.unique_name == rest), key=lambda s: s.enqueue_time)
    return [s.id for s in named]
