"""nbwork in the notebook: live ipywidgets over the public API (the Background Task
Inspector of Android Studio, in a cell).

- ``WorkTable(target)``: a live table of work (a query, ids, a chain...), with state
  badges, progress bars, Cancel buttons and rows that expand to the details and the log.
- ``WorkCard(id)``: one work.
- ``ImagePreview(target)``: the image a work or chain produced, as it advances.
- ``ChainGraph(target)``: the chain's graph, nodes coloured by state.
- ``BlurOMaticApp()``: the codelab's app.

Every widget is live: it is drawn at once, then redrawn (at most ten times a second) when
its work changes, from ``WorkManager.observe`` through one thread per kernel
(``nbwork.widgets._live``); ``widget.close()`` stops its updates. ``widget.wait()`` blocks
until its work is finished and shown. Since all state lives in the store, showing the same
target again after a kernel restart shows the same work, live.

``%load_ext nbwork`` adds the ``%nbwork`` magic (a table of the default store).
"""

from ._html import chain_svg
from ._live import HUB, MAX_REDRAWS_PER_SECOND
from .blur_app import BlurOMaticApp
from .graph import ChainGraph
from .preview import ImagePreview, pick_image
from .table import WorkCard, WorkTable, WorkView


def _register_list_html() -> None:
    # In an IPython session, lists of WorkInfo render as a table once the widgets are in.
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None:
        from ._magic import register_list_html

        register_list_html(shell)


_register_list_html()

__all__ = [
    "BlurOMaticApp", "ChainGraph", "HUB", "ImagePreview", "MAX_REDRAWS_PER_SECOND",
    "WorkCard", "WorkTable", "WorkView", "chain_svg", "pick_image",
]
