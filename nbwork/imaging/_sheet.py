"""Contact sheets: a grid of thumbnails, failed images crossed out, written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ._images import PARTIAL_PREFIX, _open_checked

THUMB_SIZE = 200
MAX_SHEET_TILES = 400
"""A contact sheet shows at most this many images (20 x 20 tiles); the report lists all."""


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


