"""``WorkTable``: the live list of the work a query matches; ``WorkCard``: one work.

Per work: short id, worker, a coloured state badge, a progress bar, attempts, tags, the age
of unfinished work (redrawn every second, so it keeps counting) or the duration of finished
work, and a Cancel button while it is not finished. The row's tooltip says why a waiting
work waits (``nbwork.explain.why_waiting``). The ▸ button expands a row to the work's input,
output and captured log (``wm.read_log``); a failed work shows its exception line first and
its traceback folded under it, once (not again in the log). A table of several works has
one aggregate bar (done, running, failed of N).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable

import ipywidgets as w

from ..errors import InvalidInputError
from ..explain import error_headline, why_waiting
from ..info import WorkInfo, WorkState, in_chain_order
from ..manager import WorkManager
from . import _html
from ._live import LiveWidget, Target, as_query, close_tree

COLUMNS = (("", "30px"), ("id", "82px"), ("worker", "180px"), ("state", "112px"),
           ("progress", "120px"), ("", "52px"), ("attempts", "72px"), ("tags", "130px"),
           ("time", "62px"), ("", "86px"))
"""(header, width) of each column of a row: the ▸ button, three cells of text, the progress
bar, four cells of text, the Cancel button. The widths are what a column gets when there is
room; in a narrower output area (a laptop screen with JupyterLab's sidebar open) the text
columns and the bar shrink, cutting their text with … (the full text is in its tooltip),
so the ▸ and Cancel buttons always stay in view."""

MIN_BAR_WIDTH = "40px"
"""The progress bar shrinks down to this width, never less."""

TICK_SECONDS = 1.0
"""Rows of unfinished work are redrawn this often, so their age keeps growing."""

ROW_CSS = (
    "<style>"
    ".nbwork-row,.nbwork-header{width:100%;min-width:0;flex-wrap:nowrap}"
    ".nbwork-row>.widget-html,.nbwork-header>.widget-html{min-width:0}"
    ".nbwork-row .widget-html-content,.nbwork-header .widget-html-content"
    "{min-width:0;width:100%;overflow:hidden;flex:1 1 auto}"
    "</style>")
"""CSS the row layout needs beyond ``Layout`` traits: an ``HTML`` widget's inner box does
not shrink below its text by default, which pushed the Cancel button out of the table."""

_BAR_STYLE = {WorkState.SUCCEEDED: "success", WorkState.FAILED: "danger",
              WorkState.CANCELLED: "warning", WorkState.RUNNING: "info"}


def _fixed(width: str, **layout: str) -> w.Layout:
    """A column that keeps its width (the buttons)."""
    return w.Layout(width=width, flex="0 0 auto", **layout)


def _shrinking(width: str, min_width: str = "0", **layout: str) -> w.Layout:
    """Columns that take ``width`` when there is room and shrink in proportion when not."""
    return w.Layout(flex=f"1 1 {width}", width=width, min_width=min_width, overflow="hidden",
                    **layout)


def _px(width: str) -> int:
    return int(width.removesuffix("px"))


def _sum(widths: Iterable[str]) -> str:
    return f"{sum(_px(x) for x in widths)}px"


def _cells(columns: list[tuple[str, str] | tuple[str, str, str]]) -> str:
    """Cells of text in one line, each of its column's width (shrinking in proportion when
    the row is narrow, text cut with …; a third item is the cell's tooltip): a row needs a
    few ``HTML`` widgets rather than one per cell (a table of 50 works is then ~1,000
    models, not 2,000)."""
    parts = []
    for width, value, *tip in columns:
        title = f' title="{html.escape(tip[0])}"' if tip and tip[0] else ""
        parts.append(f'<div{title} style="flex:1 1 {width};width:{width};min-width:0;'
                     f'overflow:hidden;white-space:nowrap;text-overflow:ellipsis;padding:0 2px;'
                     f'box-sizing:border-box">{value}</div>')
    return '<div style="display:flex;align-items:center;min-width:0">' + "".join(parts) + \
        "</div>"


def header_row() -> w.HBox:
    """The column names, in widgets laid out as a row's (margins and shrinking included),
    so they stay aligned at any width."""
    names = [f"<b style='color:#555'>{name}</b>" for name, _ in COLUMNS]
    widths = [width for _, width in COLUMNS]

    def text(first: int, last: int, layout: w.Layout) -> w.HTML:
        return w.HTML(_cells(list(zip(widths[first:last], names[first:last], strict=True))),
                      layout=layout)

    header = w.HBox([w.HTML(ROW_CSS, layout=_fixed(widths[0])),
                     text(1, 4, _shrinking(_sum(widths[1:4]))),
                     text(4, 5, _shrinking(widths[4], MIN_BAR_WIDTH, margin="0 4px")),
                     text(5, 9, _shrinking(_sum(widths[5:9]))),
                     text(9, 10, _fixed(widths[9]))], layout=w.Layout(align_items="center"))
    header.add_class("nbwork-header")
    return header


class WorkView:
    """The widgets that show one work (a table row or a card) and keep them up to date.

    ``who`` shows the id, worker and state badge (only the badge with ``identity=False``,
    for a card whose header names the work), with the row's tooltip (why the work waits);
    ``bar`` the progress, ``facts`` the percent, attempts, tags and age (unfinished work)
    or duration (finished work); ``cancel`` is the Cancel button, ``details`` the expanded part.
    """

    def __init__(self, wm: WorkManager, info: WorkInfo, expanded: bool = False,
                 identity: bool = True,
                 lookup: Callable[[str], WorkInfo | None] | None = None,
                 scheduler_state: Callable[[], str | None] | None = None) -> None:
        self.wm = wm
        self.id = info.id
        self.info = info
        self.identity = identity
        self.lookup: Callable[[str], WorkInfo | None] = lookup or wm.get_work_info_by_id
        """Finds a prerequisite's info, to say which one a BLOCKED work waits for."""
        self.scheduler_state: Callable[[], str | None] = scheduler_state or wm.daemon.state
        """What the scheduler is doing (``Daemon.state``): due work that cannot start
        because the scheduler waits for its Dask cluster or its store says so."""
        self.widths = [width for _, width in COLUMNS]
        widths = self.widths
        self.expand = w.ToggleButton(value=expanded, description="▸", tooltip="details",
                                     layout=_fixed(widths[0], padding="0"))
        self.who = w.HTML(layout=_shrinking(_sum(widths[1:4] if identity else widths[3:4])))
        self.bar = w.FloatProgress(min=0, max=100, value=0, layout=_shrinking(
            widths[4], MIN_BAR_WIDTH, margin="0 4px"))
        self.facts = w.HTML(layout=_shrinking(_sum(widths[5:9])))
        self.cancel = w.Button(description="Cancel", button_style="danger", icon="stop",
                               tooltip="cancel this work (and the work that depends on it)",
                               layout=_fixed(widths[9]))
        self.details = w.HTML(layout=w.Layout(display="" if expanded else "none"))
        self.row = w.HBox([self.expand, self.who, self.bar, self.facts, self.cancel],
                          layout=w.Layout(align_items="center"))
        if not identity:
            self.expand.layout.display = "none"
        self.row.add_class("nbwork-row")
        self.cancel.on_click(self._cancel)
        self.expand.observe(self._toggled, names="value")
        self.update(info)

    @property
    def widgets(self) -> list[w.Widget]:
        return [self.row, self.details]

    def _cancel(self, _button: w.Button) -> None:
        self.cancel.disabled = True
        self.wm.cancel_work_by_id(self.id)

    def _toggled(self, change: dict) -> None:
        self.expand.description = "▾" if change["new"] else "▸"
        self._show_details()

    def _show_details(self) -> None:
        if self.expand.value:
            self.details.value = _html.details(self.info, self.wm.read_log(self.id),
                                               self.waiting())
            self.details.layout.display = ""
        else:
            self.details.layout.display = "none"

    def waiting(self) -> str | None:
        """Why the work has not started yet (``nbwork.explain.why_waiting``), as of now."""
        info = self.info
        state = self.scheduler_state() if info.state is WorkState.ENQUEUED else None
        return why_waiting(info, self.lookup, scheduler_state=state)

    def tooltip(self) -> str:
        """The row's tooltip: the work, its state and why it waits, if it does."""
        info = self.info
        waiting = self.waiting()
        return (f"{info.worker_name}\n{info.id}\n{info.state.value}"
                + (f": {waiting}" if waiting else "")
                + (f"\n{error_headline(info.error)}" if info.error else ""))

    def show_facts(self) -> None:
        """Everything in the row that changes with time as well as with the work: the
        tooltip (why it waits: a delay runs out) and its age or duration."""
        info, widths = self.info, self.widths
        tip = self.tooltip()
        name = info.worker_name
        identity = [
            (widths[1], f"<code>{info.short_id}</code>", tip),
            (widths[2], html.escape(_html.short_name(name)), tip),
        ] if self.identity else []
        self.who.value = _cells([*identity, (widths[3], _html.badge(info.state), tip)])
        has_percent = info.state is WorkState.SUCCEEDED or "percent" in info.progress
        time_text, time_tip = _html.elapsed(info)
        self.facts.value = _cells([
            (widths[5], _html.percent_text(_html.percent_of(info)) if has_percent else ""),
            (widths[6], str(info.run_attempt_count), "attempts"),
            (widths[7], _html.tags_html(info.tags)),
            (widths[8], time_text, time_tip)])

    def update(self, info: WorkInfo) -> None:
        """Show ``info`` (traits set from whatever thread draws; never ``with output:``)."""
        self.info = info
        with self.bar.hold_sync():
            self.bar.value = _html.percent_of(info)
            self.bar.bar_style = _BAR_STYLE.get(info.state, "")
        self.show_facts()
        finished = info.state.is_finished
        with self.cancel.hold_sync():
            self.cancel.layout.visibility = "hidden" if finished else "visible"
            self.cancel.disabled = finished
        if self.expand.value:
            self._show_details()


class WorkTable(LiveWidget, w.VBox):
    """A live table of the work ``target`` names (see ``Target``), or of a query given by
    its fields (``tags=``, ``unique_work_names=``, ``states=``, ``ids=``); all work by default.

    Shows at most ``max_rows`` works, the newest; ``table.rows`` maps id -> ``WorkView``.
    ``table.close()`` stops its updates.
    """

    def __init__(self, target: Target = None, *, wm: WorkManager | None = None,
                 ids: Iterable[str] | None = None, tags: Iterable[str] | str | None = None,
                 unique_work_names: Iterable[str] | str | None = None,
                 states: Iterable[WorkState | str] | None = None, max_rows: int = 50,
                 title: str | None = None) -> None:
        query = as_query(target, ids=ids, tags=tags, unique_work_names=unique_work_names,
                         states=states)
        self.max_rows = max_rows
        self.rows: dict[str, WorkView] = {}
        self._by_id: dict[str, WorkInfo] = {}
        self._state_read: tuple[str | None] | None = None
        self._drawn: list[WorkInfo] | None = None  # the infos of the last full draw
        self._shown: list[WorkView] = []  # its rows, in order
        self.title = title
        self.summary = w.HTML()
        self.header = header_row()
        self.body = w.VBox()
        self.footer = w.HTML()
        super().__init__([self.summary, self.header, self.body, self.footer],
                         layout=w.Layout(border="1px solid #ddd", padding="4px",
                                         overflow="auto"))
        self.add_class("nbwork-table")
        self._start_live(wm, query, tick=TICK_SECONDS)

    def _lookup(self, id: str) -> WorkInfo | None:
        """A prerequisite's info: from the infos drawn, else from the store."""
        found = self._by_id.get(id)
        return found if found is not None else self.wm.get_work_info_by_id(id)

    def _scheduler_state(self) -> str | None:
        """``Daemon.state``, read once per redraw (not once per row)."""
        if self._state_read is None:
            self._state_read = (self.wm.daemon.state(),)
        return self._state_read[0]

    def _draw(self, infos: list[WorkInfo]) -> None:
        self._state_read = None
        if infos is self._drawn:
            # A tick (the same infos again): only what changes with time, in the rows shown.
            # Sorting and summing a 1,000-work table every second was most of a kernel's
            # CPU while it showed work that waits for an hour.
            for view in self._shown:
                view.show_facts()
            return
        self._by_id = {i.id: i for i in infos}
        ordered = in_chain_order(infos)
        shown = ordered[-self.max_rows:] if self.max_rows else ordered
        for info in shown:
            view = self.rows.get(info.id)
            if view is None:
                self.rows[info.id] = WorkView(self.wm, info, lookup=self._lookup,
                                              scheduler_state=self._scheduler_state)
            elif view.info != info:
                view.update(info)
            else:
                view.show_facts()  # every row's age as of this redraw, not its last change
        ids = [i.id for i in shown]
        for gone in set(self.rows) - set(ids):
            for widget in self.rows.pop(gone).widgets:
                close_tree(widget)
        self._drawn, self._shown = infos, [self.rows[i] for i in ids]
        children = tuple(x for i in ids for x in self.rows[i].widgets)
        if children != self.body.children:
            self.body.children = children
        counts = {s: sum(1 for i in infos if i.state is s) for s in WorkState}
        title = f"<b>{html.escape(self.title)}</b> · " if self.title else ""
        self.summary.value = (
            f"{title}{len(infos)} work{'s' if len(infos) != 1 else ''} "
            + " ".join(f"{_html.badge(s)}&nbsp;{n}" for s, n in counts.items() if n)
            + (_html.aggregate_bar(infos) if len(infos) > 1 else ""))
        hidden = len(ordered) - len(shown)
        self.footer.value = (f"<i>{hidden} older work{'s' if hidden != 1 else ''} not shown</i>"
                             if hidden else "" if infos else "<i>no work matches</i>")

    def close(self) -> None:
        self._stop_live()
        for child in (self.summary, self.header, self.body, self.footer):
            close_tree(child)
        for view in self.rows.values():
            for widget in view.widgets:
                close_tree(widget)
        super().close()


class WorkCard(LiveWidget, w.VBox):
    """One work, live: a header, its progress bar, a Cancel button and all its details."""

    def __init__(self, target: Target, *, wm: WorkManager | None = None) -> None:
        self.view: WorkView | None = None
        self.message = w.HTML()
        super().__init__([self.message],
                         layout=w.Layout(border="1px solid #ddd", padding="6px",
                                         max_width="760px"))
        self.add_class("nbwork-card")
        query = as_query(target)
        if len(query.ids) != 1:
            raise InvalidInputError("a WorkCard shows one work: pass its id or its request, "
                                    "or use a WorkTable for several")
        self._start_live(wm, query, tick=TICK_SECONDS)

    def _draw(self, infos: list[WorkInfo]) -> None:
        if not infos:
            self.message.value = (f"<i>no work with id {self.query.ids[0]} in the store "
                                  f"{html.escape(self.wm.store_path)}</i>")
            return
        info = infos[0]
        if self.view is None:
            self.view = WorkView(self.wm, info, expanded=True, identity=False)
            self.children = (self.message, self.view.row, self.view.details)
        elif info != self.view.info:
            self.view.update(info)
        else:  # a tick: the age and why it waits, as of now
            self.view.show_facts()
            if not info.state.is_finished:
                self.view._show_details()
        self.message.value = (f"{ROW_CSS}<b style='font-size:14px'>"
                              f"{html.escape(_html.short_name(info.worker_name))}</b> "
                              f"<code>{info.id}</code>")

    def close(self) -> None:
        self._stop_live()
        close_tree(self.message)
        if self.view is not None:
            for widget in self.view.widgets:
                close_tree(widget)
        super().close()
