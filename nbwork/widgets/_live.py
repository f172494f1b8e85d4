"""Live updates for every widget of a kernel: ``WorkManager.observe`` plus one redraw thread.

Each live widget holds a ``Subscription``: a ``wm.observe(target, ...)`` whose callbacks
arrive on the store's one watcher thread (``WorkManager``'s, shared by everything that
observes that store in this process). The callback only records the newest infos and
pokes the ``Hub``: one thread per kernel, whatever the number of widgets, that redraws
each subscription at most ``MAX_REDRAWS_PER_SECOND`` times a second, always with the
newest infos (a burst of progress reports becomes one redraw; the last state is never
lost). A subscription with a ``tick`` is also redrawn with the same infos that often while
some of its work is unfinished, for what changes with time alone (an age, a delay that runs
out). Redraws set widget traits from this thread, never ``with output:`` (output
routing follows the cell being executed, not the widget). The thread ends when the last
subscription is closed, and starts again with the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import InvalidInputError
from ..info import WorkInfo, WorkQuery, WorkState
from ..manager import ObserverHandle, WorkManager
from ..request import WorkRequest

log = logging.getLogger("nbwork.widgets")

MAX_REDRAWS_PER_SECOND = 10
"""Each widget redraws at most this often; changes in between are folded into one redraw."""

Target = Any
"""What a widget shows: a ``WorkQuery``, a work id, a request, a ``WorkContinuation``, a
list of ids or requests, or anything with an ``ids`` list (``BlurJob``, ``BatchJob``)."""


def as_query(target: Target = None, *, ids: Iterable[str] | None = None,
             tags: Iterable[str] | str | None = None,
             unique_work_names: Iterable[str] | str | None = None,
             states: Iterable[WorkState | str] | WorkState | str | None = None) -> WorkQuery:
    """The ``WorkQuery`` of a widget's arguments: a ``target`` (see ``Target``) or the
    fields of a query; neither means all work of the store."""
    fields = {"ids": ids, "tags": tags, "unique_work_names": unique_work_names,
              "states": states}
    given = {k: v for k, v in fields.items() if v is not None}
    if target is not None and given:
        raise InvalidInputError(f"give either a target or the query fields "
                                f"{', '.join(given)}, not both")
    if target is None:
        return WorkQuery(**given)
    if isinstance(target, WorkQuery):
        return target
    if isinstance(target, (str, WorkRequest)):
        target = [target]
    else:
        target = getattr(target, "ids", target)  # WorkContinuation, BlurJob, BatchJob
    if isinstance(target, Iterable) and not isinstance(target, (str, bytes)):
        items = list(target)
        if all(isinstance(i, (str, WorkRequest)) for i in items):
            return WorkQuery(ids=[i if isinstance(i, str) else i.id for i in items])
    raise InvalidInputError(
        f"cannot show a {type(target).__name__}; pass a work id, a request, a list of them, "
        "a WorkContinuation, a BlurJob or a WorkQuery")


class Subscription:
    """One widget's live view of a target: ``draw(infos)`` now and after every change.

    ``draw`` runs first in the caller's thread (so a widget shows its work as soon as it
    is created), then on the hub thread. ``close()`` stops it for good.
    """

    def __init__(self, wm: WorkManager, query: WorkQuery,
                 draw: Callable[[list[WorkInfo]], None], hub: "Hub | None" = None,
                 tick: float | None = None) -> None:
        self.wm = wm
        self.tick = tick
        """Redraw the same infos at least this often (seconds) while some work is unfinished,
        for what changes with time alone (an age, a delay that runs out); None: never."""
        self.query = query
        self._draw = draw
        self._hub = hub or HUB
        self._cond = threading.Condition()
        self._draw_lock = threading.RLock()  # close() from inside a draw must not deadlock
        self.drawn: list[WorkInfo] | None = None
        self.last_draw = 0.0
        self.closed = False
        first: list[list[WorkInfo]] = []
        self._first_lock = threading.Lock()
        self._first: list[list[WorkInfo]] | None = first
        # Joined to the hub before observing, so no change between the two is lost.
        self._hub.add(self)
        try:
            self._handle = wm.observe(query, self._changed)
        except BaseException:
            self._hub.remove(self)
            raise
        # The first draw happens here, in the caller's thread; a change delivered while it
        # runs is kept in ``first`` and handed to the hub after it, never drawn before it.
        shown = first[-1] if first else []
        self._run_draw(shown)
        with self._first_lock:
            self._first = None
        if first and first[-1] is not shown:
            self._hub.changed(self, first[-1])

    def ticking(self) -> bool:
        """Whether the infos drawn last have unfinished work that ``tick`` should redraw."""
        drawn = self.drawn
        return bool(self.tick and drawn and any(not i.state.is_finished for i in drawn))

    def _changed(self, infos: list[WorkInfo]) -> None:
        """The observe callback (on the watcher thread, or in ``__init__`` the first time)."""
        with self._first_lock:
            if self._first is not None:
                self._first.append(infos)
                return
        self._hub.changed(self, infos)

    def _run_draw(self, infos: list[WorkInfo]) -> None:
        with self._draw_lock:
            if self.closed:
                return
            try:
                self._draw(infos)
            except Exception:  # a widget's bug must not stop the others' updates
                log.exception("nbwork widget redraw failed")
            self.last_draw = time.monotonic()
            with self._cond:
                self.drawn = infos
                self._cond.notify_all()
        if self.tick:
            self._hub.poke()  # its next tick is counted from this draw

    @property
    def handle(self) -> ObserverHandle:
        """The ``wm.observe`` handle (inactive once the subscription is closed)."""
        return self._handle

    def wait_drawn(self, condition: Callable[[list[WorkInfo]], bool],
                   timeout: float | None = None) -> list[WorkInfo]:
        """Block until the infos last drawn satisfy ``condition``; ``TimeoutError`` after
        ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(
                    lambda: self.drawn is not None and condition(self.drawn), timeout):
                raise TimeoutError(f"the widget did not show the expected state within "
                                   f"{timeout:g} s")
            return list(self.drawn or [])

    def close(self) -> None:
        """Stop observing; no draw starts after this returns."""
        self._handle.cancel()
        with self._draw_lock:
            self.closed = True
        self._hub.remove(self)


class Hub:
    """The one redraw thread of a kernel (see the module docstring)."""

    def __init__(self, max_per_second: float = MAX_REDRAWS_PER_SECOND) -> None:
        self.interval = 1.0 / max_per_second
        self._cond = threading.Condition()
        self._subscriptions: list[Subscription] = []
        self._pending: dict[Subscription, list[WorkInfo]] = {}
        self._thread: threading.Thread | None = None

    @property
    def subscriptions(self) -> list[Subscription]:
        with self._cond:
            return list(self._subscriptions)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def add(self, subscription: Subscription) -> None:
        with self._cond:
            self._subscriptions.append(subscription)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nbwork-widgets",
                                                daemon=True)
                self._thread.start()

    def remove(self, subscription: Subscription) -> None:
        with self._cond:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
            self._pending.pop(subscription, None)
            self._cond.notify_all()

    def poke(self) -> None:
        """Wake the thread to recompute when the next redraw is due."""
        with self._cond:
            self._cond.notify_all()

    def changed(self, subscription: Subscription, infos: list[WorkInfo]) -> None:
        with self._cond:
            if subscription in self._subscriptions:
                self._pending[subscription] = infos  # only the newest infos matter
                self._cond.notify_all()

    def _next_batch(self) -> list[tuple[Subscription, list[WorkInfo]]] | None:
        """Wait for pending redraws that are due; None when nothing is subscribed."""
        with self._cond:
            while True:
                if not self._subscriptions:
                    self._thread = None
                    return None
                now = time.monotonic()
                ticking = [s for s in self._subscriptions
                           if s not in self._pending and s.ticking()]
                for s in ticking:
                    if now - s.last_draw >= s.tick:
                        self._pending[s] = s.drawn  # the same infos, as of now
                due = [s for s in self._pending if now - s.last_draw >= self.interval]
                if due:
                    return [(s, self._pending.pop(s)) for s in due]
                waits = [s.last_draw + self.interval - now for s in self._pending]
                waits += [s.last_draw + s.tick - now for s in ticking]
                self._cond.wait(min(waits) if waits else None)

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            for subscription, infos in batch:
                subscription._run_draw(infos)


HUB = Hub()
"""The kernel's hub: every widget's subscription goes through it."""


class LiveWidget:
    """What every live widget has: its ``WorkManager``, its ``query``, ``wait()``, and a
    ``close()`` that stops its updates (mixed into an ``ipywidgets`` box)."""

    _subscription: Subscription | None = None

    _tick: float | None = None

    def _start_live(self, wm: WorkManager | None, query: WorkQuery,
                    tick: float | None = None) -> None:
        self.wm = wm or WorkManager.get_instance()
        self.query = query
        self._tick = tick
        self._subscription = Subscription(self.wm, query, self._draw, tick=tick)

    def _draw(self, infos: list[WorkInfo]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def subscription(self) -> Subscription | None:
        """The live subscription (None once closed)."""
        return self._subscription

    def show(self, target: Target) -> None:
        """Show other work from now on (same widget, new query)."""
        query = as_query(target)
        old, self._subscription = self._subscription, None
        if old is not None:
            old.close()
        self.query = query
        self._subscription = Subscription(self.wm, query, self._draw, tick=self._tick)

    def wait(self, timeout: float | None = None) -> list[WorkInfo]:
        """Block until all the work shown is finished *and drawn* (so a notebook executed
        headless saves the final state); return the infos. ``TimeoutError`` after
        ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        infos = self.wm.wait(self.query, timeout)
        infos = infos if isinstance(infos, list) else [infos]
        ids = {i.id for i in infos}
        subscription = self._subscription
        if subscription is None:
            return infos
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return subscription.wait_drawn(
            lambda drawn: ids <= {i.id for i in drawn if i.state.is_finished}, left)

    def _stop_live(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()


def close_tree(widget: Any) -> None:
    """Close a widget and every widget inside it (``Widget.close`` closes only itself)."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    widget.close()
