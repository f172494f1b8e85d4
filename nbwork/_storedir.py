"""Opening a store directory so that nobody else can redirect what nbwork reads or runs.

The store holds code that the scheduler unpickles and runs as its owner, so where it is
matters as much as what it holds:

- The path is resolved once (symbolic links followed *then*), and walked from ``/`` one
  component at a time, each opened ``O_DIRECTORY | O_NOFOLLOW`` relative to the descriptor of
  the one before and checked on that descriptor: every ancestor must belong to this user or
  root and be writable by nobody else unless sticky (``/tmp``). Nothing is checked by name
  and then opened by name, so a rename or a symbolic link planted in between (the race of
  a check-then-open) either fails the walk or is not seen.
- The store directory is kept open (``StoreDir.fd``) and every later file operation goes
  through it: ``os.open(name, ..., dir_fd=fd)``, or the path ``/proc/self/fd/<fd>/name``
  (``StoreDir.access``) for code that takes a path (diskcache, SQLite), which the kernel
  resolves through the open descriptor, not through the names above it. (Two things still
  go by a plain path, safe because of the checks above: SQLite resolves that link to a path
  of its own when it opens a connection, and worker processes write their logs by path.)
- The store directory, and nbwork's own files in it, must belong to this user and be
  writable by nobody else; another user's file at the top of the store is refused too.
  Everything nbwork creates is ``0700`` / ``0600`` whatever the umask.

The names of what is in a store are ``_layout``'s. A store is marked by ``nbwork.store``
(outside SQLite), written once its database exists: a store whose database has since gone
missing or been truncated to 0 bytes is refused instead of silently becoming a new empty
store.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import stat
import time
import weakref

from ._layout import DB_DIR, DB_FILE, MARKER, OWN_ENTRIES, database_path, in_store
from .errors import NotAStoreError, StoreError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_PROC_FD = "/proc/self/fd"


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


def _own_private_group(gid: int) -> bool:
    """Is ``gid`` the user's own group (a user private group: same name, no other members)?"""
    try:
        user = pwd.getpwuid(_uid()).pw_name
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    return group.gr_name == user and set(group.gr_mem) <= {user}


def _check_ancestor(info: os.stat_result, where: str, store: str) -> None:
    if info.st_uid not in (_uid(), 0):
        raise StoreError(
            f"the folder {where!r} above the store {store!r} belongs to another user (uid "
            f"{info.st_uid}), who could swap the store for one of their own; put the store "
            "in a folder that only you (or root) own")
    sticky = bool(info.st_mode & stat.S_ISVTX)
    others = info.st_mode & stat.S_IWOTH
    group = info.st_mode & stat.S_IWGRP and not _own_private_group(info.st_gid)
    if (others or group) and not sticky:
        raise StoreError(
            f"the folder {where!r} above the store {store!r} can be written by other users "
            f"(mode {stat.S_IMODE(info.st_mode):o}), who could swap the store for one of their "
            f"own; use a store in a folder only you can write, or chmod go-w {where}")


def sharing_problem(path: str, info: os.stat_result, what: str, why: str, fix: str,
                    owner_fix: str = "use one of your own") -> str | None:
    """Why a directory others control is refused (another owner, or writable by group or
    others), or None. The store and hot folders share this rule: whoever can write there
    could make nbwork run code, or feed work, as this user."""
    if info.st_uid != _uid():
        return f"{what} {path!r} belongs to another user (uid {info.st_uid}); {owner_fix}"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"{what} {path!r} can be written by other users (mode "
                f"{stat.S_IMODE(info.st_mode):o}); {why}: {fix}")
    return None


def _check_store(info: os.stat_result, store: str) -> None:
    problem = sharing_problem(
        store, info, "the store directory", "it holds code that nbwork runs, so make it private",
        f"chmod 700 {store}", "use a store of your own (pass a path you own, or set NBWORK_HOME)")
    if problem:
        raise StoreError(problem)


def _check_entry(info: os.stat_result, name: str, store: str, own: bool) -> None:
    """``info``: of the entry itself; for one of nbwork's own that is a link (the owner's
    choice, e.g. a log kept elsewhere), of what it points to."""
    where = os.path.join(store, name)
    if info.st_uid != _uid():
        raise StoreError(
            f"{where!r} in the store belongs to another user (uid {info.st_uid}); the store "
            "holds code that nbwork runs, so nothing in it may be someone else's: remove it "
            "(or use another store)")
    if own and not stat.S_ISLNK(info.st_mode) and info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StoreError(
            f"{where!r} in the store can be written by other users (mode "
            f"{stat.S_IMODE(info.st_mode):o}); it holds what nbwork runs, so make it "
            f"private: chmod go-w {where}")


def _entry_infos(entry: os.DirEntry, own: bool) -> list[os.stat_result]:
    infos = [entry.stat(follow_symlinks=False)]
    if own and entry.is_symlink():
        with contextlib.suppress(FileNotFoundError):  # a dangling link: nothing to check yet
            infos.append(entry.stat(follow_symlinks=True))
    return infos


def _is_link(name: str, parent: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_dir(name: str, parent: int, create: bool) -> tuple[int, bool]:
    """Open directory ``name`` under ``parent`` without following a link; (fd, created)."""
    created = False
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent), created
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, 0o700, dir_fd=parent)
        created = True
    except FileExistsError:
        pass  # made by another process meanwhile: checked like any other
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    if created:
        os.fchmod(fd, 0o700)  # whatever the umask
    return fd, created


class StoreDir:
    """An open store directory: ``path`` (resolved, for messages and other processes),
    ``fd`` (the open directory) and ``access`` (a path that resolves through ``fd``)."""

    def __init__(self, path: str, create: bool = True) -> None:
        self.path = os.path.realpath(os.path.abspath(os.path.expanduser(path)))
        self.fd = self._walk(create)
        self.access = f"{_PROC_FD}/{self.fd}" if os.path.isdir(_PROC_FD) else self.path
        # Closed with the object too: a WorkManager is rarely closed explicitly.
        self._closer = weakref.finalize(self, os.close, self.fd)

    def _walk(self, create: bool) -> int:
        parts = [p for p in self.path.split(os.sep) if p]
        fd = os.open(os.sep, _DIR_FLAGS)
        where = os.sep
        try:
            _check_ancestor(os.fstat(fd), where, self.path)
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                where = os.path.join(where, part)
                try:
                    child, _ = _open_dir(part, fd, create)
                except FileNotFoundError:
                    missing = "it" if last else repr(where)
                    raise NotAStoreError(
                        f"{self.path!r} is not an nbwork store: {missing} does not exist. "
                        "Nothing was created; commands that enqueue work create a store"
                    ) from None
                except OSError as exc:
                    if _is_link(part, fd):  # a link appeared after the path was resolved
                        raise StoreError(
                            f"the store path {self.path!r} changed while nbwork opened it: "
                            f"{where!r} is now a symbolic link. Someone may be trying to swap "
                            "the store; check that folder") from None
                    if isinstance(exc, NotADirectoryError):
                        if last:
                            raise StoreError(f"the store path {self.path!r} exists and is not "
                                             "a directory") from None
                        raise StoreError(f"the store path {self.path!r} cannot be used: "
                                         f"{where!r} is not a directory") from None
                    raise StoreError(f"cannot open the store directory {self.path!r}: "
                                     f"{where}: {exc.strerror}") from exc
                os.close(fd)
                fd = child
                info = os.fstat(fd)
                if not last:
                    _check_ancestor(info, where, self.path)
                elif not stat.S_ISDIR(info.st_mode):  # (O_DIRECTORY makes this unlikely)
                    raise StoreError(f"the store path {self.path!r} exists and is not a "
                                     "directory")
            return fd
        except BaseException:
            os.close(fd)
            raise

    def check_private(self) -> None:
        """Refuse the store directory if it is not this user's, or others can write it."""
        _check_store(os.fstat(self.fd), self.path)

    # --- files in the store ---------------------------------------------------------------

    def join(self, *names: str) -> str:
        """A path to ``names`` in the store that resolves through the open directory."""
        return os.path.join(self.access, *names)

    def stat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def check_contents(self) -> None:
        """Refuse the store if anything at its top or in its database folder belongs to
        another user, or if one of nbwork's files there can be written by others."""
        for entry in os.scandir(self.fd):
            own = entry.name in OWN_ENTRIES
            for info in _entry_infos(entry, own):
                _check_entry(info, entry.name, self.path, own)
        db = self.stat(DB_DIR)
        if db is not None and stat.S_ISDIR(db.st_mode):
            fd = os.open(DB_DIR, _DIR_FLAGS, dir_fd=self.fd)
            try:
                for entry in os.scandir(fd):
                    for info in _entry_infos(entry, True):
                        _check_entry(info, os.path.join(DB_DIR, entry.name), self.path, True)
            finally:
                os.close(fd)

    def tighten(self, name: str) -> None:
        """Make ``name`` private (``0600`` / ``0700``) if it is wider: a store made by an
        older nbwork, or a file SQLite created with its own default mode."""
        info = self.stat(name)
        if info is None or stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o077:
            return
        with contextlib.suppress(OSError):
            os.chmod(name, 0o700 if stat.S_ISDIR(info.st_mode) else 0o600, dir_fd=self.fd)

    def make_dir(self, name: str) -> None:
        """Create folder ``name`` in the store (``0700``) unless it exists."""
        fd, _ = _open_dir(name, self.fd, True)
        os.close(fd)

    def create_file(self, name: str) -> None:
        """Create an empty file ``name`` (``0600``) unless it exists."""
        with contextlib.suppress(FileExistsError):
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | getattr(os, "O_CLOEXEC", 0), 0o600, dir_fd=self.fd)
            os.fchmod(fd, 0o600)
            os.close(fd)

    def write_file(self, name: str, text: str) -> None:
        """Write ``name`` (``0600``) atomically: a temporary file renamed over it."""
        temp = f".{name}.{os.getpid()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                     | getattr(os, "O_CLOEXEC", 0), 0o600, dir_fd=self.fd)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def read_file(self, name: str) -> str | None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                         dir_fd=self.fd)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, errors="replace") as f:
            return f.read()

    # --- the marker -------------------------------------------------------------------------

    def has_marker(self) -> bool:
        return self.stat(MARKER) is not None

    def write_marker(self) -> None:
        self.write_file(MARKER, json.dumps({"nbwork_store": 1, "created": time.time(),
                                            "database": f"{DB_DIR}/{DB_FILE}"}) + "\n")

    def database_size(self) -> int | None:
        """Bytes in the database (its main file, plus its write-ahead log), None if absent."""
        main = self.stat(os.path.join(DB_DIR, DB_FILE))
        if main is None:
            return None
        wal = self.stat(os.path.join(DB_DIR, DB_FILE + "-wal"))
        return main.st_size + (wal.st_size if wal is not None else 0)

    def close(self) -> None:
        self._closer()  # (once: later calls do nothing)


def is_store(path: str) -> bool:
    """Whether ``path`` holds a store, by name and without opening anything: its marker, or
    (a store made before the marker) a database that is not empty, as ``Store`` decides."""
    if os.path.lexists(in_store(path, MARKER)):
        return True
    database = database_path(path)
    try:
        size = os.stat(database).st_size
    except OSError:
        return False
    with contextlib.suppress(OSError):  # (as database_size: the write-ahead log counts)
        size += os.stat(database + "-wal").st_size
    return size > 0


def check_store_path(path: str) -> None:
    """The store's own checks of ``path`` short of opening it, for a viewer that looks at a
    store again and again: ``NotAStoreError`` unless it is a store, ``StoreError`` if another
    user owns or can write the store directory or its database folder."""
    if not is_store(path):
        raise NotAStoreError(
            f"{path!r} is not an nbwork store (it has no {DB_DIR}/{DB_FILE}); nothing was "
            "created")
    _check_store(os.stat(path), path)
    with contextlib.suppress(FileNotFoundError):  # (a store from before: the marker only)
        _check_entry(os.stat(in_store(path, DB_DIR)), DB_DIR, path, own=True)
