"""Blur-O-Matic: the WorkManager codelab's image workers, and batch blurs of whole folders.

Built on the public API only (workers, requests, ``WorkManager``), as a notebook user
would write it.

The codelab chain, ``blur_o_matic(wm, image, level)``::

    CleanupWorker -> BlurWorker x level (1-3) -> SaveImageToFileWorker (tagged OUTPUT)

enqueued as unique work ``IMAGE_MANIPULATION_WORK_NAME`` with ``ExistingWorkPolicy.REPLACE``
(starting a new blur cancels the previous one). Images travel between the steps as paths
(``KEY_IMAGE_URI``), never as pixels: ``Data`` is limited to 10 KB.

Folders (input keys of the workers; ``blur_o_matic`` and ``blur_batch`` fill them in):

- the *blur output folder* (``output_dir``) holds the temporary files the blur steps write,
  named ``blur-*.png``; ``CleanupWorker`` deletes those (and only those) files in it before
  a new chain starts. Default: ``blur_outputs`` inside the store directory.
- the *saved-image folder* (``out_dir``) receives the final images. Default:
  ``blurred_images`` inside the store directory.

Images are checked before they are decoded: a missing file, a file that is not an image,
a damaged or truncated one, or one larger than ``MAX_IMAGE_PIXELS`` (50 megapixels; read
from the header, so a decompression bomb is refused before it takes any memory) makes the
blur step fail with ``BadImageError`` naming the file and the reason; the message is the
last line of ``WorkInfo.error``. (Pillow's global ``Image.MAX_IMAGE_PIXELS`` is left alone:
changing it would change Pillow for everything else in the user's kernel.)

Batch blurs, ``blur_batch(wm, folder, level)``: one branch per image (``BlurWorker`` x level,
then ``SaveImageToFileWorker``), all branches in parallel, and a ``ContactSheetWorker`` that
builds a contact sheet PNG and a ``report.json`` of every image.

*Why the contact sheet does not depend on the branches.* In WorkManager a failed
prerequisite fails all its dependents, so a join that depends on every branch (the
codelab's ``combine(...).then(join)`` with ``ArrayCreatingInputMerger``) would fail as soon
as one image of the folder is bad, and the user would get no sheet and no report. Each bad
image must still fail its own branch (so ``WorkInfo`` says FAILED, with the reason). So the
contact sheet is enqueued in the same transaction as the branches but *without
prerequisites*; the branches carry a tag of their own batch, and the sheet worker reads
their ``WorkInfo`` through the public API (``WorkManager(store).get_work_infos``). Each
attempt waits for the branches for at most ``wait`` seconds (default 2 s), then, if some
are still unfinished, returns ``Result.retry()`` (linear backoff of 1 s): it never holds a
worker slot for long, so branches keep running even with a single worker process, and its
``run_attempt_count`` counts these checks. Once every branch is finished it draws the
succeeded images (and a marked tile for each failed or cancelled one), writes the report
naming each bad file with its error, removes the batch's temporary folder and succeeds.
If the branches are not all finished by the batch's deadline (``timeout``, default 24 h)
it fails, naming them.

``ContactSheetWorker`` also works as a classic join: given ``image_uri`` as a list (what
``ArrayCreatingInputMerger`` makes of its prerequisites' outputs) it draws those images;
that join fails with its first failed branch, as WorkManager's semantics say.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps, UnidentifiedImageError

from .data import Data
from .errors import InvalidInputError
from .explain import error_headline
from .info import WorkInfo, WorkQuery, WorkState
from .manager import FolderWatch, WorkContinuation, WorkManager, default_store_path
from .request import BackoffPolicy, Constraints, ExistingWorkPolicy, OneTimeWorkRequest
from .worker import Result, Worker

KEY_IMAGE_URI = "image_uri"
"""The input and output key of an image's path, as in the codelab."""
IMAGE_MANIPULATION_WORK_NAME = "image_manipulation_work"
"""The unique work name of the Blur-O-Matic chain."""
TAG_OUTPUT = "OUTPUT"
"""The tag of the save step, which the app observes."""
TAG_BATCH = "blur-batch"
"""Every work of every batch carries this tag (``nbwork cancel --tag blur-batch``)."""

MAX_IMAGE_PIXELS = 50_000_000
"""Images with more pixels than this (50 megapixels) are refused before being decoded."""
BLUR_DIR_NAME = "blur_outputs"
"""The blur output folder (temporary files) inside the store directory, by default."""
SAVED_DIR_NAME = "blurred_images"
"""The folder of saved images inside the store directory, by default."""
TEMP_PREFIX = "blur-"
"""The temporary files of ``BlurWorker`` are ``blur-*.png``; ``CleanupWorker`` deletes those."""
DEFAULT_RADIUS = 4.0
"""Gaussian blur radius of one blur step (pixels): level 3 is about radius 7 in all."""
DEFAULT_STRIPS = 8
"""A blur step works in this many horizontal strips: one progress report (and one check
for a stop request) per strip."""
LEVELS = (1, 2, 3)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")
"""The files of a folder that ``blur_batch`` takes as images (case-insensitive)."""
DEFAULT_BATCH_TIMEOUT = 24 * 3600.0
"""How long the contact sheet of a batch waits for its branches, at most (seconds)."""
SHEET_NAME = "contact-sheet.png"
REPORT_NAME = "report.json"
THUMB_SIZE = 200
MAX_SHEET_TILES = 400
"""A contact sheet shows at most this many images (20 x 20 tiles); the report lists all."""

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


class BadImageError(InvalidInputError):
    """An image that cannot be blurred: missing, not an image, damaged or too large."""


# --- images -----------------------------------------------------------------------------


def sample_images() -> list[Path]:
    """The sample images bundled with nbwork (drawn by ``tools/make_samples.py``)."""
    return sorted(p for p in SAMPLES_DIR.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _bad(path: str | os.PathLike, reason: str) -> BadImageError:
    return BadImageError(f"cannot blur {os.fspath(path)!r}: {reason}")


def _open_checked(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` lazily (header only) and check it exists, is an image and is not too big."""
    p = Path(path)
    if not p.exists():
        raise _bad(path, "no such file")
    if p.is_dir():
        raise _bad(path, "it is a folder, not an image file")
    try:
        with warnings.catch_warnings():  # over 89 MP Pillow warns; the check below refuses
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(p)
    except UnidentifiedImageError:
        raise _bad(path, "not an image file Pillow can read") from None
    except Image.DecompressionBombError:
        raise _bad(path, f"the image is over the limit of {MAX_IMAGE_PIXELS:,} pixels") from None
    except OSError as exc:
        raise _bad(path, exc.strerror or str(exc)) from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise _bad(path, f"{width}x{height} is {width * height / 1e6:.1f} megapixels, over the "
                         f"limit of {MAX_IMAGE_PIXELS / 1e6:g} megapixels")
    return image


def check_image(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image, read from its header; ``BadImageError`` if unusable."""
    image = _open_checked(path)
    size = image.size
    image.close()
    return size


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image for blurring: checked as ``check_image``, then loaded, turned upright
    (EXIF orientation) and converted to RGB, RGBA, L or LA."""
    image = _open_checked(path)
    try:
        with image:
            image.load()
            image = ImageOps.exif_transpose(image)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... on bad data
        reason = str(exc) or type(exc).__name__
        raise _bad(path, f"the file is damaged or truncated ({reason})") from None
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        alpha = "A" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if alpha else "RGB")
    return image


def _check_radius(radius: object) -> float:
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0 < radius <= 200:
        raise InvalidInputError(f"blur radius must be a number of pixels in (0, 200], "
                                f"not {radius!r}")
    return float(radius)


def _check_strips(strips: object) -> int:
    if isinstance(strips, bool) or not isinstance(strips, int) or not 1 <= strips <= 10_000:
        raise InvalidInputError(f"blur strips must be a whole number from 1 to 10000, "
                                f"not {strips!r}")
    return strips


def _strips(height: int, count: int) -> list[tuple[int, int]]:
    count = max(1, min(count, height))
    edges = [round(i * height / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _input_dir(data: Data, key: str, default_name: str) -> Path:
    """A folder from input ``key``; else ``default_name`` inside the input ``store``, else
    inside the default store (``$NBWORK_HOME`` or the per-user one)."""
    value = data.get(key)
    if value:
        return Path(str(value))
    store = data.get("store") or default_store_path()
    return Path(str(store)) / default_name


def _require_image_uri(worker: Worker) -> str:
    uri = worker.input_data.get(KEY_IMAGE_URI)
    if not isinstance(uri, str) or not uri:
        raise InvalidInputError(
            f"{type(worker).__name__} needs input {KEY_IMAGE_URI!r} (the path of an image), "
            f"got {worker.input_data.to_dict()!r}")
    return uri


PARTIAL_PREFIX = ".writing-"
"""Files being written carry this prefix (and no image suffix) until they are complete."""


def _write_png(image: Image.Image, folder: Path, prefix: str) -> Path:
    """Write ``image`` as a new ``prefix*.png`` in ``folder``. It is written under a
    temporary name and renamed once complete, so a worker killed mid-write (a cancel that
    ran out of grace) leaves no truncated image, only a ``.writing-*`` file that
    ``CleanupWorker`` removes."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, "PNG")
        target = folder / f"{prefix}{uuid.uuid4().hex}.png"
        os.replace(partial, target)
    except BaseException:
        os.unlink(partial)
        raise
    return target


# --- the codelab's workers --------------------------------------------------------------


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


def _stamp() -> str:
    return datetime.now().strftime("%Y-%m-%d-%H%M%S-%f")


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


# --- the contact sheet ------------------------------------------------------------------


def _one(value: Any) -> Any:
    """A scalar input that ``ArrayCreatingInputMerger`` may have wrapped in a list."""
    if isinstance(value, list):
        distinct = list(dict.fromkeys(value))
        if len(distinct) != 1:
            raise InvalidInputError(f"expected one value, got {value!r}")
        return distinct[0]
    return value


def _thumbnail(path: str) -> Image.Image | None:
    try:
        with _open_checked(path) as image:
            image.thumbnail((THUMB_SIZE, THUMB_SIZE))
            return image.convert("RGB")
    except Exception:  # deleted or damaged since it was saved: the tile says so
        return None


def _tile(path: str | None, label: str, note: str | None) -> Image.Image:
    tile = Image.new("RGB", (THUMB_SIZE, THUMB_SIZE + 24), (245, 245, 245))
    draw = ImageDraw.Draw(tile)
    thumb = _thumbnail(path) if path else None
    if path and thumb is None:
        path, note = None, "UNREADABLE"
    if thumb is not None:
        tile.paste(thumb, ((THUMB_SIZE - thumb.width) // 2, (THUMB_SIZE - thumb.height) // 2))
    else:
        draw.rectangle((0, 0, THUMB_SIZE - 1, THUMB_SIZE - 1), fill=(90, 20, 20))
        draw.line((0, 0, THUMB_SIZE, THUMB_SIZE), fill=(220, 60, 60), width=3)
        draw.line((0, THUMB_SIZE, THUMB_SIZE, 0), fill=(220, 60, 60), width=3)
        draw.text((8, 8), note or "FAILED", fill=(255, 255, 255), font=ImageFont.load_default())
    draw.text((4, THUMB_SIZE + 5), label[:30], fill=(0, 0, 0), font=ImageFont.load_default())
    return tile


def make_contact_sheet(entries: Sequence[tuple[str | None, str, str | None]],
                       target: Path) -> Path:
    """Draw ``(image path or None, label, note)`` entries as a grid of thumbnails into
    ``target`` (PNG); an entry without an image is a crossed-out tile showing ``note``.
    Only the first ``MAX_SHEET_TILES`` entries are drawn."""
    entries = list(entries)[:MAX_SHEET_TILES]
    count = max(1, len(entries))
    columns = min(count, max(1, round(count ** 0.5 + 0.49)))
    rows = -(-count // columns)
    gap = 8
    sheet = Image.new("RGB", (columns * (THUMB_SIZE + gap) + gap,
                              rows * (THUMB_SIZE + 24 + gap) + gap), (255, 255, 255))
    for index, (path, label, note) in enumerate(entries):
        row, column = divmod(index, columns)
        sheet.paste(_tile(path, label, note), (gap + column * (THUMB_SIZE + gap),
                                               gap + row * (THUMB_SIZE + 24 + gap)))
    return _write_final(target, lambda f: sheet.save(f, "PNG"))


def _write_final(target: Path, write: Any) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    except BaseException:
        os.unlink(partial)
        raise
    return target


@dataclass
class _Entry:
    source: str
    state: str
    image_uri: str | None = None
    error: str | None = None


def _branch_entries(infos: list[WorkInfo]) -> list[_Entry]:
    """One entry per source image, from the WorkInfos of the batch's branches."""
    branches: dict[str, list[WorkInfo]] = {}
    for info in infos:
        branches.setdefault(str(info.input_data.get("source", "?")), []).append(info)
    entries = []
    for source, branch in branches.items():
        states = {i.state for i in branch}
        if WorkState.FAILED in states:
            errors = [error_headline(i.error) for i in branch if i.error]
            entries.append(_Entry(source, "FAILED", error=errors[0] if errors else
                                  "a step of this branch failed"))
        elif WorkState.CANCELLED in states:
            entries.append(_Entry(source, "CANCELLED", error="cancelled"))
        elif all(i.state is WorkState.SUCCEEDED for i in branch):
            saved = [i for i in branch if i.worker_name.endswith(".SaveImageToFileWorker")]
            uri = saved[0].output_data.get(KEY_IMAGE_URI) if saved else None
            entries.append(_Entry(source, "SUCCEEDED", image_uri=uri))
        else:
            entries.append(_Entry(source, "UNFINISHED", error="not finished"))
    return sorted(entries, key=lambda e: e.source)


class ContactSheetWorker(Worker):
    """Builds a contact sheet PNG (and ``report.json``) of blurred images in ``out_dir``.

    Batch mode (what ``blur_batch`` enqueues): input ``batch_tag`` and ``store``; waits for
    every work tagged ``batch_tag`` to finish (``wait`` seconds per attempt, then
    ``Result.retry()``; fails after the epoch time ``deadline``), reports each source image
    as SUCCEEDED, FAILED (with the error) or CANCELLED, and removes ``blur_dir`` (the
    batch's temporary folder) when done.

    Join mode: input ``image_uri`` as a list (``ArrayCreatingInputMerger`` over the
    prerequisites' outputs): draws those images.

    Output: ``contact_sheet``, ``report`` (paths), ``succeeded``, ``failed`` (counts) and
    ``failed_files`` (up to 20 file names).
    """

    def do_work(self) -> Result:
        data = self.input_data
        out_dir = Path(str(_one(data.get("out_dir")) or ""))
        if not str(out_dir) or str(out_dir) == ".":
            raise InvalidInputError("ContactSheetWorker needs input 'out_dir' (a folder)")
        tag = _one(data.get("batch_tag"))
        if tag:
            entries = self._settle(str(tag))
            if entries is None:
                return Result.retry()
            if self.is_stopped:
                return Result.failure({"stopped": True})
        else:
            uris = data.get(KEY_IMAGE_URI)
            uris = uris if isinstance(uris, list) else [uris] if uris else []
            entries = [_Entry(str(u), "SUCCEEDED", image_uri=str(u)) for u in uris]
        sheet = make_contact_sheet(
            [(e.image_uri, Path(e.source).name, e.state if e.state != "SUCCEEDED" else None)
             for e in entries], out_dir / SHEET_NAME)
        failed = [e for e in entries if e.state != "SUCCEEDED"]
        report = {
            "batch": tag, "folder": _one(data.get("folder")), "created": datetime.now().isoformat(),
            "total": len(entries),
            "succeeded": len(entries) - len(failed), "failed": len(failed),
            "contact_sheet": str(sheet),
            "images": [{"source": e.source, "state": e.state, "image_uri": e.image_uri,
                        "error": e.error} for e in entries],
        }
        expected = _one(data.get("total"))
        if tag and expected is not None and int(expected) > len(entries):
            report["total"] = int(expected)
            report["missing"] = int(expected) - len(entries)
            report["note"] = (f"{report['missing']} image(s) of this batch were forgotten "
                              "(pruned) before the contact sheet was made")
        report_path = _write_final(out_dir / REPORT_NAME,
                                   lambda f: f.write(json.dumps(report, indent=2).encode()))
        blur_dir = _one(data.get("blur_dir"))
        if blur_dir:
            shutil.rmtree(str(blur_dir), ignore_errors=True)
        return Result.success({
            "contact_sheet": str(sheet), "report": str(report_path),
            "succeeded": len(entries) - len(failed), "failed": len(failed),
            "failed_files": [Path(e.source).name for e in failed[:20]],
        })

    def _settle(self, tag: str) -> list[_Entry] | None:
        """The batch's entries once every branch is finished; None to try again later."""
        data = self.input_data
        wm = WorkManager(str(_one(data["store"])))
        query = WorkQuery(tags=[tag])
        wait = float(_one(data.get("wait", 2.0)))
        until = time.monotonic() + wait
        while True:
            infos = wm.get_work_infos(query)
            finished = sum(1 for i in infos if i.state.is_finished)
            if finished == len(infos) or self.is_stopped:
                return _branch_entries(infos)
            self.set_progress({"percent": int(100 * finished / max(1, len(infos))),
                               "finished": finished, "total": len(infos)})
            deadline = _one(data.get("deadline"))
            if deadline is not None and time.time() > float(deadline):
                waiting = sorted({Path(str(i.input_data.get("source", "?"))).name
                                  for i in infos if not i.state.is_finished})
                raise TimeoutError(
                    f"the batch {tag} was not finished by its deadline; still waiting for "
                    f"{len(waiting)} image(s): {', '.join(waiting[:10])}")
            left = until - time.monotonic()
            if left <= 0:
                return None
            try:
                wm.wait(query, timeout=min(0.25, left))
            except TimeoutError:
                pass


# --- enqueueing -------------------------------------------------------------------------


def _check_level(level: object) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or level not in LEVELS:
        raise InvalidInputError(f"blur level must be 1, 2 or 3 (how many blur steps), "
                                f"not {level!r}")
    return level


def _out_folder(out_dir: str | os.PathLike | None, default: Path) -> Path:
    """The output folder, checked before anything is enqueued: it exists or can be
    created, and can be written (a worker finding out later would fail the whole job)."""
    folder = Path(os.path.abspath(os.path.expanduser(os.fspath(out_dir)))) if out_dir \
        else default
    if folder.exists() and not folder.is_dir():
        raise InvalidInputError(f"output folder {str(folder)!r} is a file; give a folder")
    existing = folder
    while not existing.exists():  # the folder the workers will create it in
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidInputError(f"output folder {str(folder)!r} cannot be created: "
                                f"{str(existing)!r} is a file; give another folder")
    try:  # a real write, not os.access: right for root, read-only mounts and ACLs too
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        what = "cannot be written" if existing == folder else "cannot be created"
        raise InvalidInputError(f"output folder {str(folder)!r} {what}: a file cannot be "
                                f"written in {str(existing)!r} ({exc.strerror}); give "
                                "another folder") from None
    return folder


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


@dataclass(frozen=True)
class BatchJob:
    """What ``blur_batch`` enqueued: a branch per image and the contact sheet."""

    tag: str
    sheet_id: str
    out_dir: str
    branches: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """source path -> ids of its branch (blurs, then save)."""

    @property
    def ids(self) -> list[str]:
        return [i for ids in self.branches.values() for i in ids] + [self.sheet_id]


def folder_images(folder: str | os.PathLike) -> list[Path]:
    """The image files (by suffix, see ``IMAGE_SUFFIXES``) directly in ``folder``, sorted."""
    path = Path(os.path.expanduser(os.fspath(folder)))
    if not path.is_dir():
        raise InvalidInputError(f"{os.fspath(folder)!r} is not a folder" if path.exists()
                                else f"no such folder: {os.fspath(folder)!r}")
    return sorted(p.resolve() for p in path.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def blur_batch(wm: WorkManager, folder: str | os.PathLike, level: int = 1,
               out_dir: str | os.PathLike | None = None, *, radius: float = DEFAULT_RADIUS,
               strips: int = DEFAULT_STRIPS, timeout: float = DEFAULT_BATCH_TIMEOUT) -> BatchJob:
    """Blur every image of ``folder`` in parallel branches, then make a contact sheet.

    Each image's branch is ``level`` blurs then a save as ``blurred-<name>.png`` in
    ``out_dir`` (default: a new ``batch-<time>`` folder in ``blurred_images`` of the store);
    a bad image fails its own branch only. ``ContactSheetWorker`` (``job.sheet_id``) then
    writes ``contact-sheet.png`` and ``report.json`` there; see the module docstring.
    """
    level = _check_level(level)
    radius = _check_radius(radius)
    strips = _check_strips(strips)
    images = folder_images(folder)
    if not images:
        raise InvalidInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in "
                                f"{os.fspath(folder)!r}")
    if not timeout > 0:
        raise InvalidInputError(f"timeout must be more than 0 seconds, not {timeout!r}")
    store = Path(wm.store_path)
    batch = uuid.uuid4().hex[:8]
    tag = f"{TAG_BATCH}-{batch}"
    saved = _out_folder(out_dir, store / SAVED_DIR_NAME / f"batch-{_stamp()[:17]}-{batch}")
    blur_dir = store / BLUR_DIR_NAME / f"batch-{batch}"
    names: set[str] = set()
    branches: dict[str, tuple[str, ...]] = {}
    chains: list[WorkContinuation] = []
    for image in images:
        name = f"blurred-{image.stem}.png"
        if name in names:  # photo.png and photo.jpg
            name = f"blurred-{image.stem}-{image.suffix.lstrip('.').lower()}.png"
        names.add(name)
        common = {"source": str(image)}
        steps = [OneTimeWorkRequest(BlurWorker, tags=[TAG_BATCH, tag], input_data={
            **common, "output_dir": str(blur_dir), "radius": radius, "strips": strips,
            **({KEY_IMAGE_URI: str(image)} if i == 0 else {})}) for i in range(level)]
        steps.append(OneTimeWorkRequest(SaveImageToFileWorker, tags=[TAG_BATCH, tag], input_data={
            **common, "out_dir": str(saved), "file_name": name}))
        chain = wm.begin_with(steps[0])
        for step in steps[1:]:
            chain = chain.then(step)
        chains.append(chain)
        branches[str(image)] = tuple(s.id for s in steps)
    sheet = OneTimeWorkRequest(
        ContactSheetWorker, tags=[TAG_BATCH, f"{tag}-sheet"],
        backoff_policy=BackoffPolicy.LINEAR, backoff_delay=1.0,
        input_data={"batch_tag": tag, "store": str(store), "out_dir": str(saved),
                    "blur_dir": str(blur_dir), "folder": str(Path(folder).resolve()),
                    "total": len(images), "deadline": time.time() + float(timeout)})
    # One transaction: the branches and the sheet are enqueued together or not at all.
    WorkContinuation.combine([*chains, wm.begin_with(sheet)]).enqueue()
    return BatchJob(tag, sheet.id, str(saved), branches)


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


__all__ = [
    "BadImageError", "BatchJob", "BlurJob", "BlurWorker", "CleanupWorker",
    "ContactSheetWorker", "HotFolderBlurWorker", "HotFolderRequests",
    "IMAGE_MANIPULATION_WORK_NAME", "KEY_IMAGE_URI",
    "MAX_IMAGE_PIXELS", "SaveImageToFileWorker", "TAG_BATCH", "TAG_OUTPUT",
    "TAG_HOT_FOLDER", "blur_batch", "blur_o_matic", "check_image", "hot_folder",
    "hot_folder_name",
    "folder_images", "make_contact_sheet", "open_image", "sample_images",
]
