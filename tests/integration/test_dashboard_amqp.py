"""The dashboard's dead letters on RabbitMQ (the broker's dead-letter queue): listed,
requeued to their queue and deleted from the page's API, the others left in place."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from celeriac import Celery
from celeriac.dashboard import Dashboard
from celeriac.transports.amqp.broker import DEAD_LETTER_QUEUE
from servers import delete_queues

QUEUE = "dash-dead-letters"
CHANGE = {"X-Celeriac-Dashboard": "1"}


def test_dead_letters_on_rabbitmq_are_requeued_and_deleted(rabbit: str) -> None:
    delete_queues(rabbit, [QUEUE, DEAD_LETTER_QUEUE])
    app = Celery("dashdlq", broker=rabbit, backend="memory://")
    dash = Dashboard(app, poll_interval=30, enable_events=False)

    async def main() -> tuple[list[dict[str, Any]], list[Any], Any, list[Any]]:
        broker = await app.get_broker()
        sent = [await app.asend_task("dlq.poison", (n,), queue=QUEUE) for n in range(3)]
        for n in range(3):
            (got,) = await broker.fetch([QUEUE], 1, 5.0)
            await broker.dead_letter(got, f"poison {n}")
        transport = httpx.ASGITransport(app=dash.asgi, client=("127.0.0.1", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            listed = (await http.get("/api/dead-letters")).json()["letters"]
            by_task = {d["task_id"]: d for d in listed}
            key = {k: by_task[sent[1].id][k] for k in ("queue", "failed_at")}
            requeued = await http.post("/api/dead-letters/requeue", json=key, headers=CHANGE)
            again = await http.post("/api/dead-letters/requeue", json=key, headers=CHANGE)
            key = {k: by_task[sent[0].id][k] for k in ("queue", "failed_at")}
            deleted = await http.post("/api/dead-letters/delete", json=key, headers=CHANGE)
            left = (await http.get("/api/dead-letters")).json()["letters"]
        back = await broker.fetch([QUEUE], 10, 5.0)
        await broker.ack(back)
        await dash.stop()
        return (
            listed,
            [requeued.json(), again.status_code, deleted.json()],
            [d.message.task_id for d in back if d.message],
            [d["task_id"] for d in left],
        )

    try:
        listed, answers, back, left = asyncio.run(main())
    finally:
        app.close()
        delete_queues(rabbit, [QUEUE, DEAD_LETTER_QUEUE])
    assert [d["reason"] for d in listed] == ["poison 2", "poison 1", "poison 0"]  # newest first
    assert answers[0] == {"queue": QUEUE, "requeue": True, "removed": True}
    assert answers[1] == 404  # requeued already
    assert answers[2] == {"queue": QUEUE, "delete": True, "removed": True}
    assert back == [listed[1]["task_id"]]  # the requeued one is on its queue again
    assert left == [listed[0]["task_id"]]  # the third stays a dead letter
