"""Fixtures of the fault-injection suite: ``open_scenario(kind, ...)`` gives a
:class:`~scenario.Scenario` on a broker of the test's own (a SQLite file, a leased Redis
database or a private ``redis-server``, a queue in the process's private RabbitMQ vhost),
optionally behind a :class:`~proxy.FaultProxy`; everything is stopped afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from yarl import URL

from faults.proxy import FaultProxy
from faults.scenario import Broker, Scenario
from servers import PrivateRedis, delete_queues, leased_database, need_redis_server

OpenScenario = Callable[..., Scenario]


@contextlib.contextmanager
def _broker(
    request: pytest.FixtureRequest, kind: str, directory: Path, *, proxy: bool, private: bool
) -> Iterator[Broker]:
    with contextlib.ExitStack() as stack:
        if kind == "sqlite":
            broker = Broker(kind, f"sqlite:///{directory / 'broker.db'}")
        elif kind == "redis" and private:
            need_redis_server()
            (directory / "redis").mkdir()
            server = PrivateRedis(directory / "redis").start()
            stack.callback(server.kill)
            broker = Broker(kind, server.url, kill=server.kill, restart=server.start)
        elif kind == "redis":
            broker = Broker(kind, stack.enter_context(leased_database()))
        elif kind == "amqp":
            broker = Broker(kind, request.getfixturevalue("rabbit"))
        else:
            raise ValueError(kind)
        if proxy:
            target = URL(broker.url)
            assert target.host is not None and target.port is not None
            broker.proxy = stack.enter_context(FaultProxy(target.host, target.port))
        yield broker


@pytest.fixture
def open_scenario(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenScenario]:
    opened: list[Scenario] = []
    with contextlib.ExitStack() as stack:

        def open_(
            kind: str, *, proxy: bool = False, private: bool = False, lease: float = 2.0
        ) -> Scenario:
            directory = tmp_path / f"{kind}-{len(opened)}"  # several in one test: apart
            directory.mkdir()
            broker = stack.enter_context(
                _broker(request, kind, directory, proxy=proxy, private=private)
            )
            scenario = Scenario(directory, broker, lease)
            opened.append(scenario)
            if kind == "amqp":
                stack.callback(delete_queues, broker.url, [scenario.queue])
            stack.callback(scenario.close)
            return scenario

        yield open_
