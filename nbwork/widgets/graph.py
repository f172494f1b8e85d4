"""``ChainGraph``: the DAG of a chain, a unique work or any query, nodes coloured by state.

Drawn as SVG in an ``HTML`` widget (``nbwork.widgets._html.chain_svg``). Given work ids
(a request, a ``WorkContinuation``, a ``BlurJob``...), the graph takes in every work linked
to them through ``prerequisites`` and ``dependents``: the whole chain, even from one id.
"""

from __future__ import annotations

import ipywidgets as w

from ..info import WorkInfo, WorkQuery, WorkState
from ..manager import WorkManager
from . import _html
from ._live import LiveWidget, Target, as_query

MAX_NODES = 300
"""A graph follows links to at most this many works."""


def linked_ids(wm: WorkManager, ids: list[str]) -> list[str]:
    """``ids`` and every work reachable from them through prerequisites and dependents."""
    known: dict[str, WorkInfo] = {}
    frontier = list(dict.fromkeys(ids))
    while frontier and len(known) < MAX_NODES:
        found = wm.get_work_infos(WorkQuery(ids=frontier))
        known.update((i.id, i) for i in found)
        frontier = list(dict.fromkeys(
            x for i in found for x in (*i.prerequisites, *i.dependents) if x not in known))
        frontier = [x for x in frontier if x not in known][:MAX_NODES - len(known)]
    return list(dict.fromkeys([*ids, *known]))


class ChainGraph(LiveWidget, w.VBox):
    """A live graph of ``target``'s work (see ``Target``); ``graph.svg.value`` is the SVG."""

    def __init__(self, target: Target = None, *, wm: WorkManager | None = None,
                 **query_fields: object) -> None:
        self.svg = w.HTML()
        self.legend = w.HTML(" ".join(_html.badge(s) for s in WorkState))
        super().__init__([self.svg, self.legend])
        self.add_class("nbwork-graph")
        query = as_query(target, **query_fields)  # type: ignore[arg-type]
        wm = wm or WorkManager.get_instance()
        if query.ids and not (query.tags or query.states or query.unique_work_names):
            query = WorkQuery(ids=linked_ids(wm, list(query.ids)))
        self._start_live(wm, query)

    def _draw(self, infos: list[WorkInfo]) -> None:
        self.svg.value = _html.chain_svg(infos) if infos else "<i>no work to draw</i>"

    def close(self) -> None:
        self._stop_live()
        self.svg.close()
        self.legend.close()
        super().close()
