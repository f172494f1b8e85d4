"""A worker killed while it writes an image leaves no truncated image behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nbwork.imaging import BLUR_DIR_NAME, CleanupWorker
from nbwork.testing import run_worker

KILLED_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from PIL import Image
from nbwork.imaging import _images

def save_then_die(self, fp, format=None, **params):
    fp.write(b"\\x89PNG\\r\\n\\x1a\\n" + b"\\0" * 1000)  # the start of a PNG...
    fp.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # ...then the cancel's SIGKILL

Image.Image.save = save_then_die
_images._write_png(Image.new("RGB", (64, 64)), Path(sys.argv[1]), _images.TEMP_PREFIX)
"""


@pytest.mark.slow
def test_a_blur_killed_while_writing_leaves_no_truncated_image(tmp_path):
    folder = tmp_path / BLUR_DIR_NAME
    done = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(folder)],
                          capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr
    left = sorted(p.name for p in folder.iterdir())
    assert left and not [name for name in left if name.endswith(".png")], left
    # The next chain's cleanup removes what the killed write left.
    result = run_worker(CleanupWorker, input_data={"output_dir": str(folder)})
    assert result.output_data["deleted"] == len(left)
    assert list(Path(folder).iterdir()) == []
