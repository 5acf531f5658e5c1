"""The dashboard's HTTP side: a Starlette app with a JSON API, a live stream
(server-sent events, at most one update per ``refresh`` seconds) and the static page."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from celeriac.dashboard import _actions, _views
from celeriac.dashboard._auth import ADMIN, Auth, AuthMiddleware
from celeriac.dashboard._collect import Collector
from celeriac.dashboard._state import DashboardState
from celeriac.utils.log import mask_url

if TYPE_CHECKING:
    from celeriac.app import Celeriac


class Dashboard:
    """One app's dashboard: its state, its collector and its ASGI app (:attr:`asgi`)."""

    def __init__(
        self,
        app: Celeriac,
        *,
        auth: Auth | None = None,
        max_tasks: int = 10_000,
        refresh: float = 1.0,
        poll_interval: float = 2.0,
        enable_events: bool = True,
    ) -> None:
        self.app = app
        self.auth = auth or Auth()
        self.refresh = max(0.1, refresh)
        self.state = DashboardState(max_tasks)
        self.collector = Collector(
            app, self.state, poll_interval=poll_interval, enable_events=enable_events
        )
        self._lock: asyncio.Lock | None = None
        static = resources.files("celeriac.dashboard") / "static"
        routes = [
            Route("/", self.index),
            Route("/api/me", self.me),
            Route("/api/stream", self.stream),
            *[Route(path, self._get(view)) for path, view in _views.ROUTES.items()],
            *[
                Route(path, self._post(action), methods=["POST"])
                for path, action in _actions.ROUTES.items()
            ],
            Mount("/static", StaticFiles(directory=str(static)), name="static"),
        ]
        self.starlette = Starlette(routes=routes, lifespan=self._lifespan)
        self.asgi = AuthMiddleware(self._started, self.auth)

    # -- start and stop: on the lifespan when served alone; on the first request when
    # mounted (Starlette runs no lifespan of a mounted app) --------------------------
    async def start(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            self.collector.start()

    async def stop(self) -> None:
        await self.collector.stop()

    async def _started(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.collector.running:
            await self.start()
        await self.starlette(scope, receive, send)

    def _lifespan(self, _: Starlette) -> Any:
        dashboard = self

        class Lifespan:
            async def __aenter__(self) -> None:
                await dashboard.start()

            async def __aexit__(self, *exc: object) -> None:
                await dashboard.stop()

        return Lifespan()

    # -- pages ----------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        page = (resources.files("celeriac.dashboard") / "static" / "index.html").read_text()
        base = request.scope.get("root_path", "").rstrip("/")
        return Response(page.replace("{{base}}", base), media_type="text/html")

    async def me(self, request: Request) -> Response:
        return JSONResponse(
            {
                "role": request.scope.get("dashboard_role"),
                "can_change": request.scope.get("dashboard_role") == ADMIN,
                "app": self.app.main or "",
                "broker": mask_url(self.app.broker_url),
                "backend": mask_url(self.app.backend_url),
                "refresh": self.refresh,
            }
        )

    def _get(self, view: _views.View) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                data = await view(self, request)
            except _views.NotFound as exc:
                return JSONResponse({"error": str(exc)}, status_code=404)
            return JSONResponse(data)

        return endpoint

    def _post(self, action: _actions.Action) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                body = await request.json() if await request.body() else {}
            except ValueError:
                return JSONResponse({"error": "the body is not JSON"}, status_code=400)
            try:
                data = await action(self, request, body if isinstance(body, dict) else {})
            except _actions.Refused as exc:
                return JSONResponse({"error": str(exc)}, status_code=exc.status)
            self.state.version += 1
            return JSONResponse(data)

        return endpoint

    async def stream(self, request: Request) -> Response:
        """Server-sent events: ``update`` (the state's version and counts) when the state
        changed, at most once per ``refresh`` seconds; a comment every 15 s otherwise."""

        async def events() -> AsyncIterator[str]:
            seen, quiet = -1, time.monotonic()
            yield "retry: 2000\n\n"
            while True:
                if self.state.version != seen:
                    seen = self.state.version
                    quiet = time.monotonic()
                    yield f"event: update\ndata: {json.dumps(_views.summary(self))}\n\n"
                elif time.monotonic() - quiet > 15:
                    quiet = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(self.refresh)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def create_app(app: Celeriac, **options: Any) -> Any:
    """The dashboard of ``app`` as an ASGI app, to serve or to mount (``app.mount(
    "/tasks", create_app(celery_app, auth=Auth.of(tokens=[...])))`` in FastAPI or
    Starlette). Options: ``auth`` (:class:`~celeriac.dashboard.Auth`), ``max_tasks``,
    ``refresh``, ``poll_interval``, ``enable_events``."""
    return Dashboard(app, **options).asgi


__all__ = ["Dashboard", "create_app"]
