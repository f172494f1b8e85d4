"""What the benchmarks run: a no-op, and one image's blur pipeline done without nbwork.

Kept in a module of its own with no heavy globals: nbwork sends these functions by value
(``bench`` is not an installed package), exactly as it sends a function of a notebook cell.
"""

from __future__ import annotations


def noop(*args: object) -> None:
    """The no-op work of nbwork and of the process pool (arguments are ignored)."""
    return None


def blur_pipeline(source: str, blur_dir: str, out_dir: str, level: int, radius: float,
                  strips: int) -> str:
    """One image through the same code nbwork's batch runs (``BlurWorker`` × ``level``, then
    ``SaveImageToFileWorker``), in this process and without any store: the Pillow work of an
    nbwork branch, for the raw process pool and the sequential baseline. Returns the saved path.
    """
    import os

    from nbwork.imaging import KEY_IMAGE_URI, BlurWorker, SaveImageToFileWorker
    from nbwork.testing import run_worker

    uri = source
    for _ in range(level):
        result = run_worker(BlurWorker, {KEY_IMAGE_URI: uri, "source": source,
                                         "output_dir": blur_dir, "radius": radius,
                                         "strips": strips})
        uri = str(result.output_data[KEY_IMAGE_URI])
    name = f"blurred-{os.path.splitext(os.path.basename(source))[0]}.png"
    saved = run_worker(SaveImageToFileWorker, {KEY_IMAGE_URI: uri, "source": source,
                                               "out_dir": out_dir, "file_name": name})
    return str(saved.output_data[KEY_IMAGE_URI])


def global_carrier(size: int):
    """A function worker that refers to a global of ``size`` bytes, made as a notebook cell
    makes one (in ``__main__``), so it is pickled by value with that global: an image array,
    a DataFrame or a model a notebook function happens to use."""
    import os

    namespace = {"__name__": "__main__", "CAPTURED": os.urandom(size)}
    exec("def uses_global(n: int = 0) -> dict:\n    return {'size': len(CAPTURED)}\n",
         namespace)
    return namespace["uses_global"]
