"""Layer rules (docs/architecture.md), each a named test: imports point down only, the client
knows no scheduler or executor, the top layer uses the public API, only the store touches the
database."""

from __future__ import annotations

import ast
import importlib
import json
import pathlib
import subprocess
import sys

import nbwork

PACKAGE = pathlib.Path(__file__).parent.parent / "nbwork"

LAYERS = {
    "errors": 0, "_time": 0, "_layout": 0,
    "data": 1, "info": 1, "explain": 1, "worker": 1, "request": 1, "_spec": 1, "_code": 1,
    "_executor_address": 1, "_content": 1,
    "_rules": 2,
    "_store": 3, "_store.faults": 3, "_store.codec": 3, "_store.transaction": 3,
    "_store.reads": 3, "_store.opening": 3, "_store.store": 3, "_store.batch": 3,
    "_store.shards": 3, "_store.rows": 3, "_store.migration": 3, "_store.checkpoint": 3,
    "_storedir": 3,
    "_lock": 3, "_liveness": 3, "_wake": 3, "_ops": 3,
    "_conditions": 3, "_watches": 3,
    "_records": 1,
    "_executors": 3, "_executors.base": 3, "_executors.local": 3,
    "_executors.inline": 3, "_executors.slot": 3, "_executors.capture": 3,
    "_executors.leftovers": 3, "_executors.reaper": 3,
    "_executors.launcher": 3, "_executors.dask_task": 3, "_executors.dask": 3,
    "_executors.attempt": 3, "_executors.process_groups": 3,
    "_scheduler": 4, "_scheduler_main": 4, "_scheduler_records": 4, "_scheduler_reports": 4,
    "_scheduler_gate": 4, "_scheduler_dispatch": 4, "_watch": 4, "_daemon": 4, "_supervisor": 4,
    "manager": 5, "testing": 5, "examples": 5,
    "_observe": 5, "_continuation": 5, "_arguments": 5, "_query_memo": 5,
    "_fs_events": 4,
    "cli": 6, "imaging": 6, "__init__": 7,
    "imaging._images": 6, "imaging._codelab": 6, "imaging._sheet": 6, "imaging._batch": 6,
    "imaging._hot_folder": 6,
    "cli.__main__": 6, "cli._common": 6, "cli._work_commands": 6, "cli._daemon_commands": 6,
    "cli._blur_commands": 6,
    "widgets": 6, "widgets._live": 6, "widgets._html": 6, "widgets._magic": 6,
    "widgets.table": 6, "widgets.preview": 6, "widgets.graph": 6, "widgets.blur_app": 6,
    # The JupyterLab server extension: on top, like the widgets (public API only).
    "jupyter": 6, "jupyter.view": 6, "jupyter.details": 6, "jupyter.stores": 6,
    "jupyter.handlers": 6, "jupyter.follow": 6,
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: pathlib.Path, module: str) -> set[str]:
    found = set()
    package_parts = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
                names = [target] if node.module else [f"{a.name}" for a in node.names]
                found.update(n for n in names if n)
            elif node.module and node.module.startswith("nbwork."):
                found.add(node.module[len("nbwork."):])
        elif isinstance(node, ast.Import):
            found.update(a.name[len("nbwork."):] for a in node.names
                         if a.name.startswith("nbwork."))
    return found


def test_every_module_has_a_layer():
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    assert modules <= set(LAYERS) | {"__init__"}, modules - set(LAYERS)


def test_imports_point_down():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        for target in _imports(path, module):
            target = target.lstrip(".")
            if target not in LAYERS:
                target = target.rsplit(".", 1)[0] if "." in target else target
            if target in LAYERS and LAYERS[target] > LAYERS[module]:
                wrong.append(f"{module} (layer {LAYERS[module]}) imports {target} "
                             f"(layer {LAYERS[target]})")
    assert not wrong, "\n".join(wrong)


def test_distributed_is_imported_only_lazily_by_the_dask_executor():
    """``distributed`` is optional (``nbwork[dask]``): only the Dask executor's modules (and
    the address check, to say it is missing) import it, inside functions, so ``import nbwork``
    works without it."""
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        imports = {id(n): n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                   and any(name.split(".")[0] == "distributed" for name in (
                       [a.name for a in n.names] if isinstance(n, ast.Import)
                       else [n.module or ""]))}
        if not imports:
            continue
        assert (path.parent.name == "_executors" and path.name.startswith("dask")
                or path.name == "_executor_address.py"), path
        assert not [n for n in tree.body if id(n) in imports], f"{path}: at module level"


def test_executors_never_import_the_store():
    for path in (PACKAGE / "_executors").glob("*.py"):
        assert "_store" not in path.read_text(), path


def test_import_nbwork_loads_no_executor_scheduler_dask_or_widget_module():
    """A kernel that imports nbwork to enqueue work pays for the client only: the executors,
    the scheduler, Dask and the widgets load in the scheduler process or on first use."""
    code = ("import sys, json, nbwork; "
            "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                       text=True, check=True).stdout)
    heavy = ("nbwork._executors", "nbwork._scheduler", "nbwork.widgets", "distributed",
             "dask", "ipywidgets", "IPython")
    wrong = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in heavy)
             or m.startswith("nbwork._scheduler")]
    assert not wrong, f"import nbwork loads {wrong}"


def _package_imports(path: pathlib.Path,
                     top_level_only: bool = False) -> list[tuple[int, str, bool]]:
    """(line, module, inside nbwork) for each import of a module: "manager", "widgets._html"
    inside nbwork, "diskcache" outside it; ``from . import _html`` names the module imported,
    not its package."""
    module = _module_name(path)
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    if module == "__init__":
        package = []
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                inside = name.startswith("nbwork.")
                found.append((node.lineno, name[len("nbwork."):] if inside else name, inside))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                if node.module:
                    found.append((node.lineno, ".".join([*base, node.module]), True))
                else:
                    found.extend((node.lineno, ".".join([*base, a.name]), True)
                                 for a in node.names)
            elif node.module:
                name = node.module
                inside = name.startswith("nbwork.")
                found.append((node.lineno, name[len("nbwork."):] if inside else name, inside))
    return found


def _modules(*names: str) -> list[pathlib.Path]:
    paths = []
    for name in names:
        path = PACKAGE.joinpath(*name.split("."))
        paths.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")])
    return paths


def _where(path: pathlib.Path, line: int) -> str:
    return f"nbwork/{path.relative_to(PACKAGE)}:{line}"


CLIENT = ("__init__", "manager", "testing", "_ops", "_daemon", "_wake", "_executor_address",
          "_observe", "_continuation", "_records", "_arguments")
"""The modules a kernel loads to enqueue and watch work (the scheduler process loads the rest)."""


def test_the_client_never_imports_the_scheduler_or_executors():
    """Not even inside a function; the one way in is ``_scheduler_main`` (the scheduler's
    entry, which ``wm.daemon.run()`` runs in the foreground), imported where it is called."""
    wrong = []
    for path in _modules(*CLIENT):
        top_level = {line for line, _, _ in _package_imports(path, top_level_only=True)}
        for line, target, inside in _package_imports(path):
            first = target.split(".")[0]
            scheduler_side = first == "_executors" or first.startswith("_scheduler")
            if inside and scheduler_side and (target != "_scheduler_main" or line in top_level):
                wrong.append(f"{_where(path, line)} imports {target}")
    assert not wrong, "the client must not know the scheduler or an executor:\n" + "\n".join(wrong)


TOP = ("widgets", "cli", "imaging", "jupyter")
PRIVATE_IMPORTS_ALLOWED = {
    # ``nbwork daemon stop|status`` read only the lock and the liveness files, never the
    # database, so that they work on a store whose database is broken; the public way in
    # (``WorkManager(path).daemon``) opens the database first.
    ("cli", "_daemon"),
    # The names of a store directory's entries (constants and path joins, nothing that
    # opens the store): Blur-O-Matic's default folders in the store.
    ("imaging", "_layout"),
}


def test_widgets_cli_and_imaging_import_only_the_public_api():
    """Their imports of nbwork (and the JupyterLab server extension's, ``nbwork/jupyter/``)
    name public modules (no leading underscore), or a package's own private helpers
    (``widgets._html``, ``imaging._batch``, ``cli._common``); every exception is listed above,
    with why."""
    wrong = []
    for path in _modules(*TOP):
        user = _module_name(path)
        for line, target, inside in _package_imports(path):
            parts = target.split(".")
            if not inside or not any(p.startswith("_") for p in parts):
                continue
            package = user.split(".")[0]
            own_private = package in ("widgets", "imaging", "cli") and parts[0] == package
            if own_private or (package, parts[0]) in PRIVATE_IMPORTS_ALLOWED:
                continue
            wrong.append(f"{_where(path, line)} imports nbwork.{target}")
    assert not wrong, "the top layer uses the public API only:\n" + "\n".join(wrong)


STORE = PACKAGE / "_store"
"""The store layer: the package whose modules alone touch the database."""


def test_only_the_store_imports_diskcache_or_sqlite3():
    wrong = [f"{_where(path, line)} imports {target}"
             for path in PACKAGE.rglob("*.py") if STORE not in path.parents
             for line, target, inside in _package_imports(path)
             if not inside and target.split(".")[0] in ("diskcache", "sqlite3")]
    assert not wrong, "only nbwork/_store/ touches the database:\n" + "\n".join(wrong)


def test_the_local_and_dask_executors_never_import_each_other():
    """They share the worker process (``slot``), the attempt it runs (``attempt``), the
    process groups and the contract (``base``), never each other's code."""
    sides = {"local": ("_executors.local", "_executors.reaper"),
             "dask": ("_executors.dask", "_executors.dask_task", "_executors.launcher")}
    wrong = [f"{_where(path, line)} imports {target}"
             for side, own in sides.items()
             for other in [m for s, ms in sides.items() if s != side for m in ms]
             for path in _modules(*own)
             for line, target, inside in _package_imports(path)
             if inside and target == other]
    assert not wrong, "\n".join(wrong)


def test_one_attempt_body_and_one_place_that_signals_process_groups():
    """Only ``_executors/attempt.py`` builds a Worker for an attempt (``testing.run_worker``
    runs one in the caller's process, for tests), and only ``_executors/process_groups.py``
    signals a process group or a pid."""
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        name = _module_name(path)
        if "instantiate(" in text and name not in ("_executors.attempt", "testing", "worker"):
            wrong.append(f"{path.name} builds a Worker itself")
        if ("os.killpg(" in text or "os.kill(" in text) and name != "_executors.process_groups":
            wrong.append(f"{path.name} signals processes itself")
    assert not wrong, "\n".join(wrong)


API_REFERENCE = PACKAGE.parent / "docs" / "api.md"
DESCRIBED_ONLY = ("jupyter", "cli")
"""Front ends held to public *names*, not only to modules without a leading underscore: a
name a public module happens to hold (``nbwork.info.in_chain_order`` once) is no contract."""


def _imported_names(path: pathlib.Path) -> list[tuple[int, str, str]]:
    """(line, module, name) for each ``from nbwork[.module] import name`` of a file."""
    module = _module_name(path)
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join([*base, node.module] if node.module else base)
        elif node.module and (node.module == "nbwork" or node.module.startswith("nbwork.")):
            target = node.module[len("nbwork."):] if "." in node.module else ""
        else:
            continue
        found.extend((node.lineno, target, alias.name) for alias in node.names)
    return found


def _is_public_name(module: str, name: str, reference: str) -> bool:
    """In the ``__all__`` of ``nbwork`` or of the module; a module without one (``errors``,
    ``info``): described in docs/api.md."""
    if name in nbwork.__all__:
        return True
    exported = getattr(importlib.import_module(f"nbwork.{module}" if module else "nbwork"),
                       "__all__", None)
    return name in exported if exported is not None else f"`{name}" in reference


def test_the_panel_and_the_cli_import_only_public_names():
    reference = API_REFERENCE.read_text()
    wrong = []
    for path in _modules(*DESCRIBED_ONLY):
        user = _module_name(path).split(".")[0]
        for line, target, name in _imported_names(path):
            if target.split(".")[0] == user or (user, target) in PRIVATE_IMPORTS_ALLOWED:
                continue  # its own modules, or an exception listed with why
            if not _is_public_name(target, name, reference):
                wrong.append(f"{_where(path, line)} imports {name} from nbwork.{target}")
    assert not wrong, ("the panel and the cli use only public names (in an __all__, or "
                       "described in docs/api.md):\n" + "\n".join(wrong))


STORE_LAYER = ("_layout",)
"""The store layer, besides every ``_store*`` module (``_store``, ``_storedir``): where the
store directory's files are made (the database's by diskcache, inside ``_store``)."""
CREATES_FILES = {
    # In the store directory, each at a path the store's layout names, private (0600):
    "_daemon": "scheduler.log, opened by the process that starts the scheduler, before any "
               "store is open in it",
    "_lock": "scheduler.lock: whoever holds its flock is the store's one scheduler",
    "_wake": "wake.fifo, the FIFO a client writes to wake the scheduler",
    "_liveness": "the scheduler's heartbeat and the supervisor's note, written many times "
                 "a second without opening the database",
    "_executors.capture": "a work's log and its scratch files, written by the worker "
                          "process that runs it",
    "_executors.dask_task": "a Dask worker's note in the attempt's log; its own temporary "
                            "log (tempfile), off the store",
    # Blur-O-Matic's images, by default in blur_outputs/ and blurred_images/ of the store
    # (out_dir elsewhere), each written to a temporary name and renamed when complete:
    "imaging._images": "a blur step's output image",
    "imaging._codelab": "the codelab's cleaned-up, blurred and saved images",
    "imaging._sheet": "a batch's contact sheet",
    "imaging._hot_folder": "a hot folder's blurred copy of each file",
    "widgets.blur_app": "images uploaded to the Blur-O-Matic app, in uploads/ of the store",
    # Elsewhere:
    "_executors.leftovers": "the cgroups of worker processes, under the scheduler's own "
                            "cgroup (/sys/fs/cgroup)",
}
"""Every module outside the store layer that creates files or folders, and what and where
they are. A new one fails the rule below until it is listed here with its reason (or leaves
the making to the store layer); one that no longer creates anything must leave the list."""
_CREATING_CALLS = {("os", "mkfifo"), ("os", "mkdir"), ("os", "makedirs"), ("os", "link"),
                   ("os", "symlink"), ("os", "replace"), ("os", "rename"),
                   ("tempfile", "mkstemp"), ("tempfile", "mkdtemp"),
                   ("tempfile", "NamedTemporaryFile"), ("shutil", "copy"), ("shutil", "copy2"),
                   ("shutil", "copyfile"), ("shutil", "copytree"), ("shutil", "move")}
_CREATING_METHODS = {"mkdir", "write_text", "write_bytes", "touch", "symlink_to", "hardlink_to"}


def _creates_a_file(node: ast.AST) -> bool:
    """A call that can make a file or folder: ``os.open`` with ``O_CREAT``, ``open`` for
    writing (not of a file descriptor), ``os.mkfifo``, ``Path.mkdir``, ``tempfile.mkstemp``..."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        if (func.value.id, func.attr) in _CREATING_CALLS:
            return True
        if (func.value.id, func.attr) == ("os", "open"):
            return any(isinstance(n, ast.Attribute) and n.attr == "O_CREAT"
                       for flags in node.args[1:2] for n in ast.walk(flags))
    if isinstance(func, ast.Attribute) and func.attr in _CREATING_METHODS:
        return True
    if isinstance(func, ast.Name) and func.id == "open" and node.args:
        mode = node.args[1] if len(node.args) > 1 else next(
            (k.value for k in node.keywords if k.arg == "mode"), None)
        of_a_descriptor = isinstance(node.args[0], ast.Constant) and isinstance(
            node.args[0].value, int)
        return (not of_a_descriptor and isinstance(mode, ast.Constant)
                and isinstance(mode.value, str) and bool(set(mode.value) & set("wax")))
    return False


def test_only_the_store_creates_files_in_the_store_directory():
    """What the store directory holds is made by the store layer; the modules that make
    files anyway are listed in CREATES_FILES with what and where, so the list is the whole
    picture (it shrinks as the store layer takes them over)."""
    creators: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        if module.startswith("_store") or module in STORE_LAYER:
            continue
        lines = [_where(path, n.lineno) for n in ast.walk(ast.parse(path.read_text()))
                 if _creates_a_file(n)]
        if lines:
            creators[module] = lines
    unlisted = [f"{line} ({module})" for module, lines in sorted(creators.items())
                if module not in CREATES_FILES for line in lines]
    assert not unlisted, ("only the store layer creates files in the store directory; these "
                          "lines create files: leave that to the store layer, or list the "
                          "module in CREATES_FILES with what and where:\n" + "\n".join(unlisted))
    stale = sorted(set(CREATES_FILES) - set(creators))
    assert not stale, f"{stale} create no file any more: remove them from CREATES_FILES"


    assert any("diskcache" in target for path in STORE.glob("*.py")
               for _, target, _ in _package_imports(path)), "the rule names the wrong folder"


def _string_constants(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of the string constants of a module that are neither docstrings nor
    logger names (``getLogger("nbwork.store")`` is no file)."""
    skipped = {id(node.body[0].value) for node in ast.walk(tree)
               if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                    ast.AsyncFunctionDef))
               and node.body and isinstance(node.body[0], ast.Expr)
               and isinstance(node.body[0].value, ast.Constant)}
    skipped |= {id(arg) for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "attr", None) == "getLogger" for arg in node.args}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in skipped]


def test_only_the_layout_names_what_is_in_a_store_directory():
    """Paths in the store are built from ``_layout``'s names: a module that spells one of
    them itself would keep a file where ``_layout`` no longer says it is."""
    from nbwork import _layout

    names = {_layout.DB_FILE, _layout.MARKER, _layout.DAMAGED, _layout.LOCK, _layout.BEAT,
             _layout.SCHEDULER_LOG, _layout.SUPERVISOR_NOTE, _layout.FIFO,
             _layout.BLUR_OUTPUTS_DIR, _layout.BLURRED_IMAGES_DIR}
    wrong = [f"{_where(path, line)} spells {text!r}"
             for path in PACKAGE.rglob("*.py") if path.name != "_layout.py"
             for line, text in _string_constants(ast.parse(path.read_text()))
             if text in names or ".slot-" in text]
    assert not wrong, "ask nbwork._layout for the store's names:\n" + "\n".join(wrong)


MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 65
"""Sizes that fit in a head (about 500 lines a file, about 60 a function): past them a module
has more than one subject, or a function does several things a name could say."""


def test_every_module_and_function_fits_in_a_head():
    too_big = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            too_big.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_big.append(f"{_where(path, node.lineno)} {node.name}: {length} lines")
    assert not too_big, "split these:\n" + "\n".join(too_big)
