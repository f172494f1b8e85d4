"""The codelab's chain: ``CleanupWorker``, ``BlurWorker``, ``SaveImageToFileWorker`` and
``blur_o_matic``, which enqueues them as unique work (see the package docstring)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageFilter

from ..errors import InvalidInputError
from ..manager import WorkManager
from ..request import Constraints, ExistingWorkPolicy, OneTimeWorkRequest
from ..worker import Result, Worker
from ._images import (
    BLUR_DIR_NAME,
    DEFAULT_RADIUS,
    DEFAULT_STRIPS,
    IMAGE_MANIPULATION_WORK_NAME,
    KEY_IMAGE_URI,
    PARTIAL_PREFIX,
    SAVED_DIR_NAME,
    TAG_OUTPUT,
    TEMP_PREFIX,
    _check_level,
    _check_radius,
    _check_strips,
    _input_dir,
    _out_folder,
    _require_image_uri,
    _stamp,
    _strips,
    _write_png,
    check_image,
    open_image,
)


class CleanupWorker(Worker):
    """Deletes the temporary files (``blur-*.png``, and ``.writing-*`` left by a blur
    killed while writing) earlier blurs left in the blur output folder (input
    ``output_dir``, default ``blur_outputs`` in the store). Nothing else in the folder is
    touched, nor its sub-folders. Output: ``deleted`` (how many)."""

    def do_work(self) -> Result:
        folder = _input_dir(self.input_data, "output_dir", BLUR_DIR_NAME)
        deleted = 0
        if folder.is_dir():
            for pattern in (f"{TEMP_PREFIX}*.png", f"{PARTIAL_PREFIX}*"):
                for path in folder.glob(pattern):
                    if path.is_file() and not path.is_symlink():
                        path.unlink(missing_ok=True)
                        deleted += 1
        return Result.success({"deleted": deleted})


class BlurWorker(Worker):
    """Blurs the image at input ``image_uri`` into a new temporary PNG in the blur output
    folder (``output_dir``) and outputs its ``image_uri``.

    Optional input: ``radius`` (Gaussian radius in pixels, default 4), ``strips`` (the image
    is blurred in this many horizontal strips, default 8: progress is reported and a stop
    request is honoured between strips). A bad image raises ``BadImageError``.
    """

    def do_work(self) -> Result:
        source = _require_image_uri(self)
        radius = _check_radius(self.input_data.get("radius", DEFAULT_RADIUS))
        strips = _check_strips(self.input_data.get("strips", DEFAULT_STRIPS))
        folder = _input_dir(self.input_data, "output_dir", BLUR_DIR_NAME)
        self.set_progress({"percent": 0})
        image = open_image(source)
        width, height = image.size
        blurred = Image.new(image.mode, image.size)
        blur = ImageFilter.GaussianBlur(radius)
        pad = int(3 * radius) + 2  # beyond this a pixel's neighbours do not change its blur
        parts = _strips(height, strips)
        for done, (top, bottom) in enumerate(parts):
            if self.is_stopped:
                print(f"BlurWorker stopped after {done} of {len(parts)} strips of {source}")
                return Result.failure({"stopped": True})
            upper, lower = max(0, top - pad), min(height, bottom + pad)
            part = image.crop((0, upper, width, lower)).filter(blur)
            blurred.paste(part.crop((0, top - upper, width, bottom - upper)), (0, top))
            # The last percent is for writing the file.
            self.set_progress({"percent": int(99 * (done + 1) / len(parts))})
        if self.is_stopped:
            print(f"BlurWorker stopped before writing the blurred {source}")
            return Result.failure({"stopped": True})
        out = _write_png(blurred, folder, TEMP_PREFIX)
        self.set_progress({"percent": 100})
        return Result.success({KEY_IMAGE_URI: str(out)})


class SaveImageToFileWorker(Worker):
    """Copies the image at input ``image_uri`` into the saved-image folder (``out_dir``,
    default ``blurred_images`` in the store) as ``blurred-YYYY-MM-DD-HHMMSS-ffffff.png``, or
    as input ``file_name`` when given (replacing a file of that name). Outputs ``image_uri``
    of the saved copy. The copy appears complete or not at all."""

    def do_work(self) -> Result:
        source = Path(_require_image_uri(self))
        folder = _input_dir(self.input_data, "out_dir", SAVED_DIR_NAME)
        if not source.is_file():
            raise InvalidInputError(f"SaveImageToFileWorker: no image to save at {str(source)!r}")
        name = str(self.input_data.get("file_name") or f"blurred-{_stamp()}{source.suffix}")
        if os.sep in name or name in (".", ".."):
            raise InvalidInputError(f"SaveImageToFileWorker file_name must be a plain file "
                                    f"name, not {name!r}")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        fd, partial = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=folder)
        os.close(fd)
        try:
            shutil.copyfile(source, partial)
            os.chmod(partial, 0o644)
            if self.input_data.get("file_name"):
                os.replace(partial, target)
            else:
                target = _link_new(partial, target)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        return Result.success({KEY_IMAGE_URI: str(target)})


def _link_new(partial: str, target: Path) -> Path:
    """Give ``partial`` the name ``target`` (or ``target-N`` if taken), never replacing a file."""
    candidate, n = target, 1
    while True:
        try:
            try:
                os.link(partial, candidate)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links: reserve the name, then
                os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                os.replace(partial, candidate)  # the empty reservation becomes the copy
            return candidate
        except FileExistsError:
            candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
            n += 1


@dataclass(frozen=True)
class BlurJob:
    """What ``blur_o_matic`` enqueued: the ids of its steps, in order."""

    cleanup_id: str
    blur_ids: tuple[str, ...]
    save_id: str
    out_dir: str
    requests: tuple[OneTimeWorkRequest, ...] = field(default=(), repr=False, compare=False)
    """The enqueued requests, in the same order as ``ids``."""

    @property
    def ids(self) -> list[str]:
        return [self.cleanup_id, *self.blur_ids, self.save_id]


def blur_o_matic(wm: WorkManager, image: str | os.PathLike, level: int = 1,
                 out_dir: str | os.PathLike | None = None, requires_charging: bool = False,
                 *, radius: float = DEFAULT_RADIUS, strips: int = DEFAULT_STRIPS) -> BlurJob:
    """Enqueue the codelab's chain for ``image``: cleanup, ``level`` blurs, save.

    Unique work ``IMAGE_MANIPULATION_WORK_NAME`` with REPLACE (a blur already under way is
    cancelled); the save step is tagged ``TAG_OUTPUT`` and, with ``requires_charging``,
    waits for the charger. The saved image goes to ``out_dir`` (default
    ``blurred_images`` in the store); ``wm.wait(job.save_id).output_data["image_uri"]`` is
    its path. The image is checked (header only) before anything is enqueued. ``radius``
    and ``strips`` are passed to each ``BlurWorker``.
    """
    level = _check_level(level)
    radius = _check_radius(radius)
    strips = _check_strips(strips)
    source = os.path.abspath(os.path.expanduser(os.fspath(image)))
    check_image(source)
    store = Path(wm.store_path)
    saved = _out_folder(out_dir, store / SAVED_DIR_NAME)
    blur_dir = str(store / BLUR_DIR_NAME)
    cleanup = OneTimeWorkRequest(CleanupWorker, input_data={"output_dir": blur_dir})
    blurs = [OneTimeWorkRequest(BlurWorker, input_data={
        "output_dir": blur_dir, "radius": radius, "strips": strips,
        **({KEY_IMAGE_URI: source} if i == 0 else {})}) for i in range(level)]
    save = OneTimeWorkRequest(
        SaveImageToFileWorker, input_data={"out_dir": str(saved)}, tags=[TAG_OUTPUT],
        constraints=Constraints(requires_charging=True) if requires_charging else None)
    chain = wm.begin_unique_work(IMAGE_MANIPULATION_WORK_NAME, ExistingWorkPolicy.REPLACE,
                                 cleanup)
    for blur in blurs:
        chain = chain.then(blur)
    chain.then(save).enqueue()
    return BlurJob(cleanup.id, tuple(b.id for b in blurs), save.id, str(saved),
                   (cleanup, *blurs, save))


