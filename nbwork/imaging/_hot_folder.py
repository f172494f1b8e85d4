"""Blur-O-Matic's hot folder: a durable watch that blurs every file dropped into a folder."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import ImageFilter

from ..errors import InvalidInputError
from ..manager import FolderWatch, WorkManager
from ..request import OneTimeWorkRequest
from ..worker import Result, Worker
from ._images import (
    DEFAULT_RADIUS,
    KEY_IMAGE_URI,
    SAVED_DIR_NAME,
    _check_level,
    _input_dir,
    _out_folder,
    open_image,
)


class HotFolderBlurWorker(Worker):
    """Blur-O-Matic's hot folder step: blurs the image at input ``path`` (``level`` times
    the blur of one step) into ``out_dir`` as ``blurred-<name>.png``, replacing an earlier
    one of that name; outputs ``image_uri``. A file that is not an image fails this work
    only, with the reason."""

    def do_work(self) -> Result:
        source = Path(str(self.input_data["path"]))
        level = _check_level(self.input_data.get("level", 1))
        folder = _input_dir(self.input_data, "out_dir", SAVED_DIR_NAME)
        self.set_progress({"percent": 0})
        image = open_image(source)
        for done in range(level):
            if self.is_stopped:
                return Result.failure({"stopped": True})
            image = image.filter(ImageFilter.GaussianBlur(DEFAULT_RADIUS))
            self.set_progress({"percent": int(90 * (done + 1) / level)})
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"blurred-{source.stem}.png"
        fd, partial = tempfile.mkstemp(prefix=".saving-", suffix=".png", dir=folder)
        os.close(fd)
        try:
            image.save(partial, format="PNG")
            os.chmod(partial, 0o644)
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        self.set_progress({"percent": 100})
        return Result.success({KEY_IMAGE_URI: str(target), "source": str(source)})


@dataclass(frozen=True)
class HotFolderRequests:
    """The ``request_for_file`` of a Blur-O-Matic hot folder: one ``HotFolderBlurWorker``
    per file (a class, not a closure, so the scheduler loads it by name)."""

    level: int
    out_dir: str

    def __call__(self, path: str) -> OneTimeWorkRequest:
        return OneTimeWorkRequest(HotFolderBlurWorker, tags=[TAG_HOT_FOLDER], input_data={
            "path": path, "level": self.level, "out_dir": self.out_dir})


TAG_HOT_FOLDER = "blur-hot-folder"


def hot_folder_name(folder: str | os.PathLike) -> str:
    """The watch name ``hot_folder`` uses by default: ``hot-<folder name>``."""
    return "hot-" + (os.path.basename(os.path.abspath(os.fspath(folder))) or "root")


def hot_folder(wm: WorkManager, folder: str | os.PathLike, level: int = 1,
               out_dir: str | os.PathLike | None = None, *, name: str | None = None,
               settle: float = 1.0, existing: bool = True) -> FolderWatch:
    """Blur-O-Matic's hot folder: every file dropped into ``folder`` comes out blurred in
    ``out_dir`` (default ``blurred_images/<name>`` in the store), as a durable watch
    (``wm.watch_folder``) named ``name`` (default ``hot-<folder name>``). Stop it with
    ``wm.stop_watching(name)``; follow it with ``wm.get_work_infos_by_tag(watch.tag)``."""
    level = _check_level(level)
    name = name or hot_folder_name(folder)
    out = _out_folder(out_dir, Path(wm.store_path) / SAVED_DIR_NAME / name)
    source = os.path.realpath(os.path.expanduser(os.fspath(folder)))
    if os.path.realpath(out) == source or os.path.realpath(out).startswith(source + os.sep):
        raise InvalidInputError(
            f"the output folder {str(out)!r} is inside the watched folder {source!r}: every "
            "blurred image would be blurred again; give --out a folder outside it")
    return wm.watch_folder(name, folder, HotFolderRequests(level, str(out)), pattern="*",
                           settle=settle, existing=existing)

