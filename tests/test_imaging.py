"""Blur-O-Matic: the workers in-process (``run_worker``), then end to end through a real
scheduler: the codelab chain, unique work with REPLACE, bad images, cancelling a blur, and
batch blurs whose contact sheet survives a corrupt image."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nbwork import (
    ArrayCreatingInputMerger,
    InvalidInputError,
    OneTimeWorkRequest,
    RunAfter,
    StopReason,
    WorkContinuation,
    WorkQuery,
    WorkState,
    imaging,
)
from nbwork.explain import why_waiting
from nbwork.imaging import (
    BLUR_DIR_NAME,
    IMAGE_MANIPULATION_WORK_NAME,
    MAX_IMAGE_PIXELS,
    REPORT_NAME,
    SAMPLES_DIR,
    SAVED_DIR_NAME,
    SHEET_NAME,
    TAG_OUTPUT,
    THUMB_SIZE,
    BadImageError,
    BlurWorker,
    CleanupWorker,
    ContactSheetWorker,
    SaveImageToFileWorker,
    blur_batch,
    blur_o_matic,
    check_image,
    make_contact_sheet,
    open_image,
    sample_images,
)
from nbwork.testing import run_worker
from tests.conftest import wait_until

STAMPED = re.compile(r"blurred-\d{4}-\d{2}-\d{2}-\d{6}-\d{6}\.png")

# Before the store's teardown, every scheduler a client spawned must hold the lock or be gone.
pytestmark = pytest.mark.usefixtures("settle_schedulers")



def edge_energy(path) -> float:
    """Mean squared difference between neighbouring pixels: lower means blurrier. (Squared:
    a blur spreads a sharp step over several pixels, which keeps the sum of absolute
    differences but shrinks the sum of their squares.)"""
    a = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    return float((np.diff(a, axis=0) ** 2).mean() + (np.diff(a, axis=1) ** 2).mean())


def sample(name: str = "shapes") -> Path:
    return next(p for p in sample_images() if p.stem == name)


def truncated_png(path: Path) -> Path:
    """A real PNG cut in the middle of its pixel data."""
    data = sample("mandelbrot").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def huge_header_png(path: Path) -> Path:
    """A PNG whose header says 10000x6000 (60 megapixels), followed by too little data to
    decode: refusing it for its size proves the size is checked before decoding."""
    Image.new("1", (10_000, 6_000)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    return path


# --- the workers, in-process ------------------------------------------------------------


def test_blur_worker_writes_a_new_blurrier_file_and_reports_progress(tmp_path):
    progress = []
    source = sample()
    result = run_worker(BlurWorker, input_data={"image_uri": str(source),
                                                "output_dir": str(tmp_path)},
                        on_progress=progress.append)
    assert result.kind == "success"
    out = Path(result.output_data["image_uri"])
    assert out.parent == tmp_path and out.name.startswith("blur-") and out.suffix == ".png"
    assert Image.open(out).size == Image.open(source).size
    assert edge_energy(out) < 0.6 * edge_energy(source)
    percents = [p["percent"] for p in progress]
    assert percents[0] == 0 and percents[-1] == 100
    assert percents == sorted(percents) and len(set(percents)) >= 5   # it moves, in steps


def test_each_blur_level_is_blurrier_than_the_last(tmp_path):
    energies = [edge_energy(sample("rings"))]
    uri = str(sample("rings"))
    for _ in range(3):
        uri = run_worker(BlurWorker, input_data={"image_uri": uri, "output_dir": str(tmp_path)}
                         ).output_data["image_uri"]
        energies.append(edge_energy(uri))
    assert energies == sorted(energies, reverse=True) and len(set(energies)) == 4
    assert energies[3] < 0.35 * energies[0]                 # level 3 is clearly blurry


def test_blurring_in_strips_leaves_no_seams(tmp_path):
    """A blur in 13 strips gives exactly the pixels of one blur of the whole image."""
    one = run_worker(BlurWorker, input_data={"image_uri": str(sample("checkers")),
                                             "output_dir": str(tmp_path), "strips": 1})
    many = run_worker(BlurWorker, input_data={"image_uri": str(sample("checkers")),
                                              "output_dir": str(tmp_path), "strips": 13})
    a = np.asarray(Image.open(one.output_data["image_uri"]))
    b = np.asarray(Image.open(many.output_data["image_uri"]))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("kind, reason", [
    ("missing", "no such file"),
    ("folder", "is a folder"),
    ("text", "not an image"),
    ("truncated", "damaged or truncated"),
    ("huge", "60.0 megapixels, over the limit of 50 megapixels"),
])
def test_a_bad_image_fails_with_its_name_and_the_reason(tmp_path, kind, reason):
    path = tmp_path / f"bad-{kind}.png"
    if kind == "folder":
        path.mkdir()
    elif kind == "text":
        path.write_text("this is not an image")
    elif kind == "truncated":
        truncated_png(path)
    elif kind == "huge":
        huge_header_png(path)
    with pytest.raises(BadImageError) as caught:
        run_worker(BlurWorker, input_data={"image_uri": str(path), "output_dir": str(tmp_path)})
    assert str(path) in str(caught.value) and reason in str(caught.value)
    assert not list(tmp_path.glob("blur-*"))                # no output for a bad image


def test_the_pixel_limit_is_fifty_megapixels():
    assert MAX_IMAGE_PIXELS == 50_000_000


def test_check_image_reads_the_size_and_open_image_converts_modes(tmp_path):
    assert check_image(sample("shapes")) == (480, 360)
    palette = tmp_path / "palette.gif"
    Image.new("P", (30, 20)).save(palette)
    assert open_image(palette).mode == "RGB"
    grey = tmp_path / "grey.png"
    Image.new("L", (30, 20), 128).save(grey)
    result = run_worker(BlurWorker, input_data={"image_uri": str(grey),
                                                "output_dir": str(tmp_path)})
    assert Image.open(result.output_data["image_uri"]).mode == "L"


def test_blur_worker_needs_an_image_uri(tmp_path):
    with pytest.raises(InvalidInputError, match="image_uri"):
        run_worker(BlurWorker, input_data={"output_dir": str(tmp_path)})


def test_cleanup_deletes_only_temporary_blur_files(tmp_path):
    (tmp_path / "blur-old1.png").write_bytes(b"x")
    (tmp_path / "blur-old2.png").write_bytes(b"x")
    (tmp_path / "holiday.png").write_bytes(b"keep")
    (tmp_path / "blur-notes.txt").write_text("keep")
    (tmp_path / "batch-1234").mkdir()
    (tmp_path / "batch-1234" / "blur-inner.png").write_bytes(b"keep")
    result = run_worker(CleanupWorker, input_data={"output_dir": str(tmp_path)})
    assert result.output_data["deleted"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch-1234", "blur-notes.txt",
                                                          "holiday.png"]
    assert (tmp_path / "batch-1234" / "blur-inner.png").exists()
    assert run_worker(CleanupWorker, input_data={"output_dir": str(tmp_path / "none")}
                      ).output_data["deleted"] == 0


def test_save_copies_to_a_time_stamped_name(tmp_path):
    blurred = run_worker(BlurWorker, input_data={"image_uri": str(sample()),
                                                 "output_dir": str(tmp_path / "tmp")}
                         ).output_data["image_uri"]
    out = tmp_path / "saved"
    first = Path(run_worker(SaveImageToFileWorker, input_data={
        "image_uri": blurred, "out_dir": str(out)}).output_data["image_uri"])
    second = Path(run_worker(SaveImageToFileWorker, input_data={
        "image_uri": blurred, "out_dir": str(out)}).output_data["image_uri"])
    assert first.parent == out and STAMPED.fullmatch(first.name)
    assert first != second and second.exists()
    assert first.read_bytes() == Path(blurred).read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted([first.name, second.name])
    named = run_worker(SaveImageToFileWorker, input_data={
        "image_uri": blurred, "out_dir": str(out), "file_name": "mine.png"})
    assert named.output_data["image_uri"] == str(out / "mine.png")


@pytest.mark.parametrize("hard_links", [True, False])
def test_save_never_replaces_an_earlier_image(tmp_path, monkeypatch, hard_links):
    monkeypatch.setattr(imaging._codelab, "_stamp", lambda: "2026-11-29-051500-123456")
    if not hard_links:
        def no_links(*args, **kwargs):
            raise PermissionError(1, "Operation not permitted")
        monkeypatch.setattr(os, "link", no_links)
    source = tmp_path / "blur-abc.png"
    shutil.copy(sample(), source)
    out = tmp_path / "out"
    saved = [Path(run_worker(SaveImageToFileWorker, input_data={
        "image_uri": str(source), "out_dir": str(out)}).output_data["image_uri"])
        for _ in range(2)]
    assert [p.name for p in saved] == ["blurred-2026-11-29-051500-123456.png",
                                       "blurred-2026-11-29-051500-123456-1.png"]
    assert all(p.read_bytes() == source.read_bytes() for p in saved)
    assert sorted(out.iterdir()) == sorted(saved)           # no partial copies left


def test_contact_sheet_marks_failed_and_unreadable_images(tmp_path):
    sheet = make_contact_sheet([(str(sample()), "shapes.png", None),
                                (str(tmp_path / "deleted.png"), "deleted.png", None),
                                (None, "bad.png", "FAILED")], tmp_path / "sheet.png")
    image = Image.open(sheet).convert("RGB")
    step = THUMB_SIZE + 8                                   # a tile and the gap after it
    assert image.size == (8 + 2 * step, 8 + 2 * (step + 24))   # 3 tiles: 2 x 2 grid
    placeholder = (90, 20, 20)
    assert image.getpixel((8 + 150, 8 + 60)) != placeholder
    assert image.getpixel((8 + step + 150, 8 + 60)) == placeholder
    assert image.getpixel((8 + 150, 8 + step + 24 + 60)) == placeholder


def test_sample_images_are_small_bundled_and_sharp():
    samples = sample_images()
    assert len(samples) >= 4
    assert {p.suffix for p in samples} >= {".png", ".jpg"}
    assert all(p.parent == SAMPLES_DIR and SAMPLES_DIR.parent.name == "nbwork" for p in samples)
    assert sum(p.stat().st_size for p in samples) < 400_000
    for path in samples:
        assert open_image(path).size == (480, 360)
        assert edge_energy(path) > 5                        # sharp edges, so blurs show


def test_blur_o_matic_refuses_bad_arguments_and_enqueues_nothing(wm, tmp_path):
    for level in (0, 4, True, "2", 1.5):
        with pytest.raises(InvalidInputError, match="level must be 1, 2 or 3"):
            blur_o_matic(wm, sample(), level=level)
    with pytest.raises(BadImageError, match="no such file"):
        blur_o_matic(wm, tmp_path / "missing.png")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(InvalidInputError, match="is a file"):
        blur_o_matic(wm, sample(), out_dir=tmp_path / "a-file")
    with pytest.raises(InvalidInputError, match="radius"):
        blur_o_matic(wm, sample(), radius=0)
    with pytest.raises(InvalidInputError, match="no such folder"):
        blur_batch(wm, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(InvalidInputError, match="no images"):
        blur_batch(wm, tmp_path / "empty")
    assert wm.get_work_infos() == []


def test_a_batch_sheet_waits_blocked_after_every_branch_not_by_retrying(client, tmp_path):
    """The sheet depends on every branch's last step with RunAfter.ALL_FINISHED, enqueued
    with them at once; it waits BLOCKED (no scheduler runs here), not doomed by a bad image."""
    folder = _folder_with_a_corrupt_image(tmp_path)
    job = blur_batch(client, folder, level=2, out_dir=tmp_path / "out")
    sheet = client.get_work_info_by_id(job.sheet_id)
    assert (sheet.state, sheet.run_after) == (WorkState.BLOCKED, RunAfter.ALL_FINISHED)
    assert sorted(sheet.prerequisites) == sorted(ids[-1] for ids in job.branches.values())
    assert {i.enqueue_time for i in client.get_work_infos(WorkQuery(ids=job.ids))} == {
        sheet.enqueue_time}                               # one transaction
    assert why_waiting(sheet, client.get_work_info_by_id).endswith(
        "(it runs whatever they end as)")


@pytest.mark.slow
def test_a_sheet_run_after_its_branches_reads_them_once_and_never_retries(wm, tmp_path):
    """In-process (its WorkManager starts the store's scheduler): a sheet of today's
    batches reports what it finds at once; while a step of the batch is unfinished (a
    branch whose save was cancelled by id) it keeps the batch's temporary folder, which
    that step may still write to."""
    held = OneTimeWorkRequest(BlurWorker, tags=["b-2"], initial_delay=3600,
                              input_data={"source": "/pics/slow.png"})
    gone = OneTimeWorkRequest(BlurWorker, tags=["b-2"], initial_delay=3600,
                              input_data={"source": "/pics/gone.png"})
    wm.enqueue([held, gone])
    wm.cancel_work_by_id(gone.id)
    blur_dir = tmp_path / "tmp"
    blur_dir.mkdir()
    data = {"batch_tag": "b-2", "after_branches": True, "store": wm.store_path,
            "out_dir": str(tmp_path / "out"), "blur_dir": str(blur_dir)}
    result = run_worker(ContactSheetWorker, input_data=data)
    assert result.kind == "success"
    report = json.loads(Path(result.output_data["report"]).read_text())
    assert {Path(e["source"]).name: e["state"] for e in report["images"]} == {
        "gone.png": "CANCELLED", "slow.png": "UNFINISHED"}
    assert blur_dir.is_dir()
    wm.cancel_work_by_id(held.id)
    assert run_worker(ContactSheetWorker, input_data=data).kind == "success"
    assert not blur_dir.exists()


@pytest.mark.slow
def test_a_polling_sheet_of_an_earlier_version_still_retries_until_its_batch_is_finished(
        wm, tmp_path):
    """A sheet enqueued before RunAfter (no prerequisites, no ``after_branches``), which a
    store may still hold, in-process: an unfinished branch means retry; a cancelled one is
    reported; a passed deadline fails naming the image still waited for."""
    held = OneTimeWorkRequest(BlurWorker, tags=["b-1"], initial_delay=3600,
                              input_data={"source": "/pics/slow.png"})
    wm.enqueue(held)
    data = {"batch_tag": "b-1", "store": wm.store_path, "out_dir": str(tmp_path / "out"),
            "wait": 0.05}
    progress = []
    assert run_worker(ContactSheetWorker, input_data=data, on_progress=progress.append
                      ).kind == "retry"
    assert progress[-1].to_dict() == {"percent": 0, "finished": 0, "total": 1}
    with pytest.raises(TimeoutError, match="slow.png"):
        run_worker(ContactSheetWorker, input_data={**data, "deadline": 1.0})
    wm.cancel_work_by_id(held.id)
    result = run_worker(ContactSheetWorker, input_data=data)
    assert result.kind == "success"
    assert result.output_data["failed_files"] == ["slow.png"]
    report = json.loads(Path(result.output_data["report"]).read_text())
    assert report["images"] == [{"source": "/pics/slow.png", "state": "CANCELLED",
                                 "image_uri": None, "error": "cancelled"}]


# --- end to end through a real scheduler -------------------------------------------------


@pytest.mark.slow
def test_blur_o_matic_chain_end_to_end(wm, tmp_path):
    out = tmp_path / "gallery"
    job = blur_o_matic(wm, sample("mandelbrot"), level=3, out_dir=out)
    infos = wm.wait(job.ids, timeout=60)
    assert [i.state for i in infos] == [WorkState.SUCCEEDED] * 5
    by_id = {i.id: i for i in infos}
    assert [by_id[i].worker_name.rsplit(".", 1)[-1] for i in job.ids] == [
        "CleanupWorker", "BlurWorker", "BlurWorker", "BlurWorker", "SaveImageToFileWorker"]
    saved = Path(by_id[job.save_id].output_data["image_uri"])
    assert saved.parent == out and STAMPED.fullmatch(saved.name)
    assert edge_energy(saved) < 0.5 * edge_energy(sample("mandelbrot"))
    assert [i.id for i in wm.get_work_infos_by_tag(TAG_OUTPUT)] == [job.save_id]
    assert {i.id for i in wm.get_work_infos_for_unique_work(IMAGE_MANIPULATION_WORK_NAME)} == \
        set(job.ids)
    # The temporary files are in the store's blur output folder until the next cleanup.
    temporary = sorted(Path(wm.store_path, BLUR_DIR_NAME).glob("blur-*.png"))
    assert len(temporary) == 3
    second = blur_o_matic(wm, sample("rings"), level=1)
    wm.wait(second.ids, timeout=60)
    assert not any(p.exists() for p in temporary)
    assert len(list(Path(wm.store_path, BLUR_DIR_NAME).glob("blur-*.png"))) == 1
    default_saved = Path(wm.get_work_info_by_id(second.save_id).output_data["image_uri"])
    assert default_saved.parent == Path(wm.store_path, SAVED_DIR_NAME)


def big_image(tmp_path) -> Path:
    """12 megapixels of noise (BMP: quick to write): blurring it takes a few seconds."""
    path = tmp_path / "big.bmp"
    pixels = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _stopped_line(wm, work_id):
    """The line a BlurWorker prints when it honours a stop request between two strips (one
    that ignored it would be killed after the grace period and print nothing)."""
    return wait_until(lambda: re.search(r"stopped after (\d+) of (\d+) strips",
                                        wm.read_log(work_id)), what="the blur to stop")


@pytest.mark.slow
def test_a_new_blur_replaces_the_one_under_way(wm, tmp_path):
    first = blur_o_matic(wm, big_image(tmp_path), level=2, strips=300)
    blur = first.blur_ids[0]
    wait_until(lambda: wm.get_work_info_by_id(blur).progress.get("percent", 0) > 0,
               what="the first blur to report progress")
    second = blur_o_matic(wm, sample("rings"), level=1, requires_charging=True)
    states = [wm.get_work_info_by_id(i).state for i in first.ids]
    assert states == [WorkState.SUCCEEDED] + [WorkState.CANCELLED] * 3
    assert wm.wait(second.save_id, timeout=60).state is WorkState.SUCCEEDED
    assert int(_stopped_line(wm, blur).group(1)) < 300
    assert wm.get_work_info_by_id(first.save_id).start_time is None
    assert {i.id for i in wm.get_work_infos_for_unique_work(IMAGE_MANIPULATION_WORK_NAME)
            if not i.state.is_finished} == set()
    save = second.requests[-1]
    assert save.id == second.save_id and save.constraints.requires_charging
    assert not any(r.constraints.requires_charging for r in first.requests)


@pytest.mark.slow
def test_a_bad_image_fails_its_chain_with_the_file_named(wm, tmp_path):
    bad = truncated_png(tmp_path / "broken.png")
    blur = OneTimeWorkRequest(BlurWorker, input_data={"image_uri": str(bad),
                                                      "output_dir": str(tmp_path / "tmp")})
    save = OneTimeWorkRequest(SaveImageToFileWorker, input_data={"out_dir": str(tmp_path)})
    wm.begin_with(blur).then(save).enqueue()
    info = wm.wait(blur, timeout=60)
    assert info.state is WorkState.FAILED
    last_line = info.error.strip().splitlines()[-1]
    assert "BadImageError" in last_line and str(bad) in last_line and "truncated" in last_line
    assert wm.wait(save, timeout=10).state is WorkState.FAILED


@pytest.mark.slow
def test_cancelling_a_blur_stops_it_between_strips(wm, tmp_path):
    temp = tmp_path / "tmp"
    blur = OneTimeWorkRequest(BlurWorker, input_data={
        "image_uri": str(big_image(tmp_path)), "output_dir": str(temp), "strips": 300})
    wm.enqueue(blur)
    wait_until(lambda: wm.get_work_info_by_id(blur.id).progress.get("percent", 0) > 0,
               what="the blur to report progress")
    wm.cancel_work_by_id(blur.id)
    info = wm.get_work_info_by_id(blur.id)
    assert info.state is WorkState.CANCELLED and info.stop_reason is StopReason.CANCELLED_BY_APP
    line = _stopped_line(wm, blur.id)
    assert 0 < int(line.group(1)) < int(line.group(2)) == 300
    assert not list(temp.glob("blur-*"))                    # it wrote nothing
    assert not wm.get_work_info_by_id(blur.id).output_data


def _folder_with_a_corrupt_image(tmp_path) -> Path:
    folder = tmp_path / "pictures"
    folder.mkdir()
    for name in ("shapes", "rings", "checkers"):
        shutil.copy(sample(name), folder)
    truncated_png(folder / "corrupt.png")
    (folder / "notes.txt").write_text("not an image, not in the batch")
    return folder


@pytest.mark.slow
def test_batch_with_a_corrupt_image_blurs_the_others_and_reports_it(wm, tmp_path):
    folder = _folder_with_a_corrupt_image(tmp_path)
    out = tmp_path / "out"
    job = blur_batch(wm, folder, level=2, out_dir=out)
    assert sorted(Path(s).name for s in job.branches) == [
        "checkers.png", "corrupt.png", "rings.png", "shapes.png"]
    infos = {i.id: i for i in wm.wait(job.ids, timeout=120)}
    corrupt = job.branches[str(folder / "corrupt.png")]
    assert infos[corrupt[0]].state is WorkState.FAILED
    assert str(folder / "corrupt.png") in infos[corrupt[0]].error
    assert all(infos[i].state is WorkState.FAILED for i in corrupt[1:])
    for source, ids in job.branches.items():
        if source.endswith("corrupt.png"):
            continue
        assert all(infos[i].state is WorkState.SUCCEEDED for i in ids)
        saved = Path(infos[ids[-1]].output_data["image_uri"])
        assert saved == out / f"blurred-{Path(source).stem}.png"
        assert edge_energy(saved) < 0.6 * edge_energy(source)
    sheet = infos[job.sheet_id]
    assert sheet.state is WorkState.SUCCEEDED
    # Issue 13: it waited for its branches BLOCKED and ran once, after the last one (it
    # used to poll and retry, and a fine sheet showed TRIES 4).
    assert sheet.run_attempt_count == 1
    assert set(sheet.prerequisites) == {ids[-1] for ids in job.branches.values()}
    assert sheet.start_time >= max(infos[i].finish_time for ids in job.branches.values()
                                   for i in ids)
    assert sheet.output_data["succeeded"] == 3 and sheet.output_data["failed"] == 1
    assert sheet.output_data["failed_files"] == ["corrupt.png"]
    assert Path(sheet.output_data["contact_sheet"]) == out / SHEET_NAME
    assert Image.open(out / SHEET_NAME).size[0] > 400
    report = json.loads((out / REPORT_NAME).read_text())
    assert (report["total"], report["succeeded"], report["failed"]) == (4, 3, 1)
    bad = [e for e in report["images"] if e["state"] != "SUCCEEDED"]
    assert [Path(e["source"]).name for e in bad] == ["corrupt.png"]
    assert "corrupt.png" in bad[0]["error"] and "truncated" in bad[0]["error"]
    assert not Path(wm.store_path, BLUR_DIR_NAME, f"batch-{job.tag.rsplit('-', 1)[1]}").exists()


@pytest.mark.slow
def test_contact_sheet_as_a_classic_join_with_array_creating_merger(wm, tmp_path):
    """Joined the WorkManager way, the sheet gets every branch's image_uri as one list, and
    fails with a failing branch: the reason blur_batch does not join this way."""
    def join(images):
        chains = [wm.begin_with(OneTimeWorkRequest(BlurWorker, input_data={
            "image_uri": str(image), "output_dir": str(tmp_path / "tmp")})) for image in images]
        sheet = OneTimeWorkRequest(ContactSheetWorker, input_merger=ArrayCreatingInputMerger,
                                   input_data={"out_dir": str(tmp_path / "sheet")})
        WorkContinuation.combine(chains).then(sheet).enqueue()
        return wm.wait(sheet, timeout=60)

    info = join([sample("shapes"), sample("rings")])
    assert info.state is WorkState.SUCCEEDED and info.output_data["succeeded"] == 2
    report = json.loads(Path(info.output_data["report"]).read_text())
    assert all(Path(e["image_uri"]).parent == tmp_path / "tmp" for e in report["images"])
    assert join([sample("shapes"), truncated_png(tmp_path / "bad.png")]).state is \
        WorkState.FAILED
