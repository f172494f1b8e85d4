"""Make the README's screenshot of the Work panel: ``python tools/lab_screenshot.py``.

Blurs the sample images with ``nbwork batch`` in a temporary store, opens JupyterLab in
headless Chromium with the panel and the details tab of a blur step, and writes a small
palette PNG to ``docs/lab-panel.png``. Needs Chromium and playwright (as the browser tests).
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nbwork import WorkManager  # noqa: E402
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, lab_env, running_lab  # noqa: E402


def main() -> int:
    out = ROOT / "docs" / "lab-panel.png"
    base = Path(tempfile.mkdtemp(prefix="nbwork-screenshot-"))
    root, store = base / "root", base / "store"
    root.mkdir()
    subprocess.run([sys.executable, "-m", "nbwork.cli", "batch",
                    str(ROOT / "nbwork" / "samples"), "--level", "2", "--detach",
                    "--store", str(store)], check=True, env=lab_env(base, store),
                   capture_output=True)
    wm = WorkManager(store)
    infos = wm.wait([i.id for i in wm.get_work_infos()], timeout=300)
    blur = next(i for i in infos if i.worker_name.endswith("BlurWorker"))
    from playwright.sync_api import sync_playwright

    with running_lab(base, root, store) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 640})
            page.goto(f"{url}/lab?reset")
            page.locator("li.lm-TabBar-tab[data-id='nbwork-panel']").click()
            page.locator(f"#nbwork-panel .nbwork-Row[data-work-id='{blur.id}']").click()
            image = page.locator(".nbwork-Details .nbwork-Image").first
            image.wait_for()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                   arg=image.element_handle())
            png = page.screenshot()
        finally:
            browser.close()
    wm.daemon.stop()
    picture = Image.open(io.BytesIO(png)).convert("RGB")
    picture = picture.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    out.parent.mkdir(exist_ok=True)
    picture.save(out, optimize=True)
    print(f"{out}: {out.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
