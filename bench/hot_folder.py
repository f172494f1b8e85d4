"""Hot-folder figures: a watch on a folder of 100,000 files (``python -m bench.hot_folder``).

1. **Idle cost**: with the watch on the big folder and nothing changing, the scheduler's CPU
   time (user + system) over a window, as % of one core (and of all of nbwork's processes);
   and the same scheduler's over a window before the watch was made (its heartbeat).
2. **Latency**: files dropped in one at a time while that watch runs: from the end of a
   file's last write to its work's start (``WorkInfo.start_time``, recorded by the
   scheduler when the attempt starts), p50 and p99. A file counts once it has not changed
   for ``settle`` seconds, so the figure to hold is p50 <= settle + 0.5 s.

The folder is filled before the watch starts, and the watch is made with ``existing=False``
(the files count as seen: their seen-state, 100,000 entries, is in the store), so the
figures are those of a big watched folder in its steady state.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import shutil
import tempfile
import time

from bench.harness import CpuMeter, NbworkStore, median, ms, percentile, poll
from nbwork import Result, Worker


class Noop(Worker):
    def do_work(self) -> Result:
        return Result.success()


def fill(folder: str, count: int) -> None:
    """``count`` small files in 100 sub-folders (as a camera archive would be)."""
    for i in range(count):
        sub = os.path.join(folder, f"d{i % 100:02d}")
        if i < 100:
            os.mkdir(sub)
        with open(os.path.join(sub, f"img{i:06d}.png"), "wb") as f:
            f.write(b"x" * 64)


def run(files: int, window: float, drops: int, settle: float) -> dict:
    root = tempfile.mkdtemp(prefix="nbwork-bench-hot-")
    folder = os.path.join(root, "inbox")
    os.mkdir(folder, 0o700)
    store = NbworkStore(os.path.join(root, "store"))
    try:
        began = time.monotonic()
        fill(folder, files)
        fill_s = time.monotonic() - began
        # The same scheduler before the watch: what it costs idle anyway (its heartbeat).
        store.start()
        baseline = CpuMeter(lambda: [p for p in [store.scheduler()] if p])
        baseline.start()
        time.sleep(window)
        before = baseline.stop()
        began = time.monotonic()
        watch = store.wm.watch_folder("bench", folder, Noop, pattern="*.png", settle=settle,
                                      existing=False)
        watch_s = time.monotonic() - began
        log = os.path.join(store.path, "scheduler.log")
        poll(lambda: "watching " + folder in pathlib.Path(log).read_text(), 120,
             "the watch to start", pause=0.1)
        time.sleep(2.0)  # the first listing's aftermath (memory, logs) is not steady state
        scheduler = CpuMeter(lambda: [p for p in [store.scheduler()] if p])
        everything = CpuMeter(store.processes)
        scheduler.start()
        everything.start()
        time.sleep(window)
        idle = scheduler.stop()
        idle_all = everything.stop()

        latencies = []
        for i in range(drops):
            path = os.path.join(folder, f"drop{i:03d}.png")
            with open(path, "wb") as f:
                f.write(os.urandom(4096))
            last_write = time.time()
            info = poll(lambda path=path: next(
                (x for x in store.wm.get_work_infos_by_tag(watch.tag)
                 if x.input_data.get("path") == path and x.start_time is not None), None),
                60, f"the work of {path}", pause=0.02)
            latencies.append(info.start_time.timestamp() - last_write)
            time.sleep(random.uniform(0.05, 0.3))
        with open(log) as f:
            listings = [line for line in f if "listed everything watched" in line]
        return {
            "full_listings_logged": [line.split("INFO ", 1)[-1].strip() for line in listings],
            "files": files, "settle_s": settle, "fill_s": round(fill_s, 1),
            "watch_folder_call_s": round(watch_s, 2),
            "idle_window_s": round(idle["wall_s"], 1),
            "scheduler_cpu_percent": round(idle["cpu_percent"], 3),
            "scheduler_cpu_percent_without_the_watch": round(before["cpu_percent"], 3),
            "all_processes_cpu_percent": round(idle_all["cpu_percent"], 3),
            "drops": drops,
            "write_to_running_p50_ms": ms(median(latencies)),
            "write_to_running_p99_ms": ms(percentile(latencies, 0.99)),
            "write_to_running_max_ms": ms(max(latencies)),
        }
    finally:
        store.wm.stop_watching("bench")
        store.stop()
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hot_folder")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=120.0,
                        help="seconds of idle CPU measurement")
    parser.add_argument("--drops", type=int, default=30)
    parser.add_argument("--settle", type=float, default=1.0)
    args = parser.parse_args(argv)
    result = run(args.files, args.window, args.drops, args.settle)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
