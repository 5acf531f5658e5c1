"""The core result-backend contract's conformance tests (store, get, wait, forget);
groups and chord counters are in :mod:`celeriac.testing._canvas_suite`. See
:mod:`celeriac.testing.conformance`."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from celeriac import states
from celeriac.protocol import result_meta
from celeriac.testing._canvas_suite import backend_offers
from celeriac.testing._support import BackendFactory, opened, run


def _meta(task_id: str, status: str = states.SUCCESS, result: Any = None) -> dict[str, Any]:
    return result_meta(task_id, status, result)


class BackendClaims:
    """The check shared by the backend mixins that a test class can start from."""

    def test_claimed_capabilities_match_the_backend(self, backend_factory: BackendFactory) -> None:
        """The test class composes the mixin of exactly the optional parts of the
        contract the backend class implements (overrides instead of inheriting the
        ``NotImplementedError`` defaults)."""
        from celeriac.testing._registry import BACKEND_MIXINS, backend_offers  # noqa: PLC0415

        cls = type(backend_factory())
        offered = {name for name in BACKEND_MIXINS if backend_offers(cls, name)}
        tested = {name for name, mixin in BACKEND_MIXINS.items() if isinstance(self, mixin)}
        assert tested == offered, f"{cls.__name__}: mixins for {offered}, not {tested}"


class BackendConformance(BackendClaims):
    """Behaviour every backend that stores results by task id shows (the core
    contract). Needs a ``backend_factory`` fixture; compose it with the mixins of what
    else it offers."""

    def test_store_get_round_trip_with_tagged_types(self, backend_factory: BackendFactory) -> None:
        value = {
            "when": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc),
            "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "amount": Decimal("10.25"),
            "raw": b"\x00\xffbytes",
            "text": "ünïcode",
            "nested": [1, 2.5, None, True],
        }

        async def main() -> None:
            async with opened(backend_factory()) as backend:
                await backend.store("t-1", _meta("t-1", result=value), None)
                assert await backend.get("t-1") == _meta("t-1", result=value)
                await backend.store("t-1", _meta("t-1", states.FAILURE, "boom"), None)
                assert await backend.get("t-1") == _meta("t-1", states.FAILURE, "boom")

        run(main())

    def test_missing_is_none(self, backend_factory: BackendFactory) -> None:
        async def main() -> None:
            async with opened(backend_factory()) as backend:
                assert await backend.get("missing") is None
                assert await backend.get_many(["missing"]) == {}

        run(main())

    def test_ttl_expiry(self, backend_factory: BackendFactory) -> None:
        async def main() -> None:
            async with opened(backend_factory()) as backend:
                stored = time.time()
                await backend.store("short", _meta("short"), 0.2)
                await backend.store("long", _meta("long"), 60)
                assert await backend.get("short") is not None
                deadline = time.monotonic() + 5
                # Expiry is the passing of time, not an event: poll for it to also catch
                # a backend that expires entries too early.
                while await backend.get("short") is not None and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                assert await backend.get("short") is None
                assert time.time() - stored >= 0.18
                assert await backend.get("long") is not None
                assert await backend.wait(["short"], 0.0) == {}

        run(main())

    def test_forget(self, backend_factory: BackendFactory) -> None:
        async def main() -> None:
            async with opened(backend_factory()) as backend:
                await backend.store("t-1", _meta("t-1"), None)
                await backend.forget("t-1")
                await backend.forget("never-stored")
                assert await backend.get("t-1") is None

        run(main())

    def test_store_many_get_many(self, backend_factory: BackendFactory) -> None:
        async def main() -> None:
            async with opened(backend_factory()) as backend:
                ids = [f"t-{n}" for n in range(5)]
                await backend.store_many([(i, _meta(i, result=i), None) for i in ids])
                got = await backend.get_many([*ids, "missing"])
                assert got == {i: _meta(i, result=i) for i in ids}

        run(main())

    def test_wait_returns_when_stored_from_another_task(
        self, backend_factory: BackendFactory
    ) -> None:
        async def main() -> None:
            async with opened(backend_factory()) as backend:
                waiting = asyncio.create_task(backend.wait(["a", "b"], 10.0))
                await asyncio.sleep(0)  # let the wait start
                await backend.store("b", _meta("b", result=2), None)
                assert await asyncio.wait_for(waiting, 5) == {"b": _meta("b", result=2)}

        run(main())

    def test_wait_returns_when_stored_from_another_thread(
        self, backend_factory: BackendFactory
    ) -> None:
        async def store_elsewhere() -> None:
            async with opened(backend_factory()) as other:
                await other.store("x", _meta("x", result="there"), None)

        async def main() -> None:
            async with opened(backend_factory()) as backend:
                waiting = asyncio.create_task(backend.wait(["x"], 10.0))
                await asyncio.sleep(0)  # let the wait start
                start = time.monotonic()
                await asyncio.to_thread(run, store_elsewhere())
                assert await asyncio.wait_for(waiting, 5) == {"x": _meta("x", result="there")}
                assert time.monotonic() - start < 1.0

        run(main())

    def test_wait_timeout_returns_empty(self, backend_factory: BackendFactory) -> None:
        async def main() -> None:
            async with opened(backend_factory()) as backend:
                await backend.store("busy", _meta("busy", states.STARTED), None)
                start = time.monotonic()
                assert await backend.wait(["busy", "missing"], 0.1) == {}
                assert 0.08 <= time.monotonic() - start < 2.0

        run(main())


class ReplyConformance(BackendClaims):
    """Results sent to the caller's reply queue (``needs_reply_to``, ``store_replies``:
    ``rpc://``) instead of stored by id. The factory's ``reply_to`` option names the
    caller's queue."""

    def test_replies_are_implemented(self, backend_factory: BackendFactory) -> None:
        backend = backend_factory()
        assert backend.needs_reply_to and backend_offers(type(backend), "replies")

    def test_replies_reach_the_caller(self, backend_factory: BackendFactory) -> None:
        key, task, other = (str(uuid.uuid4()) for _ in range(3))
        started, done = _meta(task, states.STARTED), _meta(task, result={"n": 1})

        async def main() -> None:
            async with (
                opened(backend_factory({"reply_to": key})) as caller,
                opened(backend_factory()) as worker,
            ):
                await worker.store_replies(
                    [(key, task, started), (None, other, _meta(other)), (key, task, done)]
                )
                assert await caller.wait([task], 10.0) == {task: done}
                assert await caller.get(task) == done
                assert await caller.get(other) is None  # it had no reply_to: not sent
                await caller.forget(task)
                assert await caller.get(task) is None

        run(main())

    def test_a_waiting_caller_wakes_on_a_reply(self, backend_factory: BackendFactory) -> None:
        key, task = str(uuid.uuid4()), str(uuid.uuid4())

        async def main() -> None:
            async with (
                opened(backend_factory({"reply_to": key})) as caller,
                opened(backend_factory()) as worker,
            ):
                waiting = asyncio.create_task(caller.wait([task], 10.0))
                await asyncio.sleep(0)  # let the wait start
                start = time.monotonic()
                await worker.store_replies([(key, task, _meta(task, result=2))])
                assert await asyncio.wait_for(waiting, 5) == {task: _meta(task, result=2)}
                assert time.monotonic() - start < 1.0
                assert await caller.wait([task, "missing"], 0.1) == {task: _meta(task, result=2)}

        run(main())

    def test_replies_arrive_in_the_order_sent(self, backend_factory: BackendFactory) -> None:
        key, task = str(uuid.uuid4()), str(uuid.uuid4())
        steps = [_meta(task, "PROGRESS", {"step": n}) for n in range(5)]

        async def main() -> None:
            async with (
                opened(backend_factory({"reply_to": key})) as caller,
                opened(backend_factory()) as worker,
            ):
                for step in steps:  # each its own send
                    await worker.store_replies([(key, task, step)])
                assert await caller.get(task) == steps[-1]

        run(main())

    def test_a_timed_out_wait_loses_no_reply(self, backend_factory: BackendFactory) -> None:
        """A reply taken from the queue while the wait that asked for it gave up (its
        timeout, a cancel) is kept for the next call."""
        key, task = str(uuid.uuid4()), str(uuid.uuid4())

        async def main() -> None:
            async with (
                opened(backend_factory({"reply_to": key})) as caller,
                opened(backend_factory()) as worker,
            ):
                assert await caller.wait([task], 0.05) == {}
                waiting = asyncio.create_task(caller.wait([task], 10.0))
                await asyncio.sleep(0.01)
                waiting.cancel()
                await worker.store_replies([(key, task, _meta(task, result=3))])
                assert await caller.wait([task], 10.0) == {task: _meta(task, result=3)}

        run(main())


__all__ = ["BackendClaims", "BackendConformance", "ReplyConformance"]
