"""Conformance of the raw key values a backend keeps for ``app.backend.get``/``set``/
``delete`` (Celery's key-value calls). See :mod:`celeriac.testing.conformance`."""

from __future__ import annotations

import asyncio
import time
import uuid

from celeriac.testing._canvas_suite import backend_offers
from celeriac.testing._support import BackendFactory, opened, run


def _key(name: str) -> str:
    """A key no other run uses (raw keys may live outside the factory's namespace)."""
    return f"celeriac-kv-test-{name}-{uuid.uuid4().hex}"


class KeyValueConformance:
    """``kv_get``/``kv_set``/``kv_delete``: bytes under a key, with an expiry, shared by
    every instance of the factory (raw keys need not be in its namespace: on Redis, as
    in Celery, they are the caller's own)."""

    def test_key_values_are_implemented(self, backend_factory: BackendFactory) -> None:
        assert backend_offers(type(backend_factory()), "key values")

    def test_set_get_delete_round_trip(self, backend_factory: BackendFactory) -> None:
        k = {n: _key(n) for n in ("kv-missing", "kv-1", "kv-never-set", "same-name")}
        k.update({n: _key(n) for n in ("kv-short", "kv-long")})

        async def main() -> None:
            async with opened(backend_factory()) as one, opened(backend_factory()) as two:
                assert await one.kv_get(k["kv-missing"]) is None
                await one.kv_set(k["kv-1"], b"\x00\xffvalue", None)
                assert await two.kv_get(k["kv-1"]) == b"\x00\xffvalue"
                await two.kv_set(k["kv-1"], b"second", 60)
                assert await one.kv_get(k["kv-1"]) == b"second"
                await one.kv_delete(k["kv-1"])
                await one.kv_delete(k["kv-never-set"])
                assert await two.kv_get(k["kv-1"]) is None

        run(main())

    def test_key_values_are_not_results(self, backend_factory: BackendFactory) -> None:
        """A key value and a task result of the same name are different entries."""

        k = {n: _key(n) for n in ("kv-missing", "kv-1", "kv-never-set", "same-name")}
        k.update({n: _key(n) for n in ("kv-short", "kv-long")})

        async def main() -> None:
            async with opened(backend_factory()) as backend:
                await backend.kv_set(k["same-name"], b"raw", None)
                assert await backend.get(k["same-name"]) is None
                await backend.kv_delete(k["same-name"])

        run(main())

    def test_key_value_expiry(self, backend_factory: BackendFactory) -> None:
        k = {n: _key(n) for n in ("kv-missing", "kv-1", "kv-never-set", "same-name")}
        k.update({n: _key(n) for n in ("kv-short", "kv-long")})

        async def main() -> None:
            async with opened(backend_factory()) as backend:
                stored = time.time()
                await backend.kv_set(k["kv-short"], b"x", 0.2)
                await backend.kv_set(k["kv-long"], b"y", 60)
                deadline = time.monotonic() + 5
                # expiry is time passing, not an event: poll (also catches early expiry)
                while await backend.kv_get(k["kv-short"]) is not None:
                    assert time.monotonic() < deadline, "kv-short never expired"
                    await asyncio.sleep(0.02)
                assert time.time() - stored >= 0.18
                assert await backend.kv_get(k["kv-long"]) == b"y"
                await backend.kv_delete(k["kv-long"])

        run(main())


__all__ = ["KeyValueConformance"]
