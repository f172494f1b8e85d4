"""The REST API of the Work panel, under ``/nbwork/api/``.

Every handler is authenticated; the POSTs (cancel, prune) also pass jupyter_server's XSRF
check. Answers are JSON; an error is ``{"error": "one line"}`` with a 4xx status, and a
refused request writes nothing. Store reads run on a worker thread: a first look at a big
store takes a moment, and the server must keep serving meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from nbwork import InvalidInputError, WorkInfo, WorkQuery, WorkState

from .details import IMAGE_TYPES, MAX_IMAGE_BYTES, details, images, log_tail
from .stores import StoreRefused, StoreViews
from .view import PAGE_LIMIT, Filter, StoreView

LOG_TAIL_LIMIT = 1024 * 1024
ID_PATTERN = r"[0-9a-fA-F-]{1,64}"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class NbworkHandler(APIHandler):
    """The base of the panel's handlers: a store per request and one-line JSON errors."""

    @property
    def views(self) -> StoreViews:
        return self.settings["nbwork_views"]

    @property
    def follower(self) -> Any:
        return self.settings["nbwork_follower"]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif isinstance(exc, web.HTTPError):
            message = exc.reason or self._reason
        else:
            message = f"internal error: {type(exc).__name__}: {exc}" if exc else self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": _one_line(message)}))

    def fail(self, status: int, message: str) -> None:
        raise web.HTTPError(status, _one_line(message).replace("%", "%%"))

    async def run(self, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)`` on a worker thread, its nbwork errors turned into 4xx."""
        try:
            return await asyncio.to_thread(call, *args)
        except StoreRefused as exc:
            self.fail(exc.status, str(exc))
        except InvalidInputError as exc:
            self.fail(400, str(exc))

    def body(self) -> dict[str, Any]:
        try:
            value = json.loads(self.request.body or b"{}")
        except ValueError:
            self.fail(400, "the request body is not JSON")
        if not isinstance(value, dict):
            self.fail(400, "the request body must be a JSON object")
        return value

    async def store_view(self, requested: str | None) -> StoreView | None:
        """The view of the requested store (refreshed), None for a default store that does
        not exist yet; a bad store path is a 4xx."""
        if requested is not None and not isinstance(requested, str):
            self.fail(400, "store must be a path (a string)")

        def open_and_refresh() -> StoreView | None:
            view = self.views.view(self.views.resolve(requested))
            if view is not None:
                view.refresh()
            return view

        view = await self.run(open_and_refresh)
        self.follower.ensure_running()
        return view

    async def work(self, view: StoreView | None, id: str) -> WorkInfo:
        info = await self.run(view.manager.get_work_info_by_id, id) if view else None
        if info is None:
            self.fail(404, f"no work with id {id} in this store")
        return info

    def reply(self, value: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))


def _states(values: list[str]) -> tuple[WorkState, ...]:
    states = []
    for value in values:
        for name in filter(None, value.split(",")):
            if name.upper() not in WorkState.__members__:
                raise ApiError(400, f"unknown state {name!r}; use one of "
                                    f"{', '.join(WorkState.__members__)}")
            states.append(WorkState[name.upper()])
    return tuple(states)


def _filter_from(values: dict[str, Any]) -> Filter:
    def strings(key: str) -> tuple[str, ...]:
        value = values.get(key) or []
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ApiError(400, f"{key} must be a string or a list of strings")
        return tuple(v for v in value if v)

    text = values.get("q") or ""
    if not isinstance(text, str):
        raise ApiError(400, "q must be a string")
    return Filter(states=_states(list(strings("state"))), tags=strings("tag"),
                  unique_work_names=strings("unique"), text=text.strip())


class StoresHandler(NbworkHandler):
    @web.authenticated
    async def get(self) -> None:
        self.reply({"stores": self.views.known(), "default": self.views.default_path()})


class WorksHandler(NbworkHandler):
    """``GET works?store=&state=&tag=&unique=&q=&offset=&limit=``: one page of rows."""

    @web.authenticated
    async def get(self) -> None:
        args = {k: [v.decode() for v in vs] for k, vs in self.request.query_arguments.items()}
        try:
            where = _filter_from({k: v if k in ("state", "tag", "unique") else v[-1]
                                  for k, v in args.items()})
            offset = int(self.get_query_argument("offset", "0"))
            limit = int(self.get_query_argument("limit", "100"))
        except ApiError as exc:
            self.fail(exc.status, str(exc))
        except ValueError:
            self.fail(400, "offset and limit must be whole numbers")
        if offset < 0 or not 0 < limit <= PAGE_LIMIT:
            self.fail(400, f"offset must be >= 0 and limit between 1 and {PAGE_LIMIT}")
        view = await self.store_view(self.get_query_argument("store", None))
        if view is None:
            self.reply({"store": self.views.default_path(), "counter": None, "total": 0,
                        "offset": offset, "limit": limit, "works": [], "tags": [],
                        "counts": {s.value: 0 for s in WorkState}, "notice_seq": 0,
                        "now": time.time()})
            return
        self.reply(await self.run(view.page, where, offset, limit))


class WorkHandler(NbworkHandler):
    """``GET works/<id>?store=``: the details of one work."""

    @web.authenticated
    async def get(self, id: str) -> None:
        view = await self.store_view(self.get_query_argument("store", None))
        info = await self.work(view, id)
        self.reply(await self.run(details, view.manager, info))


class LogHandler(NbworkHandler):
    """``GET works/<id>/log?store=&tail=BYTES``: the tail of its captured output."""

    @web.authenticated
    async def get(self, id: str) -> None:
        try:
            tail = int(self.get_query_argument("tail", "65536"))
        except ValueError:
            self.fail(400, "tail must be a whole number of bytes")
        if not 0 < tail <= LOG_TAIL_LIMIT:
            self.fail(400, f"tail must be between 1 and {LOG_TAIL_LIMIT} bytes")
        view = await self.store_view(self.get_query_argument("store", None))
        info = await self.work(view, id)
        self.reply({"id": id, "state": info.state.value,
                    **await self.run(log_tail, info, tail)})


class ImageHandler(NbworkHandler):
    """``GET works/<id>/image?store=&key=&where=``: an image its input or output names."""

    @web.authenticated
    async def get(self, id: str) -> None:
        view = await self.store_view(self.get_query_argument("store", None))
        info = await self.work(view, id)
        key = self.get_query_argument("key", "")
        where = self.get_query_argument("where", "output")
        found = [i for i in images(info) if i["key"] == key and i["where"] == where]
        if not found:
            self.fail(404, f"the {where} of work {id} names no image file under {key!r}")
        path = found[0]["path"]
        if os.path.getsize(path) > MAX_IMAGE_BYTES:
            self.fail(413, f"{path} is larger than {MAX_IMAGE_BYTES} bytes")
        content = await asyncio.to_thread(_read_bytes, path)
        self.set_header("Content-Type", IMAGE_TYPES[os.path.splitext(path)[1].lower()])
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")
        # Past APIHandler.finish, which would label the image JSON.
        super(APIHandler, self).finish(content)


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class NoticesHandler(NbworkHandler):
    """``GET notices?store=&after=SEQ``: chains that finished since notice ``SEQ``."""

    @web.authenticated
    async def get(self) -> None:
        try:
            after = int(self.get_query_argument("after", "0"))
        except ValueError:
            self.fail(400, "after must be a whole number")
        view = await self.store_view(self.get_query_argument("store", None))
        notices = view.notices(after) if view else []
        self.reply({"notices": notices, "notice_seq": view.last_seq if view else 0})


class CancelHandler(NbworkHandler):
    """``POST cancel`` with ``{"store", and one of "id", "ids", "tag", "unique",
    "filter": {state, tag, unique, q}}``: cancel, as ``WorkManager.cancel_*`` does."""

    @web.authenticated
    async def post(self) -> None:
        body = self.body()
        targets = [k for k in ("id", "ids", "tag", "unique", "filter") if k in body]
        if len(targets) != 1:
            self.fail(400, "say what to cancel with exactly one of id, ids, tag, unique, filter")
        target = targets[0]
        value = body[target]
        if target == "ids":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                self.fail(400, "ids must be a list of work ids")
        elif target == "filter":
            if not isinstance(value, dict):
                self.fail(400, "filter must be an object such as {\"state\": [\"RUNNING\"]}")
            try:
                where = _filter_from(value)
            except ApiError as exc:
                self.fail(exc.status, str(exc))
        elif not isinstance(value, str) or not value:
            self.fail(400, f"{target} must be a non-empty string")
        view = await self.store_view(body.get("store"))
        if view is None:
            self.fail(404, "the default store does not exist yet: there is nothing to cancel")
        manager = view.manager
        if target in ("id", "ids"):
            ids = [value] if target == "id" else value
            known = await self.run(manager.get_work_ids, WorkQuery(ids=ids))
            missing = sorted(set(ids) - set(known))
            if missing:
                self.fail(404, f"no work with id {', '.join(missing[:5])} in this store")
        elif target == "filter":
            ids = await self.run(view.ids_matching, where)
        if target == "tag":
            operations = [await self.run(manager.cancel_all_work_by_tag, value)]
        elif target == "unique":
            operations = [await self.run(manager.cancel_unique_work, value)]
        else:
            unfinished = [i for i, info in (await self.run(view.cached, ids)).items()
                          if not info.state.is_finished] if target == "filter" else ids
            operations = await self.run(_cancel_each, manager, unfinished)
        await self.run(view.refresh)
        self.follower.poke()
        self.reply({"cancelled_running": sorted({i for o in operations
                                                 for i in o.cancelled_running}),
                    "requested": len(ids) if target in ("id", "ids", "filter") else None})


def _cancel_each(manager: Any, ids: list[str]) -> list[Any]:
    return [manager.cancel_work_by_id(id) for id in ids]


class PruneHandler(NbworkHandler):
    """``POST prune`` with ``{"store"}``: forget finished work (``WorkManager.prune_work``)."""

    @web.authenticated
    async def post(self) -> None:
        body = self.body()
        view = await self.store_view(body.get("store"))
        if view is None:
            self.fail(404, "the default store does not exist yet: there is nothing to prune")
        pruned = await self.run(view.manager.prune_work)
        await self.run(view.refresh)
        self.follower.poke()
        self.reply({"pruned": len(pruned)})


def handlers(base_url: str) -> list[tuple[str, type]]:
    def at(path: str) -> str:
        return url_path_join(base_url, "nbwork", "api", path)

    return [
        (at("stores"), StoresHandler),
        (at("works"), WorksHandler),
        (at(rf"works/({ID_PATTERN})"), WorkHandler),
        (at(rf"works/({ID_PATTERN})/log"), LogHandler),
        (at(rf"works/({ID_PATTERN})/image"), ImageHandler),
        (at("notices"), NoticesHandler),
        (at("cancel"), CancelHandler),
        (at("prune"), PruneHandler),
    ]
