"""nbwork inside JupyterLab: the server side of the Work panel.

A jupyter_server extension (enabled on install through ``jupyter-config``) that serves the
REST API under ``/nbwork/api/`` (``handlers``) and pushes store changes to the page over
the event bus (``follow``). It sits on top of nbwork and uses its public API only. The
panel itself is the prebuilt lab extension in ``nbwork/labextension``.
"""

from __future__ import annotations

from typing import Any

from .follow import EVENT_SCHEMA, Follower
from .handlers import handlers
from .stores import NbworkExtension, StoreViews


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "nbwork.jupyter"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    settings = NbworkExtension(parent=serverapp)
    views = StoreViews(settings)
    serverapp.event_logger.register_event_schema(EVENT_SCHEMA)
    follower = Follower(views, serverapp.event_logger, settings.follow_interval)
    web_app = serverapp.web_app
    web_app.settings["nbwork_views"] = views
    web_app.settings["nbwork_follower"] = follower
    web_app.add_handlers(".*$", handlers(web_app.settings["base_url"]))
    serverapp.log.info("nbwork: the Work panel's API is at /nbwork/api/")


__all__ = ["NbworkExtension"]
