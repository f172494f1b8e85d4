"""The client's checks of its arguments: each returns the value to use or raises an error
that names the value and the fix, before anything is written."""

from __future__ import annotations

import errno
import os
import stat
import uuid
from collections.abc import Iterable, Sequence
from typing import Union

from ._storedir import sharing_problem
from .errors import InvalidInputError, InvalidRequestError
from .request import WorkRequest, _check_worker
from .worker import is_worker_class

Requests = Union[WorkRequest, Sequence[WorkRequest]]


def as_request_list(requests: Requests, what: str = "requests") -> list[WorkRequest]:
    items = [requests] if isinstance(requests, WorkRequest) else list(requests)
    if not items:
        raise InvalidRequestError(f"{what} is empty; pass at least one work request")
    for item in items:
        if not isinstance(item, WorkRequest):
            raise InvalidRequestError(
                f"expected a OneTimeWorkRequest (or a list of them), got {type(item).__name__}"
            )
    return items


def check_distinct(requests: Iterable[WorkRequest]) -> None:
    seen: set[str] = set()
    for r in requests:
        if r.id in seen:
            raise InvalidRequestError(
                f"request {r!r} appears twice in this chain; each step needs its own "
                "request object (build another request with the same worker)"
            )
        seen.add(r.id)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidRequestError(f"a unique work name must be a non-empty string, not {name!r}")
    return name


def check_id(id: object) -> str:
    if isinstance(id, WorkRequest):
        return id.id
    if not isinstance(id, str):
        raise InvalidInputError(f"a work id is a string (request.id), not {type(id).__name__}")
    return id


def check_work_id(id: object) -> str:
    """A work id that names a file safely: a UUID, as every request's id is."""
    work_id = check_id(id)
    try:
        canonical = str(uuid.UUID(work_id))
    except ValueError:
        raise InvalidInputError(
            f"{work_id!r} is not a work id: a work id is a UUID such as "
            "'1b4e28ba-2fa1-11d2-883f-0016d3cca427' (request.id, or a WorkInfo's id)") from None
    return canonical


def check_watched_folder(folder: object) -> str:
    """The absolute path of a folder that may be watched, or a clear error."""
    if not isinstance(folder, (str, os.PathLike)):
        raise InvalidInputError(f"folder must be a path, not {type(folder).__name__}")
    path = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidInputError(
                f"cannot watch {path!r}: it is a symbolic link loop (too many levels of "
                "symbolic links); point it at a real folder") from None
        if exc.errno == errno.ENOENT:
            raise InvalidInputError(
                f"cannot watch {path!r}: it does not exist; create the folder first "
                f"(mkdir -p {path})") from None
        raise InvalidInputError(f"cannot watch {path!r}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidInputError(
            f"cannot watch {path!r}: it is a file, not a folder; watch the folder it is in")
    problem = sharing_problem(path, info, "the watched folder",
                              "whatever others drop there would run as your work, so make "
                              "it yours only", f"chmod go-w {path}")
    if problem:
        raise InvalidInputError(f"cannot watch it: {problem}")
    return path


def check_file_pattern(pattern: object) -> str:
    if not isinstance(pattern, str) or not pattern or os.sep in pattern:
        raise InvalidInputError(
            f"pattern must be a file-name pattern such as '*.png' (no folders), not "
            f"{pattern!r}")
    return pattern


def check_request_maker(request_for_file: object) -> bool:
    """Whether a hot folder's ``request_for_file`` is a Worker class (else a function)."""
    if is_worker_class(request_for_file):
        _check_worker(request_for_file)
        return True
    if not callable(request_for_file) or isinstance(request_for_file, WorkRequest):
        raise InvalidRequestError(
            f"request_for_file must be a Worker class or a function path -> "
            f"OneTimeWorkRequest, not {request_for_file!r}")
    return False
