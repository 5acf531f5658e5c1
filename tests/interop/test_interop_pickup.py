"""An idle celeriac worker picks up a real Celery client's message at once, from every
priority list, and does not poll meanwhile (issue 15): it waits in one bounded
``BLMOVE key key RIGHT RIGHT`` per watched key (transports/redis/wakeup.py).

The bound on the pick-up delay is generous, so the test cannot flake under load;
``bench/pickup.py`` measures the real figures."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import celery
import pytest
import redis

from servers import leased_database
from support import WorkerProcess, close_celery_app, wait_until, write_module

pytestmark = pytest.mark.slow

TASKS = """
import time
from celeriac import Celery

app = Celery("ptasks", broker="{url}")

@app.task
def started():
    return time.time()
"""

#: the keys a consumer of the queue ``celery`` watches: Celery's four priority lists and
#: celeriac's notify list
WATCHED = 5


def _started() -> float:
    return time.time()


@pytest.fixture
def db_url() -> Iterator[str]:
    with leased_database() as url:
        yield url


def _db(url: str) -> int:
    return int(url.rsplit("/", 1)[1])


def blocked_waits(r: redis.Redis, db: int) -> int:
    """How many connections on database ``db`` are blocked in BLMOVE."""
    return sum(
        1
        for c in r.client_list()
        if int(c.get("db", -1)) == db and "b" in c.get("flags", "") and c.get("cmd") == "blmove"
    )


def monitored(url: str, seconds: float) -> list[str]:
    """The commands clients sent to ``url``'s database during ``seconds`` (MONITOR; the
    commands scripts run inside Redis are left out)."""
    db = _db(url)
    sock = socket.create_connection(("127.0.0.1", 6379), timeout=2)
    commands: list[str] = []
    try:
        sock.sendall(b"MONITOR\r\n")
        buffer = b""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\r\n")
            for line in lines:
                # +<time> [<db> <client address>|lua] "COMMAND" ...
                if not line.startswith(b"+") or b"[" not in line:
                    continue
                where, _, rest = line.partition(b"[")[2].partition(b"]")
                parts = where.split()
                if len(parts) == 2 and parts[0] == str(db).encode() and parts[1] != b"lua":
                    commands.append(rest.split(b'"')[1].decode().upper())
    finally:
        sock.close()
    return commands


def test_an_idle_worker_picks_up_a_celery_clients_message_without_polling(
    db_url: str, tmp_path: Path
) -> None:
    write_module(tmp_path, "ptasks", TASKS.format(url=db_url))
    client = celery.Celery("ptasks", broker=db_url, backend=db_url)
    started = client.task(name="ptasks.started")(_started)
    r = redis.Redis.from_url(db_url)
    db = _db(db_url)
    try:
        with WorkerProcess(tmp_path, "ptasks", "-P", "threads", "-c", "1", "-l", "info"):
            started.delay().get(timeout=10)  # the client's connections are made
            delays = []
            # kombu's lists: no priority -> "celery", 9 -> "celery\x06\x169", ...
            for priority in (None, 9, 3, 6, None):
                wait_until(lambda: blocked_waits(r, db) >= WATCHED, 10, "the worker to wait")
                sent = time.time()
                began = started.apply_async(priority=priority).get(timeout=10)
                delays.append(began - sent)
            # the bench gives the real figure (a few ms); this bound only fails on polling
            assert max(delays) < 0.5, delays
            wait_until(lambda: blocked_waits(r, db) >= WATCHED, 10, "the worker to wait")
            commands = Counter(monitored(db_url, 3.0))
        # idle: its waits (re-armed every 5 s), and one fetch script a second (the
        # consumer's loop, which also returns expired leases); polling would be 50/s
        others = sum(n for name, n in commands.items() if name != "BLMOVE")
        assert others <= 8, commands
        assert commands["EVALSHA"] <= 5, commands
    finally:
        r.close()
        close_celery_app(client)
