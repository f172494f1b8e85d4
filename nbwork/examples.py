"""Small workers for demos, notebooks and tests (installed, so sent by reference)."""

from __future__ import annotations

import time

from .worker import Result, Worker, is_stopped, set_progress


def add(a: float, b: float) -> dict:
    """``{"sum": a + b}``."""
    return {"sum": a + b}


def count_to(n: int = 10, pause: float = 0.05) -> dict:
    """Count to ``n`` with a pause per step, reporting ``percent`` progress."""
    for i in range(1, n + 1):
        if is_stopped():
            break
        time.sleep(pause)
        set_progress({"percent": int(100 * i / n), "count": i})
    return {"count": n}


def square(count: int) -> dict:
    return {"square": count * count}


def total(square: list[int]) -> dict:
    """Sums a key merged by ``ArrayCreatingInputMerger`` (a list)."""
    return {"total": sum(square)}


class SleepWorker(Worker):
    """Sleeps ``seconds`` (default 60) in small steps; stops promptly when cancelled."""

    def do_work(self) -> Result:
        seconds = float(self.input_data.get("seconds", 60))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.is_stopped:
                return Result.failure({"stopped": True})
            left = deadline - time.monotonic()
            self.set_progress({"percent": int(100 * (1 - left / seconds)) if seconds else 100})
            time.sleep(min(0.1, max(0.0, left)))
        return Result.success({"slept": seconds})
