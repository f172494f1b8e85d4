"""Batch blurs: a branch per image of a folder, then a contact sheet and a report.

(The design, and why the sheet runs after its branches *finished* rather than succeeded,
is in the package docstring.)
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..errors import InvalidInputError
from ..explain import error_headline
from ..info import WorkInfo, WorkQuery, WorkState
from ..manager import WorkContinuation, WorkManager
from ..request import OneTimeWorkRequest, RunAfter
from ..worker import Result, Worker
from ._codelab import BlurWorker, SaveImageToFileWorker
from ._images import (
    BLUR_DIR_NAME,
    DEFAULT_RADIUS,
    DEFAULT_STRIPS,
    IMAGE_SUFFIXES,
    KEY_IMAGE_URI,
    SAVED_DIR_NAME,
    TAG_BATCH,
    _check_level,
    _check_radius,
    _check_strips,
    _one,
    _out_folder,
    _stamp,
)
from ._sheet import _write_final, make_contact_sheet

DEFAULT_BATCH_TIMEOUT = 24 * 3600.0
"""``blur_batch``'s ``timeout`` (seconds): how long the polling sheet of an earlier version
waited for its branches, at most. Today's sheet waits as their dependent, without one."""
SHEET_NAME = "contact-sheet.png"
REPORT_NAME = "report.json"


@dataclass
class _Entry:
    source: str
    state: str
    image_uri: str | None = None
    error: str | None = None


def _branch_entries(infos: list[WorkInfo]) -> list[_Entry]:
    """One entry per source image, from the WorkInfos of the batch's branches."""
    branches: dict[str, list[WorkInfo]] = {}
    for info in infos:
        branches.setdefault(str(info.input_data.get("source", "?")), []).append(info)
    entries = []
    for source, branch in branches.items():
        states = {i.state for i in branch}
        if WorkState.FAILED in states:
            errors = [error_headline(i.error) for i in branch if i.error]
            entries.append(_Entry(source, "FAILED", error=errors[0] if errors else
                                  "a step of this branch failed"))
        elif WorkState.CANCELLED in states:
            entries.append(_Entry(source, "CANCELLED", error="cancelled"))
        elif all(i.state is WorkState.SUCCEEDED for i in branch):
            saved = [i for i in branch if i.worker_name.endswith(".SaveImageToFileWorker")]
            uri = saved[0].output_data.get(KEY_IMAGE_URI) if saved else None
            entries.append(_Entry(source, "SUCCEEDED", image_uri=uri))
        else:
            entries.append(_Entry(source, "UNFINISHED", error="not finished"))
    return sorted(entries, key=lambda e: e.source)


class ContactSheetWorker(Worker):
    """Builds a contact sheet PNG (and ``report.json``) of blurred images in ``out_dir``.

    Batch mode (what ``blur_batch`` enqueues): input ``batch_tag``, ``store`` and
    ``after_branches``: the sheet runs after its batch's branches with
    ``RunAfter.ALL_FINISHED``, so every work tagged ``batch_tag`` is finished when it runs;
    it reads their ``WorkInfo``, reports each source image as SUCCEEDED, FAILED (with the
    error) or CANCELLED, and removes ``blur_dir`` (the batch's temporary folder). Without
    ``after_branches`` (a sheet enqueued by an earlier nbwork, which a store may still
    hold) it polls instead: it waits for the batch ``wait`` seconds per attempt,
    then returns ``Result.retry()``, and fails after the epoch time ``deadline``.

    Join mode: input ``image_uri`` as a list (``ArrayCreatingInputMerger`` over the
    prerequisites' outputs): draws those images.

    Output: ``contact_sheet``, ``report`` (paths), ``succeeded``, ``failed`` (counts) and
    ``failed_files`` (up to 20 file names).
    """

    def do_work(self) -> Result:
        data = self.input_data
        out_dir = Path(str(_one(data.get("out_dir")) or ""))
        if not str(out_dir) or str(out_dir) == ".":
            raise InvalidInputError("ContactSheetWorker needs input 'out_dir' (a folder)")
        tag = _one(data.get("batch_tag"))
        batch_finished = True
        if tag:
            found = self._batch_entries(str(tag))
            if found is None:
                return Result.retry()
            if self.is_stopped:
                return Result.failure({"stopped": True})
            entries, batch_finished = found
        else:
            uris = data.get(KEY_IMAGE_URI)
            uris = uris if isinstance(uris, list) else [uris] if uris else []
            entries = [_Entry(str(u), "SUCCEEDED", image_uri=str(u)) for u in uris]
        sheet = make_contact_sheet(
            [(e.image_uri, Path(e.source).name, e.state if e.state != "SUCCEEDED" else None)
             for e in entries], out_dir / SHEET_NAME)
        failed = [e for e in entries if e.state != "SUCCEEDED"]
        report_path = _write_final(out_dir / REPORT_NAME, lambda f: f.write(json.dumps(
            self._report(tag, entries, failed, sheet), indent=2).encode()))
        blur_dir = _one(data.get("blur_dir"))
        # A step still running (its branch's save was cancelled by id) may write there yet.
        if blur_dir and batch_finished:
            shutil.rmtree(str(blur_dir), ignore_errors=True)
        return Result.success({
            "contact_sheet": str(sheet), "report": str(report_path),
            "succeeded": len(entries) - len(failed), "failed": len(failed),
            "failed_files": [Path(e.source).name for e in failed[:20]],
        })

    def _report(self, tag: str | None, entries: list[_Entry], failed: list[_Entry],
                sheet: Path) -> dict:
        data = self.input_data
        report = {
            "batch": tag, "folder": _one(data.get("folder")), "created": datetime.now().isoformat(),
            "total": len(entries),
            "succeeded": len(entries) - len(failed), "failed": len(failed),
            "contact_sheet": str(sheet),
            "images": [{"source": e.source, "state": e.state, "image_uri": e.image_uri,
                        "error": e.error} for e in entries],
        }
        expected = _one(data.get("total"))
        if tag and expected is not None and int(expected) > len(entries):
            report["total"] = int(expected)
            report["missing"] = int(expected) - len(entries)
            report["note"] = (f"{report['missing']} image(s) of this batch were forgotten "
                              "(pruned) before the contact sheet was made")
        return report

    def _batch_entries(self, tag: str) -> tuple[list[_Entry], bool] | None:
        """The batch's entries, and whether every work of the batch is finished; None to
        try again later (a sheet of an earlier version only)."""
        data = self.input_data
        if not _one(data.get("after_branches")):
            entries = self._settle(tag)
            return None if entries is None else (entries, True)
        # Run after every branch's last step finished (RunAfter.ALL_FINISHED): one read.
        infos = WorkManager(str(_one(data["store"]))).get_work_infos(WorkQuery(tags=[tag]))
        return _branch_entries(infos), all(i.state.is_finished for i in infos)

    def _settle(self, tag: str) -> list[_Entry] | None:
        """The batch's entries once every branch is finished; None to try again later.
        (How sheets enqueued without ``after_branches``, by earlier versions, wait.)"""
        data = self.input_data
        wm = WorkManager(str(_one(data["store"])))
        query = WorkQuery(tags=[tag])
        wait = float(_one(data.get("wait", 2.0)))
        until = time.monotonic() + wait
        while True:
            infos = wm.get_work_infos(query)
            finished = sum(1 for i in infos if i.state.is_finished)
            if finished == len(infos) or self.is_stopped:
                return _branch_entries(infos)
            self.set_progress({"percent": int(100 * finished / max(1, len(infos))),
                               "finished": finished, "total": len(infos)})
            deadline = _one(data.get("deadline"))
            if deadline is not None and time.time() > float(deadline):
                waiting = sorted({Path(str(i.input_data.get("source", "?"))).name
                                  for i in infos if not i.state.is_finished})
                raise TimeoutError(
                    f"the batch {tag} was not finished by its deadline; still waiting for "
                    f"{len(waiting)} image(s): {', '.join(waiting[:10])}")
            left = until - time.monotonic()
            if left <= 0:
                return None
            try:
                wm.wait(query, timeout=min(0.25, left))
            except TimeoutError:
                pass


@dataclass(frozen=True)
class BatchJob:
    """What ``blur_batch`` enqueued: a branch per image and the contact sheet."""

    tag: str
    sheet_id: str
    out_dir: str
    branches: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """source path -> ids of its branch (blurs, then save)."""

    @property
    def ids(self) -> list[str]:
        return [i for ids in self.branches.values() for i in ids] + [self.sheet_id]


def folder_images(folder: str | os.PathLike) -> list[Path]:
    """The image files (by suffix, see ``IMAGE_SUFFIXES``) directly in ``folder``, sorted."""
    path = Path(os.path.expanduser(os.fspath(folder)))
    if not path.is_dir():
        raise InvalidInputError(f"{os.fspath(folder)!r} is not a folder" if path.exists()
                                else f"no such folder: {os.fspath(folder)!r}")
    return sorted(p.resolve() for p in path.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def blur_batch(wm: WorkManager, folder: str | os.PathLike, level: int = 1,
               out_dir: str | os.PathLike | None = None, *, radius: float = DEFAULT_RADIUS,
               strips: int = DEFAULT_STRIPS, timeout: float = DEFAULT_BATCH_TIMEOUT) -> BatchJob:
    """Blur every image of ``folder`` in parallel branches, then make a contact sheet.

    Each image's branch is ``level`` blurs then a save as ``blurred-<name>.png`` in
    ``out_dir`` (default: a new ``batch-<time>`` folder in ``blurred_images`` of the store);
    a bad image fails its own branch only. ``ContactSheetWorker`` (``job.sheet_id``) runs
    once every branch is finished, whatever it ended as, and writes ``contact-sheet.png``
    and ``report.json`` there; see the package docstring. ``timeout`` (seconds, > 0) is
    checked and kept for calls written for earlier versions, whose sheet polled for its
    branches until then; the sheet now waits as their dependent, which needs no deadline.
    """
    level = _check_level(level)
    radius = _check_radius(radius)
    strips = _check_strips(strips)
    images = folder_images(folder)
    if not images:
        raise InvalidInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in "
                                f"{os.fspath(folder)!r}")
    if not timeout > 0:
        raise InvalidInputError(f"timeout must be more than 0 seconds, not {timeout!r}")
    store = Path(wm.store_path)
    batch = uuid.uuid4().hex[:8]
    tag = f"{TAG_BATCH}-{batch}"
    saved = _out_folder(out_dir, store / SAVED_DIR_NAME / f"batch-{_stamp()[:17]}-{batch}")
    blur_dir = store / BLUR_DIR_NAME / f"batch-{batch}"
    branches = {str(image): steps for image, steps in zip(images, _branches(
        images, tag, level, {"output_dir": str(blur_dir), "radius": radius, "strips": strips},
        str(saved)), strict=True)}
    # Not failed by a bad image's FAILED branch: it runs once all branches are finished.
    sheet = OneTimeWorkRequest(
        ContactSheetWorker, tags=[TAG_BATCH, f"{tag}-sheet"], run_after=RunAfter.ALL_FINISHED,
        input_data={"batch_tag": tag, "after_branches": True, "store": str(store),
                    "out_dir": str(saved), "blur_dir": str(blur_dir),
                    "folder": str(Path(folder).resolve()), "total": len(images)})
    chains = [_chain(wm, steps) for steps in branches.values()]
    # One transaction: the branches and the sheet are enqueued together or not at all.
    WorkContinuation.combine(chains).then(sheet).enqueue()
    return BatchJob(tag, sheet.id, str(saved),
                    {source: tuple(s.id for s in steps) for source, steps in branches.items()})


def _branches(images: list[Path], tag: str, level: int, blur: dict,
              saved: str) -> list[list[OneTimeWorkRequest]]:
    """Each image's steps: ``level`` blurs (with the ``blur`` input), then its save."""
    names: set[str] = set()
    branches = []
    for image in images:
        name = f"blurred-{image.stem}.png"
        if name in names:  # photo.png and photo.jpg
            name = f"blurred-{image.stem}-{image.suffix.lstrip('.').lower()}.png"
        names.add(name)
        common = {"source": str(image)}
        steps = [OneTimeWorkRequest(BlurWorker, tags=[TAG_BATCH, tag], input_data={
            **common, **blur, **({KEY_IMAGE_URI: str(image)} if i == 0 else {})})
            for i in range(level)]
        steps.append(OneTimeWorkRequest(SaveImageToFileWorker, tags=[TAG_BATCH, tag], input_data={
            **common, "out_dir": saved, "file_name": name}))
        branches.append(steps)
    return branches


def _chain(wm: WorkManager, steps: list[OneTimeWorkRequest]) -> WorkContinuation:
    chain = wm.begin_with(steps[0])
    for step in steps[1:]:
        chain = chain.then(step)
    return chain
