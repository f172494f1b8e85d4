"""Make the sample images bundled in ``nbwork/samples/`` (Blur-O-Matic's picker, the demo).

Every image is drawn from code (numpy and Pillow) so the project owns it outright; each has
sharp, colourful edges so that a blur is plain to see. Deterministic: running it again gives
the same pixels. Run from the repository root:

    python tools/make_samples.py
"""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image, ImageDraw

OUT = pathlib.Path(__file__).resolve().parent.parent / "nbwork" / "samples"
W, H = 480, 360


def _hue_to_rgb(hue: np.ndarray) -> np.ndarray:
    """Fully saturated colours for hues in [0, 1): an (..., 3) uint8 array."""
    h6 = (hue[..., None] * 6.0 + np.array([5.0, 3.0, 1.0])) % 6.0
    rgb = 1.0 - np.clip(np.minimum(h6, 4.0 - h6), 0.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def rings() -> Image.Image:
    """Concentric rings of colour, each ring a sharp band."""
    y, x = np.mgrid[0:H, 0:W]
    r = np.hypot(x - W * 0.42, y - H * 0.55)
    band = (r // 18).astype(int)
    rgb = _hue_to_rgb((band % 12) / 12.0)
    rgb[(band % 2) == 1] = rgb[(band % 2) == 1] // 3 + 160
    return Image.fromarray(rgb)


def checkers() -> Image.Image:
    """A checkerboard whose squares sweep through the colours."""
    y, x = np.mgrid[0:H, 0:W]
    cell = 40
    cx, cy = x // cell, y // cell
    rgb = _hue_to_rgb(((cx + cy) % 10) / 10.0)
    dark = (cx + cy) % 2 == 1
    rgb[dark] = rgb[dark] // 5
    return Image.fromarray(rgb)


def mandelbrot() -> Image.Image:
    """The Mandelbrot set with banded colours (sharp steps between iteration counts)."""
    y, x = np.mgrid[0:H, 0:W]
    c = (x / W * 3.2 - 2.2) + 1j * (y / H * 2.4 - 1.2)
    z = np.zeros_like(c)
    count = np.zeros(c.shape, dtype=int)
    alive = np.ones(c.shape, dtype=bool)
    for i in range(48):
        z[alive] = z[alive] ** 2 + c[alive]
        escaped = alive & (np.abs(z) > 2)
        count[escaped] = i
        alive &= ~escaped
    rgb = _hue_to_rgb((count % 16) / 16.0)
    rgb[alive] = (20, 20, 40)
    return Image.fromarray(rgb)


def shapes() -> Image.Image:
    """Flat shapes on a banded sky: circles, boxes, triangles, thin lines."""
    y = np.repeat(np.arange(H)[:, None], W, axis=1)
    sky = np.stack([40 + (y // 24) * 10, 90 + (y // 24) * 8, 200 - (y // 24) * 6], -1)
    image = Image.fromarray(sky.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((330, 30, 430, 130), fill=(255, 210, 40))
    draw.polygon([(0, 360), (150, 150), (300, 360)], fill=(40, 120, 60))
    draw.polygon([(180, 360), (330, 190), (480, 360)], fill=(30, 90, 50))
    draw.rectangle((60, 250, 140, 330), fill=(200, 40, 40), outline=(255, 255, 255), width=4)
    draw.polygon([(55, 250), (100, 205), (145, 250)], fill=(120, 30, 30))
    for i in range(8):
        draw.line((0, 20 + i * 9, 260, 20 + i * 9), fill=(255, 255, 255), width=2)
    return image


def stripes() -> Image.Image:
    """Diagonal rainbow stripes (saved as JPEG, so the picker has one)."""
    y, x = np.mgrid[0:H, 0:W]
    stripe = ((x + y) // 30) % 8
    return Image.fromarray(_hue_to_rgb(stripe / 8.0))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in (("rings", rings), ("checkers", checkers), ("mandelbrot", mandelbrot),
                       ("shapes", shapes)):
        make().save(OUT / f"{name}.png", optimize=True)
    stripes().save(OUT / "stripes.jpg", quality=90)
    total = sum(p.stat().st_size for p in OUT.iterdir() if p.is_file())
    for path in sorted(OUT.iterdir()):
        print(f"{path.name:16} {path.stat().st_size:>8} bytes")
    print(f"{'total':16} {total:>8} bytes")


if __name__ == "__main__":
    main()
