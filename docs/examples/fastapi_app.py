# app.py: a FastAPI app that sends tasks and reads their results without blocking its loop.
from fastapi import FastAPI

from celeriac import Celery

celery_app = Celery("fastapi_app", broker="memory://")  # e.g. "redis://localhost:6379/0"
api = FastAPI()


@celery_app.task
def add(x: int, y: int) -> int:
    return x + y


@api.post("/add")
async def start_add(x: int, y: int) -> dict[str, str]:
    result = await add.adelay(x, y)  # async send: no thread, no blocking call
    return {"task_id": result.id}


@api.get("/tasks/{task_id}")
async def task_status(task_id: str) -> dict[str, object]:
    result = celery_app.AsyncResult(task_id)
    if not result.ready():
        return {"state": result.state}
    return {"state": result.state, "result": await result.aget(timeout=1)}


async def _check() -> None:  # an HTTP client on the app, as the tests run it
    import httpx

    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        task_id = (await client.post("/add", params={"x": 2, "y": 3})).json()["task_id"]
        await celery_app.AsyncResult(task_id).aget(timeout=10)
        reply = await client.get(f"/tasks/{task_id}")
        assert reply.json() == {"state": "SUCCESS", "result": 5}, reply.json()


if __name__ == "__main__":  # what the tests run: the app, a worker, an HTTP client
    import asyncio

    from celeriac.testing import TestWorker

    with TestWorker(celery_app):
        asyncio.run(_check())
