# site.py: the dashboard inside your own FastAPI app, under /tasks, with a token per role.
from fastapi import FastAPI

from celeriac import Celery
from celeriac.dashboard import Auth, create_app

celery_app = Celery("site", broker="memory://")  # e.g. "redis://localhost:6379/0"
site = FastAPI()
site.mount(
    "/tasks",
    create_app(
        celery_app,
        auth=Auth.of(tokens=["change-me-admin-token"], readonly_tokens=["change-me-viewer"]),
        max_tasks=10_000,  # the tasks kept in memory (the backend keeps the rest)
    ),
)


async def _check() -> None:  # an HTTP client on the app, as the tests run it
    import httpx

    transport = httpx.ASGITransport(app=site)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        assert (await client.get("/tasks/api/me")).status_code == 401
        viewer = {"Authorization": "Bearer change-me-viewer"}
        me = (await client.get("/tasks/api/me", headers=viewer)).json()
        assert me["role"] == "read-only", me
        page = (await client.get("/tasks/", headers=viewer)).text
        assert "/tasks/static/app.js" in page


if __name__ == "__main__":
    import asyncio

    asyncio.run(_check())
