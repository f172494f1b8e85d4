"""``nbwork demo``, ``blur``, ``batch`` and ``watch``: Blur-O-Matic from the terminal."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

from ..info import WorkInfo, WorkState
from ._common import UsageError, follow, manager_of, say_detached, store_hint


def _run_blur(args: argparse.Namespace, image: str, level: int, intro: str = "") -> int:
    """Enqueue Blur-O-Matic for ``image``; follow it unless ``--detach``; print the saved path.

    ``intro`` is printed once the work is enqueued (a mistake prints its error alone)."""
    from ..imaging import IMAGE_MANIPULATION_WORK_NAME, blur_o_matic

    wm = manager_of(args, create=True)
    job = blur_o_matic(wm, image, level=level, out_dir=args.out,
                       requires_charging=getattr(args, "requires_charging", False))
    if intro:
        print(intro)
    hint = f"nbwork show {job.save_id[:8]}{store_hint(args)}"
    print(f"enqueued Blur-O-Matic for {image} (level {level}) as unique work "
          f"{IMAGE_MANIPULATION_WORK_NAME!r} in {wm.store_path}", flush=True)
    if getattr(args, "detach", False):
        print(f"steps: {' -> '.join(i[:8] for i in job.ids)} (the last one saves the image)")
        print(f"follow it: nbwork list --unique {IMAGE_MANIPULATION_WORK_NAME}"
              f"{store_hint(args)}")
        print(f"saved path, when done: {hint} (output image_uri)")
        return 0
    try:
        infos = follow(wm, job.ids)
    except KeyboardInterrupt:
        return say_detached(args, "the blur", hint)
    save = next(i for i in infos if i.id == job.save_id)
    if save.state is WorkState.SUCCEEDED:
        print(f"saved: {save.output_data['image_uri']}")
        return 0
    failed = [i for i in infos if i.error]
    if failed:
        reason = failed[0].error.strip().splitlines()[-1]
    elif save.state is WorkState.CANCELLED:
        reason = "it was cancelled (a newer blur replaces the one under way)"
    else:
        reason = f"it ended {save.state.value}"
    print(f"nbwork: the blur did not finish: {reason}", file=sys.stderr)
    return 1


def cmd_demo(args: argparse.Namespace) -> int:
    from ..imaging import sample_images

    samples = sample_images()
    sample = next((p for p in samples if p.stem == "shapes"), samples[0])
    intro = (f"Blur-O-Matic (the WorkManager codelab): blur the bundled sample {sample.name} "
             f"at level {args.level} in background steps: cleanup -> blur x {args.level} "
             "-> save")
    status = _run_blur(args, str(sample), args.level, intro)
    if status == 0 and not args.detach:
        print(_notebooks_hint())
    return status


def _notebooks_hint() -> str:
    """How to open the notebooks, from any folder: their absolute path (they come with the
    project's sources, beside the package), and that JupyterLab must be installed."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "notebooks"
    needs = "(needs JupyterLab: pip install jupyterlab)"
    if (folder / "blur_o_matic.ipynb").is_file():
        return f"Open the notebooks: jupyter lab {shlex.quote(str(folder))}  {needs}"
    return ("Open the notebooks: they are in the notebooks/ folder of the nbwork sources; "
            f"run 'jupyter lab PATH/TO/nbwork/notebooks'  {needs}")


def cmd_blur(args: argparse.Namespace) -> int:
    return _run_blur(args, args.image, args.level)


def cmd_batch(args: argparse.Namespace) -> int:
    from ..imaging import blur_batch

    wm = manager_of(args, create=True)
    job = blur_batch(wm, args.folder, level=args.level, out_dir=args.out)
    hint = f"nbwork list --tag {job.tag}{store_hint(args)}"
    print(f"enqueued a batch blur of {len(job.branches)} images of {args.folder} (level "
          f"{args.level}) in {wm.store_path}", flush=True)
    print(f"output folder: {job.out_dir}", flush=True)
    if args.detach:
        print(f"contact sheet step: {job.sheet_id[:8]}; follow it: {hint}")
        print(f"the report, when done: nbwork show {job.sheet_id[:8]}{store_hint(args)}")
        return 0
    try:
        infos = follow(wm, job.ids)
    except KeyboardInterrupt:
        return say_detached(args, "the batch", hint)
    sheet = next(i for i in infos if i.id == job.sheet_id)
    if sheet.state is not WorkState.SUCCEEDED:
        reason = (sheet.error.strip().splitlines()[-1] if sheet.error
                  else f"it ended {sheet.state.value}")
        print(f"nbwork: the contact sheet was not made: {reason}", file=sys.stderr)
        return 1
    out = sheet.output_data
    try:
        with open(out["report"]) as f:
            bad = [e for e in json.load(f)["images"] if e["state"] != "SUCCEEDED"]
    except (OSError, ValueError, KeyError):  # the report was removed or changed since
        bad = [{"source": name, "error": "see the report"} for name in out["failed_files"]]
    print(f"blurred {out['succeeded']} of {out['succeeded'] + out['failed']} images into "
          f"{job.out_dir}")
    print(f"contact sheet: {out['contact_sheet']}")
    print(f"report: {out['report']}")
    for entry in bad[:10]:
        print(f"failed: {entry['source']}: {entry['error']}", file=sys.stderr)
    if len(bad) > 10:
        print(f"... and {len(bad) - 10} more; see the report", file=sys.stderr)
    return 1 if out["failed"] else 0


def _file_line(info: WorkInfo, folder: str) -> str:
    """One line about a hot-folder file's work: its name, its state, where it went or
    why it failed."""
    source = str(info.input_data.get("path", "?"))
    name = os.path.relpath(source, folder) if source.startswith(folder) else source
    line = f"{name}  {info.state.value}"
    if info.state is WorkState.SUCCEEDED and "image_uri" in info.output_data:
        line += f" -> {info.output_data['image_uri']}"
    elif info.error:
        line += f": {info.error.strip().splitlines()[-1]}"
    return line


def cmd_watch(args: argparse.Namespace) -> int:
    from ..imaging import hot_folder

    # Listing and stopping only look at the store: they start no scheduler and create no
    # store; a new watch enqueues work, so it creates one as blur and batch do.
    only_looks = bool(args.list or args.stop)
    wm = manager_of(args, resume=not only_looks, create=not only_looks)
    if args.list:
        watches = wm.watches()
        for watch in watches:
            print(f"{watch.name}\t{watch.folder}\t{watch.pattern}\tsettle {watch.settle:g} s"
                  f"\t{watch.request_for_file}")
        if not watches:
            print("no folder is watched")
        return 0
    if args.stop:
        if not wm.stop_watching(args.stop):
            raise UsageError(f"no watch named {args.stop!r}; see 'nbwork watch --list'")
        print(f"stopped watching ({args.stop}); work already enqueued goes on")
        return 0
    if not args.folder:
        raise UsageError("give the FOLDER to watch (or --list, or --stop NAME)")
    watch = hot_folder(wm, args.folder, level=args.level, out_dir=args.out, name=args.name,
                       settle=args.settle)
    out = wm.get_work_infos_by_tag(watch.tag)
    print(f"watching {watch.folder} as {watch.name!r}: every file dropped in comes out "
          f"blurred (level {args.level}); Ctrl-C detaches, the watch goes on", flush=True)
    shown = {i.id: i.state for i in out}  # what earlier runs already reported
    try:
        while True:
            for info in wm.get_work_infos_by_tag(watch.tag):
                if shown.get(info.id) is not info.state and info.state in (
                        WorkState.RUNNING, *[s for s in WorkState if s.is_finished]):
                    shown[info.id] = info.state
                    print(_file_line(info, watch.folder), flush=True)
            wm.daemon.ensure_running()
            time.sleep(0.2)
    except KeyboardInterrupt:
        print(f"\nnbwork: detached; the watch {watch.name!r} goes on in the background. Stop "
              f"it with 'nbwork watch --stop {watch.name}{store_hint(args)}'.",
              file=sys.stderr)
        return 130


LEVEL_HELP = "how blurry: 1, 2 or 3 blur steps, the codelab's 'a little', 'more', 'the most'"


def _blur_options(p: argparse.ArgumentParser, out_default: str, level: int,
                  level_why: str) -> None:
    p.add_argument("--level", type=int, choices=[1, 2, 3],
                   help=f"{LEVEL_HELP} (default: {level}: {level_why})")
    p.add_argument("--out", metavar="DIR",
                   help=f"the folder to save into; it is created if needed and must be "
                        f"writable (default: {out_default})")
    p.add_argument("--detach", action="store_true",
                   help="enqueue, print the ids and how to follow them, and return at once")
    p.set_defaults(level=level)


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Their subcommands, on ``sub``; ``common``: the options every command takes."""
    p = sub.add_parser("demo", parents=[common],
                       help="Blur-O-Matic on a bundled sample image, followed in the terminal")
    _blur_options(p, "blurred_images in the store", 3,
                  "the demo shows the longest chain; blur and batch default to 1")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("blur", parents=[common],
                       help="blur an image in background steps (cleanup, blur x N, save)")
    p.add_argument("image", help="the image file (PNG, JPEG, ...)")
    _blur_options(p, "blurred_images in the store", 1,
                  "the codelab's default, and the quickest")
    p.add_argument("--requires-charging", action="store_true",
                   help="the save step waits until the computer is on mains power")
    p.set_defaults(func=cmd_blur)
    p = sub.add_parser("batch", parents=[common],
                       help="blur every image of a folder in parallel, then a contact sheet")
    p.add_argument("folder", help="the folder whose images to blur (not its subfolders)")
    _blur_options(p, "a new batch-... folder in blurred_images of the store", 1,
                  "a batch has many images; each level adds a step per image")
    p.set_defaults(func=cmd_batch)
    p = sub.add_parser("watch", parents=[common],
                       help="a hot folder: blur every image dropped into FOLDER")
    p.add_argument("folder", nargs="?", help="the folder to watch")
    p.add_argument("--level", type=int, choices=[1, 2, 3], default=1,
                   help="how blurry: 1, 2 or 3 blur steps (default 1)")
    p.add_argument("--out", metavar="DIR",
                   help="where the blurred images go (default: blurred_images/NAME in the store)")
    p.add_argument("--name", help="the watch's name (default: hot-<folder name>)")
    p.add_argument("--settle", type=float, default=1.0, metavar="SECONDS",
                   help="a file is taken once it has not changed for this long (default 1)")
    p.add_argument("--stop", metavar="NAME", help="stop the watch NAME")
    p.add_argument("--list", action="store_true", help="list the watches of the store")
    p.set_defaults(func=cmd_watch)
