"""``ImagePreview``: the image a work (or the newest step of a chain) names, live.

The image is the one named by ``key`` (``image_uri``) in the output of a SUCCEEDED work or
the progress of a RUNNING one; among several, the newest (a chain's last finished step).
Before any step has produced one, the input image of the first step is shown. Files that
are gone (a later ``CleanupWorker`` deleted them) are skipped.
"""

from __future__ import annotations

import html
import io
import os
from datetime import datetime
from typing import NamedTuple

import ipywidgets as w
from PIL import Image

from ..info import WorkInfo, WorkState, in_chain_order
from ..manager import WorkManager
from . import _html
from ._live import LiveWidget, Target, as_query

KEY_IMAGE_URI = "image_uri"


class Picked(NamedTuple):
    path: str
    where: str
    """``output``, ``progress`` or ``input``."""
    info: WorkInfo
    step: int
    """1-based position of the work in chain order."""


def pick_image(infos: list[WorkInfo], key: str = KEY_IMAGE_URI) -> Picked | None:
    """The image to show for ``infos`` (see the module docstring), or None."""
    ordered = in_chain_order(infos)
    candidates = []
    for step, info in enumerate(ordered, 1):
        if info.state is WorkState.SUCCEEDED and isinstance(info.output_data.get(key), str):
            when = info.finish_time or datetime.min
            candidates.append((when, step, Picked(info.output_data[key], "output", info, step)))
        elif info.state is WorkState.RUNNING and isinstance(info.progress.get(key), str):
            candidates.append((datetime.max, step,
                               Picked(info.progress[key], "progress", info, step)))
    for _, _, picked in sorted(candidates, key=lambda c: (c[0], c[1]), reverse=True):
        if os.path.isfile(picked.path):
            return picked
    for step, info in enumerate(ordered, 1):
        source = info.input_data.get(key)
        if isinstance(source, str) and os.path.isfile(source):
            return Picked(source, "input", info, step)
    return None


def thumbnail_bytes(path: str, width: int) -> bytes:
    """A JPEG of the image at ``path`` at most ``width`` pixels wide (for the widget state)."""
    with Image.open(path) as image:
        image.thumbnail((width, width * 4))
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=88)
        return out.getvalue()


class ImagePreview(LiveWidget, w.VBox):
    """The image named by ``target``'s work (see ``Target``), updated as it advances.

    ``preview.path`` is the file shown (None before there is one); ``width`` in pixels.
    """

    def __init__(self, target: Target = None, *, wm: WorkManager | None = None,
                 key: str = KEY_IMAGE_URI, width: int = 360, **query_fields: object) -> None:
        self.key = key
        self.width = width
        self.path: str | None = None
        self._shown: bytes | None = None
        self._cache: dict[tuple[str, int, int], bytes] = {}
        self.image = w.Image(format="jpeg", layout=w.Layout(display="none",
                                                            max_width=f"{width}px"))
        self.caption = w.HTML("<i>no image yet</i>", layout=w.Layout(max_width=f"{width}px"))
        super().__init__([self.image, self.caption])
        self.add_class("nbwork-preview")
        self._start_live(wm, as_query(target, **query_fields))  # type: ignore[arg-type]

    def _read(self, path: str) -> bytes | None:
        try:
            stat = os.stat(path)
            key = (path, stat.st_mtime_ns, stat.st_size)
            if key not in self._cache:
                self._cache = {key: thumbnail_bytes(path, self.width)}
            return self._cache[key]
        except (OSError, ValueError, SyntaxError):  # gone, or not (yet) a whole image
            return None

    def _draw(self, infos: list[WorkInfo]) -> None:
        picked = pick_image(infos, self.key)
        data = self._read(picked.path) if picked else None
        if picked is None or data is None:
            if self.path is None:
                self.caption.value = "<i>no image yet</i>"
            return
        if picked.path != self.path or data is not self._shown:
            self.path, self._shown = picked.path, data
            self.image.value = data
            self.image.layout.display = ""
        what = {"input": "input of", "output": "output of", "progress": "from"}[picked.where]
        self.caption.value = _html.block(
            f"<span style='font-size:12px'>{what} step {picked.step} of {len(infos)}: "
            f"{html.escape(_html.short_name(picked.info.worker_name))} "
            f"<code>{picked.info.short_id}</code> {_html.badge(picked.info.state)}<br>"
            f"<code style='font-size:11px'>{html.escape(picked.path)}</code></span>")

    def close(self) -> None:
        self._stop_live()
        self.image.close()
        self.caption.close()
        super().close()
