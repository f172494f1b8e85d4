"""Blur-O-Matic: the WorkManager codelab's image workers, and batch blurs of whole folders.

Built on the public API only (workers, requests, ``WorkManager``), as a notebook user
would write it. The code lives in private modules, one subject each — ``_images`` (checks,
decoding, files), ``_codelab`` (the chain), ``_sheet`` (contact sheets), ``_batch``
(batches), ``_hot_folder`` — and every public name is imported from here.

The codelab chain, ``blur_o_matic(wm, image, level)``::

    CleanupWorker -> BlurWorker x level (1-3) -> SaveImageToFileWorker (tagged OUTPUT)

enqueued as unique work ``IMAGE_MANIPULATION_WORK_NAME`` with ``ExistingWorkPolicy.REPLACE``
(starting a new blur cancels the previous one). Images travel between the steps as paths
(``KEY_IMAGE_URI``), never as pixels: ``Data`` is limited to 10 KB.

Folders (input keys of the workers; ``blur_o_matic`` and ``blur_batch`` fill them in):

- the *blur output folder* (``output_dir``) holds the temporary files the blur steps write,
  named ``blur-*.png``; ``CleanupWorker`` deletes those (and only those) files in it before
  a new chain starts. Default: ``blur_outputs`` inside the store directory.
- the *saved-image folder* (``out_dir``) receives the final images. Default:
  ``blurred_images`` inside the store directory.

Images are checked before they are decoded: a missing file, a file that is not an image,
a damaged or truncated one, or one larger than ``MAX_IMAGE_PIXELS`` (50 megapixels; read
from the header, so a decompression bomb is refused before it takes any memory) makes the
blur step fail with ``BadImageError`` naming the file and the reason; the message is the
last line of ``WorkInfo.error``. (Pillow's global ``Image.MAX_IMAGE_PIXELS`` is left alone:
changing it would change Pillow for everything else in the user's kernel.)

Batch blurs, ``blur_batch(wm, folder, level)``: one branch per image (``BlurWorker`` x level,
then ``SaveImageToFileWorker``), all branches in parallel, and a ``ContactSheetWorker`` that
builds a contact sheet PNG and a ``report.json`` of every image.

*How the contact sheet waits for the branches.* In WorkManager a failed prerequisite fails
all its dependents, so a join that depends on every branch (the codelab's
``combine(...).then(join)``) would fail as soon as one image of the folder is bad, and the
user would get no sheet and no report; yet each bad image must fail its own branch (so its
``WorkInfo`` says FAILED, with the reason). So the sheet depends on every branch's last step
with nbwork's ``RunAfter.ALL_FINISHED``: it stays BLOCKED until every branch is finished,
whatever it ended as, then runs once (``run_attempt_count`` 1), enqueued in the same
transaction as the branches. The branches carry a tag of their own batch, and the sheet
reads their ``WorkInfo`` through the public API (``WorkManager(store).get_work_infos``; its
input has only the last steps' outputs, and an error is in ``WorkInfo.error``): it
draws the succeeded images (and a marked tile for each failed or cancelled one), writes the
report naming each bad file with its error, removes the batch's temporary folder and
succeeds. Cancelling the batch's branches (``nbwork cancel --tag <batch tag>``) still gets
a report of what was done; cancelling ``TAG_BATCH``, or the sheet, cancels the sheet too.

A store may still hold a sheet enqueued by an earlier nbwork, without prerequisites: that
one polls the branches' ``WorkInfo`` for ``wait`` seconds (default 2 s) per attempt and
returns ``Result.retry()`` (linear backoff of 1 s) until they are finished, and fails if
they are not by its ``deadline``. ``ContactSheetWorker`` still does both.

``ContactSheetWorker`` also works as a classic join: given ``image_uri`` as a list (what
``ArrayCreatingInputMerger`` makes of its prerequisites' outputs) it draws those images;
that join fails with its first failed branch, as WorkManager's semantics say.
"""

from __future__ import annotations

from ._batch import (
    DEFAULT_BATCH_TIMEOUT,
    REPORT_NAME,
    SHEET_NAME,
    BatchJob,
    ContactSheetWorker,
    blur_batch,
    folder_images,
)
from ._codelab import BlurJob, BlurWorker, CleanupWorker, SaveImageToFileWorker, blur_o_matic
from ._hot_folder import (
    TAG_HOT_FOLDER,
    HotFolderBlurWorker,
    HotFolderRequests,
    hot_folder,
    hot_folder_name,
)
from ._images import (
    BLUR_DIR_NAME,
    DEFAULT_RADIUS,
    DEFAULT_STRIPS,
    IMAGE_MANIPULATION_WORK_NAME,
    IMAGE_SUFFIXES,
    KEY_IMAGE_URI,
    LEVELS,
    MAX_IMAGE_PIXELS,
    PARTIAL_PREFIX,
    SAMPLES_DIR,
    SAVED_DIR_NAME,
    TAG_BATCH,
    TAG_OUTPUT,
    TEMP_PREFIX,
    BadImageError,
    check_image,
    open_image,
    sample_images,
)
from ._sheet import MAX_SHEET_TILES, THUMB_SIZE, make_contact_sheet

# A stored work names its worker (a hot folder, its request maker) by module and name, and
# the scheduler imports it from there: they stay ``nbwork.imaging.X`` whichever private
# module holds them, so the records of every nbwork version load.
for _stored in (CleanupWorker, BlurWorker, SaveImageToFileWorker, ContactSheetWorker,
                HotFolderBlurWorker, HotFolderRequests, BadImageError):
    _stored.__module__ = __name__
del _stored

__all__ = [
    "BadImageError", "BatchJob", "BlurJob", "BlurWorker", "CleanupWorker",
    "ContactSheetWorker", "HotFolderBlurWorker", "HotFolderRequests",
    "IMAGE_MANIPULATION_WORK_NAME", "KEY_IMAGE_URI",
    "MAX_IMAGE_PIXELS", "SaveImageToFileWorker", "TAG_BATCH", "TAG_OUTPUT",
    "TAG_HOT_FOLDER", "blur_batch", "blur_o_matic", "check_image", "hot_folder",
    "hot_folder_name",
    "folder_images", "make_contact_sheet", "open_image", "sample_images",
    # the folders, prefixes, sizes and defaults
    "BLUR_DIR_NAME", "DEFAULT_BATCH_TIMEOUT", "DEFAULT_RADIUS", "DEFAULT_STRIPS",
    "IMAGE_SUFFIXES", "LEVELS", "MAX_SHEET_TILES", "PARTIAL_PREFIX", "REPORT_NAME",
    "SAMPLES_DIR", "SAVED_DIR_NAME", "SHEET_NAME", "TEMP_PREFIX", "THUMB_SIZE",
]
