"""The web dashboard: ``celeriac -A proj dashboard``, or :func:`create_app` to mount in a
FastAPI, Starlette or Django (ASGI) project. Needs the ``dashboard`` extra (Starlette,
and uvicorn for the command).

It shows workers, queues, tasks (with tracebacks and canvases), periodic entries and
dead letters, from the events, the workers' remote control, the broker and the result
backend; see ``docs/user-guide/dashboard.md``.
"""

from __future__ import annotations

from celeriac.dashboard._auth import ADMIN, READ_ONLY, Auth
from celeriac.dashboard._state import DashboardState
from celeriac.dashboard._web import Dashboard, create_app

__all__ = ["ADMIN", "READ_ONLY", "Auth", "Dashboard", "DashboardState", "create_app"]
