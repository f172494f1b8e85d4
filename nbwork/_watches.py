"""Hot-folder watches in the store: their records and what each has already seen.

Keys (beside the work records, see ``_store``):

    watches                 {name: record} of every folder watch: folder, pattern, settle,
                            the serialized ``request_for_file`` and a watch id
    wcode:<name>            that serialized ``request_for_file`` (cloudpickle)
    ws:<watch id>:<h>       {relative path: [size, mtime_ns]} of the files of a watch whose
                            work was enqueued, sharded by a hash of the path (256 shards): a
                            batch of new files rewrites only the shards it touches

A file's work is enqueued in the same transaction that adds it to the seen-state, so a
crash leaves both or neither: no file is lost and none is enqueued twice for the same
content (its size and modification time).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._store import Store, Transaction

WATCHES_KEY = "watches"
WATCH_TAG = "watch:{}"
"""Every work a watch enqueues carries this tag (with the watch's name)."""

Identity = tuple[int, int]
"""What a file's content is taken to be: (size, mtime_ns)."""


@dataclass(frozen=True)
class FolderWatch:
    """A durable hot-folder watch, as ``WorkManager.watches()`` lists it."""

    name: str
    folder: str
    pattern: str
    settle: float
    request_for_file: str
    """The name of the worker class or function that builds each file's work."""
    tag: str
    """The tag of every work this watch enqueued (``wm.get_work_infos_by_tag(w.tag)``)."""


def watch_record(name: str, folder: str, pattern: str, settle: float, maker: str,
                 maker_is_worker: bool) -> dict[str, Any]:
    return {"name": name, "folder": folder, "pattern": pattern, "settle": settle,
            "maker": maker, "maker_is_worker": maker_is_worker, "id": uuid.uuid4().hex}


def as_watch(record: Mapping[str, Any]) -> FolderWatch:
    return FolderWatch(name=record["name"], folder=record["folder"], pattern=record["pattern"],
                       settle=record["settle"], request_for_file=record["maker"],
                       tag=WATCH_TAG.format(record["name"]))


def _shard(watch_id: str, rel: str) -> str:
    return f"ws:{watch_id}:{hashlib.blake2b(rel.encode(), digest_size=1).hexdigest()}"


def _all_shards(watch_id: str) -> list[str]:
    return [f"ws:{watch_id}:{i:02x}" for i in range(256)]


def matches(name: str, pattern: str) -> bool:
    """Whether a file name counts for a watch: the pattern (fnmatch) matches it, and it is
    not a hidden file (a sync tool's partial download) unless the pattern asks for those."""
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatch.fnmatch(name, pattern)


def files_under(folder: str, pattern: str) -> dict[str, Identity]:
    """``{path: identity}`` of the regular files below ``folder`` (at any depth) whose name
    matches ``pattern``. Symbolic links are not followed (a link loop cannot trap it)."""
    out: dict[str, Identity] = {}
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                    continue
                if not entry.is_file(follow_symlinks=False) or not matches(entry.name, pattern):
                    continue
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            out[entry.path] = identity(info)
    return out


def identity(info: os.stat_result) -> Identity:
    return (info.st_size, info.st_mtime_ns)


def file_identity(path: str) -> Identity | None:
    """The identity of a regular file, None if it is gone (or not a regular file)."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return identity(info) if stat.S_ISREG(info.st_mode) else None


def watch_records(store: Store) -> dict[str, dict[str, Any]]:
    return dict(store.get_value(WATCHES_KEY) or {})


def put_watch(store: Store, record: dict[str, Any], payload: bytes,
              already_seen: Mapping[str, Identity] | None) -> None:
    """Add (or replace) a watch; ``already_seen`` files are marked seen (not taken)."""
    name = record["name"]
    with store.transaction() as txn:
        watches = dict(txn.get_value(WATCHES_KEY) or {})
        old = watches.get(name)
        if old is not None and old["folder"] == record["folder"]:
            record["id"] = old["id"]  # same folder: what it has seen still holds
        elif old is not None:
            _forget_seen(txn, old["id"])
        watches[name] = record
        txn.set_value(WATCHES_KEY, watches)
        txn.set_value(f"wcode:{name}", payload)
        if already_seen:
            mark_seen(txn, record, already_seen)


def remove_watch(store: Store, name: str) -> bool:
    with store.transaction() as txn:
        watches = dict(txn.get_value(WATCHES_KEY) or {})
        old = watches.pop(name, None)
        if old is None:
            return False
        txn.set_value(WATCHES_KEY, watches)
        txn.delete_value(f"wcode:{name}")
        _forget_seen(txn, old["id"])
    return True


def _forget_seen(txn: Transaction, watch_id: str) -> None:
    for key in _all_shards(watch_id):
        txn.delete_value(key)


def load_seen(store: Store, record: Mapping[str, Any]) -> dict[str, Identity]:
    """Every file a watch has enqueued work for: ``{relative path: identity}``."""
    seen: dict[str, Identity] = {}
    for key in _all_shards(record["id"]):
        for rel, ident in (store.get_value(key) or {}).items():
            seen[rel] = tuple(ident)  # type: ignore[assignment]
    return seen


def unseen(txn: Transaction, record: Mapping[str, Any],
           files: Mapping[str, Identity]) -> dict[str, Identity]:
    """The files (relative paths) whose identity the store has not seen, in ``txn``."""
    out = {}
    shards: dict[str, dict] = {}
    for rel, ident in files.items():
        key = _shard(record["id"], rel)
        if key not in shards:
            shards[key] = txn.get_value(key) or {}
        if tuple(shards[key].get(rel, ())) != tuple(ident):
            out[rel] = ident
    return out


def mark_seen(txn: Transaction, record: Mapping[str, Any],
              files: Mapping[str, Identity]) -> None:
    by_shard: dict[str, dict[str, Identity]] = {}
    for rel, ident in files.items():
        by_shard.setdefault(_shard(record["id"], rel), {})[rel] = ident
    for key, entries in by_shard.items():
        shard = dict(txn.get_value(key) or {})
        shard.update({rel: list(ident) for rel, ident in entries.items()})
        txn.set_value(key, shard)
