"""Where work runs, as the client names it: ``"local"`` or ``"dask://HOST:PORT"``.

Apart from the Dask executor on purpose: the client checks an address when a store is
opened, and that must not import an executor (``import nbwork`` in a kernel loads none).
"""

from __future__ import annotations

from .errors import InvalidInputError

DASK_PREFIX = "dask://"
EXTRA_HINT = "pip install 'nbwork[dask]'"


def check_executor(value: object) -> str:
    """``"local"`` or ``"dask://HOST:PORT"`` (``tcp://HOST:PORT`` is taken as the latter)."""
    text = value.strip() if isinstance(value, str) else None
    if text == "local":
        return text
    if text is not None:
        for prefix in (DASK_PREFIX, "tcp://"):
            if text.startswith(prefix):
                host, sep, port = text[len(prefix):].rpartition(":")
                if host and sep and port.isdigit() and 0 < int(port) < 65536 and "/" not in host:
                    return f"{DASK_PREFIX}{host}:{int(port)}"
    raise InvalidInputError(
        f"executor must be 'local' or 'dask://HOST:PORT' (the address of a running Dask "
        f"scheduler, e.g. 'dask://127.0.0.1:8786'), not {value!r}"
    )


def require_distributed() -> None:
    """Raise a polite ImportError when the optional ``distributed`` package is missing."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "running work on a Dask cluster needs the 'distributed' package, which is not "
            f"installed here: {EXTRA_HINT}"
        ) from exc
