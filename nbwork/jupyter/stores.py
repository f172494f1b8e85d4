"""Which stores the panel may show, and one ``StoreView`` per store.

The panel shows the default store (``$NBWORK_HOME`` or the per-user one) and the stores
listed in ``c.NbworkExtension.stores``; a page may also name another path, which must be an
existing nbwork store that the server's user owns and that no one else can write (its
pickled code runs as that user). Nothing here creates a store.
"""

from __future__ import annotations

import os
import stat
import threading

from traitlets import Float, List, Unicode
from traitlets.config import Configurable

from nbwork.errors import StoreError
from nbwork.manager import default_store_path

from .view import StoreView

STORE_DATABASE = "db"
"""The database folder every nbwork store directory holds: a folder without it is not a
store (and the panel must not create one there)."""


class StoreRefused(Exception):
    """A store path the panel will not open; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NbworkExtension(Configurable):
    """Settings of the Work panel's server side (``c.NbworkExtension.…``)."""

    stores = List(Unicode(), help=(
        "More store directories the panel's store picker offers, besides the default "
        "($NBWORK_HOME or the per-user store).")).tag(config=True)
    follow_interval = Float(0.5, help=(
        "How often (seconds) the server reads the change counter of each store a page "
        "looks at, to push changes to the page.")).tag(config=True)


def check_store(path: str) -> None:
    """Refuse (``StoreRefused``) a path that is not a store this user may open."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise StoreRefused(404, f"no store at {path}: the folder does not exist") from None
    except OSError as exc:
        raise StoreRefused(400, f"cannot open the store {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise StoreRefused(400, f"{path} is not a folder, so not an nbwork store")
    database = os.path.join(path, STORE_DATABASE)
    if not os.path.isdir(database):
        raise StoreRefused(400, f"{path} is not an nbwork store (it has no {STORE_DATABASE})")
    for checked in (path, database):
        mode = os.stat(checked)
        if mode.st_uid != os.getuid():
            raise StoreRefused(403, f"{checked} belongs to another user: the panel opens only "
                                    "stores of the user running the server")
        if mode.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise StoreRefused(403, f"{checked} can be written by others: refused, as nbwork "
                                    f"runs code kept in it; fix with chmod go-w {checked}")


class StoreViews:
    """One ``StoreView`` per store path, created on first use."""

    def __init__(self, settings: NbworkExtension) -> None:
        self.settings = settings
        self._views: dict[str, StoreView] = {}
        self._awaited: set[str] = set()
        self._lock = threading.Lock()

    def default_path(self) -> str:
        return default_store_path()

    def known(self) -> list[dict[str, object]]:
        """The stores a picker offers: the default one first, then the configured ones."""
        paths = [self.default_path(), *(os.path.abspath(os.path.expanduser(p))
                                        for p in self.settings.stores)]
        return [{"path": p, "default": i == 0, "exists": os.path.isdir(
            os.path.join(p, STORE_DATABASE))} for i, p in enumerate(dict.fromkeys(paths))]

    def resolve(self, requested: str | None) -> str:
        if not requested:
            return self.default_path()
        path = os.path.expanduser(requested)
        if not os.path.isabs(path):
            raise StoreRefused(400, f"store {requested!r} is not an absolute path")
        return os.path.abspath(path)

    def view(self, path: str) -> StoreView | None:
        """The view of the store at ``path``; None for a default store not created yet."""
        if path == self.default_path() and not os.path.exists(path):
            with self._lock:
                self._awaited.add(path)  # a page looks at it: open it when it appears
            return None
        check_store(path)  # on every request: a store can become unsafe while open
        with self._lock:
            view = self._views.get(path)
            if view is None:
                try:
                    view = self._views[path] = StoreView(path)
                except StoreError as exc:  # the store's own checks: damaged, vanished, unsafe
                    raise StoreRefused(400, str(exc).splitlines()[0]) from None
            return view

    def open_views(self) -> list[StoreView]:
        """The views pages look at, with those of awaited stores that exist now."""
        with self._lock:
            appeared = [p for p in self._awaited if os.path.isdir(
                os.path.join(p, STORE_DATABASE))]
            self._awaited.difference_update(appeared)
        for path in appeared:
            try:
                self.view(path)
            except StoreRefused:
                pass  # a page's next request says why
        with self._lock:
            return list(self._views.values())
