"""``BlurOMaticApp``: the codelab's app as a widget.

Pick an image (a bundled sample, a path, or an upload), a blur level (1-3), press Go:
``nbwork.imaging.blur_o_matic`` enqueues the chain cleanup -> blur x level -> save as
unique work ``IMAGE_MANIPULATION_WORK_NAME`` with REPLACE. The app observes that unique
work, not the ids it enqueued, so a new app (after a kernel restart, in another notebook)
shows the chain under way, and a blur started elsewhere (``nbwork blur``) shows too.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import ipywidgets as w

from ..errors import InvalidInputError
from ..explain import error_headline, why_waiting
from ..imaging import (
    DEFAULT_RADIUS,
    DEFAULT_STRIPS,
    IMAGE_MANIPULATION_WORK_NAME,
    KEY_IMAGE_URI,
    TAG_OUTPUT,
    BlurJob,
    blur_o_matic,
    check_image,
    sample_images,
)
from ..info import STATE_COLOURS, WorkInfo, WorkQuery, WorkState
from ..manager import WorkManager
from . import _html
from ._live import LiveWidget, close_tree
from .preview import ImagePreview, thumbnail_bytes
from .table import WorkTable

LEVELS = (("A little blurred", 1), ("More blurred", 2), ("The most blurred", 3))
"""The codelab's three choices."""
YOUR_FILE = ""
"""The picker's value for "the path below" (typed or uploaded)."""
UPLOAD_DIR_NAME = "uploads"
"""Uploaded images are written to this folder of the store."""


def chain_progress(infos: list[WorkInfo]) -> float:
    """0-100: the mean of the steps' progress (a finished step counts 100)."""
    if not infos:
        return 0.0
    return sum(_html.percent_of(i) for i in infos) / len(infos)


class BlurOMaticApp(LiveWidget, w.VBox):
    """The Blur-O-Matic app; ``app.go()`` and ``app.wait()`` do from code what Go does.

    ``radius`` and ``strips`` go to each ``BlurWorker`` (more strips: more, smaller steps
    of progress). ``app.job`` is the ``BlurJob`` this app enqueued last; ``app.saved_path``
    the saved image once the chain succeeded.
    """

    def __init__(self, wm: WorkManager | None = None, *, radius: float = DEFAULT_RADIUS,
                 strips: int = DEFAULT_STRIPS, level: int = 1) -> None:
        wm = wm or WorkManager.get_instance()
        self.radius, self.strips = radius, strips
        self.job: BlurJob | None = None
        self._chain_shown: str | None = None  # the first step of the chain last adopted
        self.saved_path: str | None = None
        self._make_controls(level)
        query = WorkQuery(unique_work_names=[IMAGE_MANIPULATION_WORK_NAME])
        self.preview = ImagePreview(query, wm=wm, width=360)
        self.table = WorkTable(query, wm=wm, title="the Blur-O-Matic chain")

        def panel(title: str, *children: w.Widget, fixed: bool = False) -> w.VBox:
            # The left panel keeps its width; the right one takes the rest, and wraps.
            return w.VBox([w.HTML(f"<b>{title}</b>"), *children], layout=w.Layout(
                margin="0 16px 0 0", flex="0 0 auto" if fixed else "1 1 0%", min_width="0"))

        # Rows wrap rather than overflow: in a narrow output area (JupyterLab's sidebar
        # open on a laptop) a panel or a button moves down instead of out of sight.
        wrap = w.Layout(flex_flow="row wrap", align_items="flex-start")
        self.buttons = w.HBox([self.go_button, self.cancel_button, self.see_file_button],
                              layout=w.Layout(flex_flow="row wrap"))
        super().__init__([
            w.HTML("<h3 style='margin:4px 0'>Blur-O-Matic</h3>"),
            w.HBox([panel("1. the image", self.picker, self.path, self.upload, self.source,
                          fixed=True),
                    panel("2. the blur", self.level, self.requires_charging, self.buttons,
                          self.progress, self.status)], layout=wrap),
            w.HBox([panel("preview", self.preview, fixed=True),
                    panel("saved file", self.saved, self.saved_caption)], layout=wrap),
            self.table,
        ], layout=w.Layout(border="1px solid #ccc", padding="8px", min_width="0"))
        self.add_class("nbwork-blur-app")
        self.progress.add_class("nbwork-chain-progress")
        self.saved.add_class("nbwork-saved")
        self._connect_controls()
        self._show_source()
        self._start_live(wm, query)

    def _make_controls(self, level: int) -> None:
        """The inputs and buttons of the two upper panels."""
        samples = sample_images()
        self.picker = w.Dropdown(
            options=[(p.name, str(p)) for p in samples] + [("your own image (below)", YOUR_FILE)],
            value=str(samples[0]) if samples else YOUR_FILE, description="Image")
        self.path = w.Text(placeholder="path of your image", description="Path")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Upload")
        self.source = w.Image(format="jpeg", layout=w.Layout(max_width="240px"))
        for field in (self.picker, self.path):
            field.layout.width = "340px"
        self.level = w.RadioButtons(options=LEVELS, value=level, description="Blur")
        self.requires_charging = w.Checkbox(value=False, indent=False,
                                            description="save only while charging")
        self.go_button = w.Button(description="Go", button_style="primary", icon="play")
        self.cancel_button = w.Button(description="Cancel", button_style="danger", icon="stop",
                                      disabled=True)
        self.see_file_button = w.Button(description="See File", icon="image", disabled=True)
        self.progress = w.FloatProgress(min=0, max=100, description="Progress")
        self.status = w.HTML()
        self.saved = w.Image(format="jpeg", layout=w.Layout(display="none", max_width="360px"))
        self.saved_caption = w.HTML()

    def _connect_controls(self) -> None:
        self.picker.observe(self._picked, names="value")
        self.path.observe(self._typed, names="value")
        self.upload.observe(self._uploaded, names="value")
        self.go_button.on_click(lambda _: self.go())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.see_file_button.on_click(lambda _: self.see_file())

    # --- the image picker -----------------------------------------------------------

    @property
    def image_path(self) -> str:
        """The image Go would blur: the picked sample, else the path below it."""
        return self.picker.value or os.path.expanduser(self.path.value.strip())

    def _picked(self, change: dict) -> None:
        self._show_source()

    def _typed(self, change: dict) -> None:
        if change["new"].strip():
            self.picker.value = YOUR_FILE
        self._show_source()

    def _uploaded(self, change: dict) -> None:
        for item in change["new"] or ():
            name = re.sub(r"[^\w.-]", "_", os.path.basename(str(item["name"]))) or "upload"
            folder = Path(self.wm.store_path) / UPLOAD_DIR_NAME
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / name
            target.write_bytes(bytes(item["content"]))
            self.path.value = str(target)

    def _show_source(self) -> None:
        path = self.image_path
        try:
            check_image(path)
            self.source.value = thumbnail_bytes(path, 240)
            self.source.layout.display = ""
            self._say("")
        except (InvalidInputError, OSError) as exc:
            self.source.layout.display = "none"
            if path:
                self._say(str(exc), error=True)

    def _say(self, text: str, error: bool = False) -> None:
        colour = STATE_COLOURS[WorkState.FAILED] if error else "#333"
        self.status.value = _html.block(f"<span style='color:{colour}'>{html.escape(text)}"
                                        "</span>")

    # --- the buttons ----------------------------------------------------------------

    def go(self, image: str | os.PathLike | None = None, level: int | None = None) -> BlurJob:
        """Press Go: blur ``image`` (default: the picked one) at ``level`` (default: the
        chosen one); returns the ``BlurJob``. A bad image raises, and says why in the app."""
        if image is not None:
            self.picker.value = YOUR_FILE
            self.path.value = os.fspath(image)
        if level is not None:
            self.level.value = level
        try:
            self.job = blur_o_matic(self.wm, self.image_path, self.level.value,
                                    requires_charging=self.requires_charging.value,
                                    radius=self.radius, strips=self.strips)
        except InvalidInputError as exc:
            self._say(str(exc), error=True)
            raise
        self._chain_shown = self.job.cleanup_id
        self.saved_path = None
        with self.saved.hold_sync():
            self.saved.layout.display = "none"
        self.saved_caption.value = ""
        return self.job

    def cancel(self) -> None:
        """Press Cancel: cancel the chain under way (the whole unique work)."""
        self.cancel_button.disabled = True
        self.wm.cancel_unique_work(IMAGE_MANIPULATION_WORK_NAME)

    def see_file(self) -> None:
        """Press See File: show the saved image and its path."""
        if not self.saved_path or not os.path.isfile(self.saved_path):
            return
        self.saved.value = thumbnail_bytes(self.saved_path, 360)
        self.saved.layout.display = ""
        self.saved_caption.value = _html.block(f"<code style='font-size:11px'>"
                                               f"{html.escape(self.saved_path)}</code>")

    def wait(self, timeout: float | None = None) -> list[WorkInfo]:
        """Block until the chain is finished and the app, its preview and its table show
        it (so a notebook executed headless saves the final state); return its infos."""
        infos = super().wait(timeout)
        self.preview.wait(timeout)
        self.table.wait(timeout)
        return infos

    # --- live -----------------------------------------------------------------------

    def _adopt(self, infos: list[WorkInfo]) -> None:
        """Show the image and level of a chain this app did not start (one enqueued before
        a kernel restart, in another notebook, or by ``nbwork blur``), once per chain."""
        first = [i for i in infos if not i.prerequisites]
        blurs = [i for i in infos if i.worker_name.endswith(".BlurWorker")]
        if not first or first[0].id == self._chain_shown or not blurs:
            return
        self._chain_shown = first[0].id
        image = next((str(i.input_data[KEY_IMAGE_URI]) for i in blurs
                      if KEY_IMAGE_URI in i.input_data), None)
        if image:
            samples = [value for _, value in self.picker.options]
            if image in samples:
                self.path.value = ""
                self.picker.value = image
            else:
                self.path.value = image  # selects "your own image"
        if len(blurs) in (level for _, level in LEVELS):
            self.level.value = len(blurs)

    def _draw(self, infos: list[WorkInfo]) -> None:
        self._adopt(infos)
        states = {i.state for i in infos}
        unfinished = [i for i in infos if not i.state.is_finished]
        with self.progress.hold_sync():
            self.progress.value = chain_progress(infos)
            self.progress.bar_style = (
                "danger" if WorkState.FAILED in states else
                "warning" if WorkState.CANCELLED in states else
                "success" if infos and states == {WorkState.SUCCEEDED} else "info")
        self.cancel_button.disabled = not unfinished
        saved = [i for i in infos if TAG_OUTPUT in i.tags and i.state is WorkState.SUCCEEDED]
        self.saved_path = saved[0].output_data.get(KEY_IMAGE_URI) if saved else None
        self.see_file_button.disabled = self.saved_path is None
        if not infos:
            self._say("Pick an image and a blur, then press Go.")
        elif WorkState.FAILED in states:
            error = next((i.error for i in infos if i.error), "") or ""
            self._say("Failed: " + (error_headline(error) or "a step failed"), error=True)
        elif WorkState.CANCELLED in states:
            self._say("Cancelled.")
        elif self.saved_path:
            self._say(f"Done: saved {self.saved_path}. Press See File.")
        else:
            running = [i for i in infos if i.state is WorkState.RUNNING]
            now = (running or unfinished)[0]
            done = sum(1 for i in infos if i.state is WorkState.SUCCEEDED)
            doing = "working on" if running else "waiting to run"
            why = None if running else why_waiting(
                now, {i.id: i for i in infos}, scheduler_state=self.wm.daemon.state())
            hint = f" ({why})" if why else ""
            self._say(f"Step {done + 1} of {len(infos)}: {doing} "
                      f"{_html.short_name(now.worker_name)}{hint}.")

    def close(self) -> None:
        self._stop_live()
        for child in self.children:
            close_tree(child)  # the preview and the table stop their own updates
        super().close()
