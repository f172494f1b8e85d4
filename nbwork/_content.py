"""Folders as content: ``ContentTrigger`` and the rules of content-triggered work.

As WorkManager's content URI triggers (``Constraints.Builder.addContentUriTrigger``): a
one-time work with content triggers stays ENQUEUED until something under one of its paths
is created, changed or removed after it was enqueued; then it waits until nothing has
changed for ``trigger_content_update_delay`` seconds (never longer than
``trigger_content_max_delay`` after the first change) and runs, and its worker reads the
changed paths in ``triggered_content_paths``.

What "changed" means is a difference between two listings (``listing``): a path is new,
gone, or its size, modification time or inode differ. A listing of a directory holds its
entries (every descendant with ``descendants=True``); symbolic links are listed as links,
never followed into, so a link loop cannot make a listing endless.

The functions on records here take the ``WorkSpec`` by duck typing (``constraints``,
``content``, ``next_run_at``): this module sits below the record's own module.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequestError

CONTENT_WAIT = 253_402_214_400.0
"""The next run time of a work that waits for its content to change (9999-12-31): never
due, and still a time the state index can sort by."""

Signature = tuple[int, int, int]
"""(size, mtime_ns, inode) of a file; (-1, 0, inode) of a directory, whose own time changes
with its entries (those changes show as entries of their own)."""


@dataclass(frozen=True)
class ContentTrigger:
    """Run a work when something under ``path`` changes (WorkManager's content URI trigger).

    ``path``: a file or a folder that exists (kept absolute). ``descendants``: for a folder,
    whether changes anywhere below it count (True) or only to its direct entries (False).
    """

    path: str
    descendants: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, os.PathLike)):
            raise InvalidRequestError(
                f"ContentTrigger path must be a path (str or os.PathLike), not "
                f"{type(self.path).__name__}")
        if not isinstance(self.descendants, bool):
            raise InvalidRequestError(
                f"ContentTrigger descendants must be True or False, not {self.descendants!r}")
        path = os.path.abspath(os.path.expanduser(os.fspath(self.path)))
        try:
            os.stat(path)
        except OSError as exc:
            raise InvalidRequestError(
                f"ContentTrigger path {path!r} {_why_unusable(exc)}; a trigger watches "
                "something that exists: create the folder (or file) first") from None
        object.__setattr__(self, "path", path)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "descendants": self.descendants}

    @classmethod
    def _from_store(cls, values: Mapping[str, Any]) -> "ContentTrigger":
        """A stored trigger, without the existence check (its path may be gone by now)."""
        trigger = object.__new__(cls)
        object.__setattr__(trigger, "path", values["path"])
        object.__setattr__(trigger, "descendants", bool(values.get("descendants")))
        return trigger


def _why_unusable(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "is a symbolic link loop (too many levels of symbolic links)"
    if exc.errno == errno.ENOENT:
        return "does not exist"
    return f"cannot be read ({exc.strerror})"


def check_content_constraints(triggers: Iterable[object], update_delay: float,
                              max_delay: float | None) -> tuple[ContentTrigger, ...]:
    """The triggers as a tuple, refusing anything that is not a ``ContentTrigger``."""
    if isinstance(triggers, (str, ContentTrigger, os.PathLike)):
        triggers = [triggers]
    out = []
    for trigger in triggers:
        if isinstance(trigger, (str, os.PathLike)):
            trigger = ContentTrigger(trigger)
        if not isinstance(trigger, ContentTrigger):
            raise InvalidRequestError(
                f"content_triggers takes ContentTrigger(path, descendants=...) items, not "
                f"{trigger!r}")
        out.append(trigger)
    if not out and (update_delay or max_delay is not None):
        raise InvalidRequestError(
            "trigger_content_update_delay and trigger_content_max_delay need content_triggers; "
            "add Constraints(content_triggers=[ContentTrigger(path)], ...)")
    return tuple(out)


# --- listings -----------------------------------------------------------------------------


def _signature(info: os.stat_result) -> Signature:
    if stat.S_ISDIR(info.st_mode):
        return (-1, 0, info.st_ino)
    return (info.st_size, info.st_mtime_ns, info.st_ino)


def listing(path: str, descendants: bool) -> dict[str, Signature]:
    """``{path: signature}`` of ``path`` itself and, for a folder, its entries (all of its
    descendants with ``descendants``). Symbolic links are not followed; what vanishes
    while it is read is left out (it is gone)."""
    out: dict[str, Signature] = {}
    try:
        out[path] = _signature(os.lstat(path))
    except OSError:
        return out
    if out[path][0] != -1:
        return out
    pending = [path]
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            out[entry.path] = _signature(info)
            if descendants and stat.S_ISDIR(info.st_mode):
                pending.append(entry.path)
    return out


def changed_paths(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The paths created, removed or changed between two listings, sorted."""
    changed = {p for p, sig in after.items() if before.get(p) != tuple(sig)}
    changed.update(p for p in before if p not in after)
    return sorted(changed)


def triggers_listing(triggers: Iterable[ContentTrigger]) -> dict[str, Signature]:
    out: dict[str, Signature] = {}
    for trigger in triggers:
        out.update(listing(trigger.path, trigger.descendants))
    return out


def under(path: str, trigger: ContentTrigger) -> bool:
    """Whether a change of ``path`` concerns ``trigger``."""
    if path == trigger.path:
        return True
    parent = os.path.dirname(path)
    if trigger.descendants:
        return path.startswith(trigger.path.rstrip(os.sep) + os.sep)
    return parent == trigger.path


# --- rules on records ---------------------------------------------------------------------


def triggers_of(constraints: Mapping[str, Any]) -> tuple[ContentTrigger, ...]:
    return tuple(ContentTrigger._from_store(t) for t in constraints.get("content_triggers", ()))


def has_triggers(spec: Any) -> bool:
    return bool(spec.constraints.get("content_triggers"))


def waits_for_content(spec: Any) -> bool:
    """A work with content triggers whose content has not changed yet (and whose
    constraints the TestDriver did not declare met)."""
    return (has_triggers(spec) and not spec.content.get("paths")
            and not spec.constraints_met)


def content_due(first: float, last: float, update_delay: float,
                max_delay: float | None) -> float:
    """When a triggered work runs: ``update_delay`` after the last change, but no later
    than ``max_delay`` after the first one."""
    due = last + update_delay
    if max_delay is not None:
        due = min(due, first + max_delay)
    return due


def record_change(spec: Any, paths: Iterable[str], now: float) -> bool:
    """Note that ``paths`` changed at ``now`` for a work that has not started since it
    was triggered, and move its run time; False if there was nothing new to note."""
    paths = sorted(set(paths))
    if not paths or spec.run_attempt_count:
        return False
    content = dict(spec.content)
    content["paths"] = sorted(set(content.get("paths", ())) | set(paths))
    content["first"] = content.get("first") or now
    content["last"] = now
    spec.content = content
    constraints = spec.constraints
    due = content_due(content["first"], now,
                      float(constraints.get("trigger_content_update_delay") or 0.0),
                      constraints.get("trigger_content_max_delay"))
    spec.next_run_at = max(due, spec.enqueue_time + (
        0.0 if spec.initial_delay_met else spec.initial_delay))
    return True
