"""Helpers shared by the conformance suites: factories, running coroutines from sync
tests, and small numbered task messages."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar

from celeriac.protocol import Message, build_task_message, json_loads
from celeriac.transports.backend import ResultBackend
from celeriac.transports.broker import Broker, Delivery

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

QUEUE = "conformance"


class Factory(Protocol[T_co]):
    """Makes a new, unconnected instance on the test's namespace; ``options`` are the
    broker or backend options (``visibility_timeout``, ...)."""

    def __call__(self, options: dict[str, Any] | None = None) -> T_co: ...


BrokerFactory = Factory[Broker]
BackendFactory = Factory[ResultBackend]


class _Resource(Protocol):
    async def connect(self) -> None: ...
    async def close(self) -> None: ...


R = TypeVar("R", bound=_Resource)


class _URLFactory(Generic[T]):
    def __init__(self, cls: Callable[..., T], url: str) -> None:
        self.cls, self.url = cls, url

    def __call__(self, options: dict[str, Any] | None = None) -> T:
        return self.cls(self.url, options=options)


def url_factory(cls: Callable[..., T], url: str) -> Factory[T]:
    """A factory making ``cls(url, options=...)``: all instances share ``url``."""
    return _URLFactory(cls, url)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def run_in_threads(*coros: Coroutine[Any, Any, None], timeout: float = 30.0) -> None:
    """Run each coroutine on its own thread and event loop; re-raise the first error."""
    errors: list[BaseException] = []

    def target(coro: Coroutine[Any, Any, None]) -> None:
        try:
            run(coro)
        except BaseException as exc:  # handed to the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(c,)) for c in coros]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]
    assert not any(t.is_alive() for t in threads), "a consumer thread did not finish"


@asynccontextmanager
async def opened(resource: R) -> AsyncIterator[R]:
    """Connect ``resource``, close it afterwards."""
    await resource.connect()
    try:
        yield resource
    finally:
        await resource.close()


def message(n: int = 0, **kwargs: Any) -> Message:
    """A small task message whose argument identifies it."""
    return build_task_message("conformance.task", (n,), **kwargs)


def number(delivery: Delivery) -> int:
    """The argument of a message built by :func:`message`."""
    assert delivery.message is not None, delivery.error
    args, _kwargs, _embed = json_loads(delivery.message.body)
    return int(args[0])


__all__ = [
    "QUEUE",
    "BackendFactory",
    "BrokerFactory",
    "Factory",
    "message",
    "number",
    "opened",
    "run",
    "run_in_threads",
    "url_factory",
]
