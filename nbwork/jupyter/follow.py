"""Live push: a server task follows the change counter of every store a page looks at and
emits one small event per batch of changes on jupyter_server's event bus (the page listens
on ``/api/events/subscribe``, then fetches what it shows). The event names the store and
its counter only: rows stay behind the authenticated REST API."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .stores import StoreViews

EVENT_SCHEMA_ID = "https://github.com/nbwork/nbwork/events/work-changed"
EVENT_SCHEMA: dict[str, Any] = {
    "$id": EVENT_SCHEMA_ID,
    "version": "1",
    "title": "nbwork: works changed",
    "description": "The works of an nbwork store changed (states, progress, new or removed "
                   "works); the Work panel fetches what it shows again.",
    "type": "object",
    "required": ["store", "counter", "notice_seq"],
    "properties": {
        "store": {"title": "store", "description": "The store directory.", "type": "string"},
        "counter": {"title": "counter", "description": "The store's change counter.",
                    "type": "integer"},
        "notice_seq": {"title": "notice sequence",
                       "description": "The number of the newest 'a chain finished' notice.",
                       "type": "integer"},
    },
}

log = logging.getLogger("nbwork.jupyter")


class Follower:
    """The one task that refreshes the open store views and emits their changes."""

    def __init__(self, views: StoreViews, event_logger: Any, interval: float) -> None:
        self.views = views
        self.event_logger = event_logger
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._pushed: dict[str, int | None] = {}  # store -> the counter last pushed

    def ensure_running(self) -> None:
        """Start the task (on the server's loop) if it is not running."""
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    def poke(self) -> None:
        """Look now (after a change made through the API)."""
        if self._wake is not None:
            self._wake.set()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            for view in self.views.open_views():
                try:
                    await asyncio.to_thread(view.refresh)
                except Exception:  # a store gone bad must not stop the others' push
                    log.exception("nbwork: cannot read the store %s", view.path)
                    continue
                # Compared with what was pushed, not with the last refresh: a page's request
                # may have refreshed the view first, and the other pages must hear of it.
                if view.counter != self._pushed.get(view.path):
                    self._pushed[view.path] = view.counter
                    self.event_logger.emit(schema_id=EVENT_SCHEMA_ID, data={
                        "store": view.path, "counter": view.counter or 0,
                        "notice_seq": view.last_seq})
            assert self._wake is not None
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
