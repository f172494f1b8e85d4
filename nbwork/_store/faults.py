"""The one place where the database's own errors become nbwork's ``StoreError``.

SQLite (``sqlite3.Error``), diskcache (``Timeout``), the OS (``OSError``) and a value that
no longer decodes (``Undecodable``) each say what went wrong in their words; the user
needs nbwork's: what happened to *the store*, and what to do. Every entry point of the
store goes through ``guard`` (a ``with`` block) or ``reads`` / ``writes`` (a method), so
no bare ``sqlite3.OperationalError`` reaches a notebook, for a read as for a write.

A work record or an index that cannot be decoded is no fault of the store: it is reported
as ``Unreadable`` or rebuilt (see ``codec``); ``Undecodable`` is for the store's other
values (its settings, the lease, ...), which have no such repair.
"""

from __future__ import annotations

import errno
import functools
import os
import sqlite3
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import diskcache

from .. import _layout
from ..errors import StoreError

SQLITE_TIMEOUT = 60.0
"""Seconds a connection waits for another process's write lock before giving up."""


class Undecodable(Exception):
    """A value of the store that cannot be decoded (its bytes are damaged)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"the value {key!r} cannot be decoded: {reason}")
        self.key = key
        self.reason = reason


LOW_LEVEL = (sqlite3.Error, diskcache.Timeout, OSError)
"""Errors of the store itself (locked, full, damaged): never taken for one bad record."""
FAULTS = (*LOW_LEVEL, Undecodable)
"""What ``guard`` translates."""

DAMAGE_SIGNS = ("not a database", "malformed", "corrupt")
"""What SQLite says of a damaged database file."""
_ACCESS_SIGNS = ("unable to open database", "readonly database", "permission denied")


def is_damage(exc: BaseException) -> bool:
    """Does ``exc`` say that the database file is damaged (not busy, full or unreachable)?"""
    return isinstance(exc, sqlite3.DatabaseError) and any(
        sign in str(exc).lower() for sign in DAMAGE_SIGNS)


def translate(exc: BaseException, path: str, doing: str = "written") -> StoreError:
    """The ``StoreError`` that says what ``exc`` (met while the store at ``path`` was being
    ``doing``: "opened", "read" or "written") means for the store, and what to do.
    ``transient`` when trying again later may succeed."""
    code = getattr(exc, "errno", None)
    text = str(exc).lower()
    database = os.path.join(path, _layout.DB_DIR)
    if isinstance(exc, Undecodable) or is_damage(exc):
        return StoreError(
            f"the database of the store {path!r} is damaged ({exc}); nbwork will not run work "
            f"from it half-broken. Restore {_layout.DB_DIR}/{_layout.DB_FILE} from a backup, "
            "or move the store away and start a new one")
    if isinstance(exc, diskcache.Timeout) or "database is locked" in text:
        error = StoreError(
            f"the store {path!r} stayed locked by another process for {SQLITE_TIMEOUT:g} s; "
            "try again (is a process stuck inside a transaction?)")
    elif code in (errno.ENOSPC, errno.EDQUOT) or "full" in text:
        error = StoreError(
            f"the disk holding the store {path!r} is full; nothing was written. Free some "
            "space (or prune old work: nbwork prune) and try again")
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS) or any(
            sign in text for sign in _ACCESS_SIGNS):
        return StoreError(
            f"the database of the store {path!r} could not be {doing} ({exc}); check that "
            f"{database} and its files exist and that you can read and write them "
            f"(ls -la {database}), and that the disk is mounted writable")
    else:
        return StoreError(f"the store {path!r} could not be {doing}: {exc}")
    error.transient = True
    return error


class guard:
    """``with guard(path, doing):`` turns every store fault raised inside into the
    ``StoreError`` of ``translate`` (nbwork's own errors pass through)."""

    __slots__ = ("path", "doing")

    def __init__(self, path: str, doing: str = "written") -> None:
        self.path = path
        self.doing = doing

    def __enter__(self) -> guard:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        if exc is not None and isinstance(exc, FAULTS):
            raise translate(exc, self.path, self.doing) from exc
        return False


Method = TypeVar("Method", bound=Callable[..., Any])


def _guarded(doing: str) -> Callable[[Method], Method]:
    def decorate(method: Method) -> Method:
        @functools.wraps(method)
        def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
            # (A try, not a ``with guard``: some of these are called thousands of times.)
            try:
                return method(self, *args, **kwargs)
            except FAULTS as exc:
                raise translate(exc, self.path, doing) from exc

        guarded.translates_faults = doing  # type: ignore[attr-defined]  # (for a test)
        return guarded  # type: ignore[return-value]

    return decorate


reads = _guarded("read")
"""A method of the store (it has ``self.path``) that reads: its faults say so."""
writes = _guarded("written")
"""A method of the store that writes: its faults say so."""
