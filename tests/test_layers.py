"""Layer rules (docs/architecture.md), each a named test: imports point down only, the client
knows no scheduler or executor, the top layer uses the public API, only the store touches the
database."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).parent.parent / "nbwork"

LAYERS = {
    "errors": 0, "_time": 0, "_layout": 0,
    "data": 1, "info": 1, "explain": 1, "worker": 1, "request": 1, "_spec": 1, "_code": 1,
    "_executor_address": 1, "_content": 1,
    "_rules": 2,
    "_store": 3, "_store.faults": 3, "_store.codec": 3, "_store.transaction": 3,
    "_store.reads": 3, "_store.opening": 3, "_store.store": 3,
    "_storedir": 3, "_lock": 3, "_liveness": 3, "_wake": 3, "_ops": 3,
    "_conditions": 3, "_watches": 3,
    "_executors": 3, "_executors.base": 3, "_executors.child": 3, "_executors.local": 3,
    "_executors.inline": 3, "_executors.slot": 3, "_executors.capture": 3,
    "_executors.leftovers": 3, "_executors.reaper": 3,
    "_executors.launcher": 3, "_executors.dask_task": 3, "_executors.dask": 3,
    "_scheduler": 4, "_scheduler_main": 4, "_scheduler_records": 4, "_scheduler_reports": 4,
    "_scheduler_gate": 4, "_scheduler_dispatch": 4, "_watch": 4, "_daemon": 4, "_supervisor": 4,
    "manager": 5, "testing": 5, "examples": 5,
    "cli": 6, "imaging": 6, "__init__": 7,
    "imaging._images": 6, "imaging._codelab": 6, "imaging._sheet": 6, "imaging._batch": 6,
    "imaging._hot_folder": 6,
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


CLIENT = ("__init__", "manager", "testing", "_ops", "_daemon", "_wake", "_executor_address")
"""The modules a kernel loads to enqueue and watch work (the scheduler process loads the rest)."""


def test_the_client_never_imports_the_scheduler_or_executors():
    wrong = [f"{_where(path, line)} imports {target}"
             for path in _modules(*CLIENT)
             for line, target, inside in _package_imports(path, top_level_only=True)
             if inside and (target.split(".")[0] == "_executors"
                            or target.split(".")[0].startswith("_scheduler"))]
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
    name public modules (no leading underscore), or a widget's own private helpers
    (``widgets._html``) or Blur-O-Matic's (``imaging._batch``); every exception is listed
    above, with why."""
    wrong = []
    for path in _modules(*TOP):
        user = _module_name(path)
        for line, target, inside in _package_imports(path):
            parts = target.split(".")
            if not inside or not any(p.startswith("_") for p in parts):
                continue
            own_private = user.split(".")[0] in ("widgets", "imaging") \
                and parts[0] == user.split(".")[0]
            if own_private or (user.split(".")[0], parts[0]) in PRIVATE_IMPORTS_ALLOWED:
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
