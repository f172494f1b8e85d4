"""Driving real Jupyter kernels from tests (jupyter_client + ipykernel)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from jupyter_client import KernelManager


class KernelError(AssertionError):
    pass


def run(kc, code: str, timeout: float = 120) -> str:
    """Execute ``code`` in the kernel; return what it printed; raise on an error."""
    out: list[str] = []
    errors: list[str] = []

    def hook(msg: dict) -> None:
        kind = msg["header"]["msg_type"]
        content = msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind in ("execute_result", "display_data"):
            out.append(content["data"].get("text/plain", "") + "\n")
        elif kind == "error":
            errors.append("\n".join(content["traceback"]))

    reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    if errors or reply["content"]["status"] != "ok":
        raise KernelError("kernel raised:\n" + "\n".join(errors))
    return "".join(out)


@contextlib.contextmanager
def kernel(cwd: str, env: dict[str, str] | None = None) -> Iterator[tuple[KernelManager, object]]:
    """A started python3 kernel and its blocking client; shut down (by the manager) after."""
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=cwd, env={**os.environ, **(env or {})})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
