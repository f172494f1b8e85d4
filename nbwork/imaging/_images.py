"""Blur-O-Matic's images: constants, checks before decoding, decoding, writing files.

The shared ground of the codelab chain (``_codelab``), batches (``_batch``) and hot folders
(``_hot_folder``); see the package docstring.
"""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from .._layout import BLUR_OUTPUTS_DIR, BLURRED_IMAGES_DIR
from ..data import Data
from ..errors import InvalidInputError
from ..manager import default_store_path
from ..worker import Worker

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
BLUR_DIR_NAME = BLUR_OUTPUTS_DIR
"""The blur output folder (temporary files) inside the store directory, by default."""
SAVED_DIR_NAME = BLURRED_IMAGES_DIR
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
SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"


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



def _stamp() -> str:
    return datetime.now().strftime("%Y-%m-%d-%H%M%S-%f")


def _one(value: Any) -> Any:
    """A scalar input that ``ArrayCreatingInputMerger`` may have wrapped in a list."""
    if isinstance(value, list):
        distinct = list(dict.fromkeys(value))
        if len(distinct) != 1:
            raise InvalidInputError(f"expected one value, got {value!r}")
        return distinct[0]
    return value


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

