"""Redis plumbing shared by the Redis broker and result backend.

URL parsing (``redis://``, ``rediss://``, ``unix://``/``redis+socket://``,
``sentinel://h1:p1;sentinel://h2:p2``), client creation on redis-py's asyncio client
(hiredis parses replies when it is installed), and the Lua scripts beside this module:
each ``<name>.lua`` is run with ``common.lua`` prepended, by EVALSHA with a fallback to
EVAL when the server answers NOSCRIPT (its script cache is empty after a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports.redis.layout import key_prefix, script_source, split_url
from celeriac.transports.redis.resp import RespError, parse_endpoint
from celeriac.transports.redis.resp_async import AsyncConnection, run_script
from celeriac.utils.log import mask_url

#: Transport options handed to redis-py's connections.
CLIENT_OPTIONS = (
    "socket_timeout",
    "socket_connect_timeout",
    "socket_keepalive",
    "max_connections",
    "health_check_interval",
)
#: TLS options (``broker_use_ssl`` and the like), for ``rediss://`` only.
TLS_OPTIONS = (
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)
_DEFAULTS: dict[str, Any] = {
    "socket_timeout": 30.0,
    "socket_connect_timeout": 5.0,
    "socket_keepalive": True,
}


def _client_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(_DEFAULTS)
    kwargs.update({k: options[k] for k in CLIENT_OPTIONS if options.get(k) is not None})
    kwargs["retry"] = Retry(NoBackoff(), 0)  # callers decide what is safe to retry
    return kwargs


def make_client(url: str, options: dict[str, Any]) -> redis.asyncio.Redis:
    """An asyncio client for ``url`` (already stripped by :func:`split_url`)."""
    scheme = url.split("://", 1)[0].lower()
    kwargs = _client_kwargs(options)
    if scheme == "sentinel":
        return _sentinel_master(url, options, kwargs)
    if scheme == "redis+socket":
        url = "unix://" + url.split("://", 1)[1]
    if scheme in {"unix", "redis+socket"}:
        kwargs.pop("socket_keepalive", None)  # TCP only
    if scheme == "rediss":
        kwargs.update({k: options[k] for k in TLS_OPTIONS if options.get(k) is not None})
    if scheme not in {"redis", "rediss", "unix", "redis+socket"}:
        raise ImproperlyConfigured(f"{url!r} is not a Redis URL")
    try:
        return redis.asyncio.Redis.from_url(url, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"Redis URL {url!r}: {exc}") from None


def _sentinel_master(
    url: str, options: dict[str, Any], kwargs: dict[str, Any]
) -> redis.asyncio.Redis:
    master_name = options.get("master_name")
    if not master_name:
        raise ImproperlyConfigured(
            f"{url!r}: a sentinel:// URL needs the master's name in the transport options "
            f"(broker_transport_options={{'master_name': 'mymaster'}})"
        )
    hosts: list[tuple[str, int]] = []
    first = None
    for part in url.split(";"):
        parsed = urlsplit(part.strip())
        if not parsed.hostname:
            raise ImproperlyConfigured(f"sentinel URL part {part!r} has no host")
        first = first or parsed
        hosts.append((parsed.hostname, parsed.port or 26379))
    assert first is not None
    db = int(first.path.strip("/") or 0)
    if first.password:
        kwargs.setdefault("password", first.password)
    if first.username:
        kwargs.setdefault("username", first.username)
    sentinel_kwargs = dict(options.get("sentinel_kwargs") or {})
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts, sentinel_kwargs=sentinel_kwargs, **_client_kwargs({})
    )
    master: redis.asyncio.Redis = sentinel.master_for(str(master_name), db=db, **kwargs)
    return master


async def close_client(client: redis.asyncio.Redis) -> None:
    """Close ``client``'s connections (and, for sentinel URLs, the sentinels')."""
    with contextlib.suppress(redis.RedisError, OSError):
        await client.aclose()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        with contextlib.suppress(redis.RedisError, OSError):
            await sentinel.aclose()


class Script:
    """One ``.lua`` file (with ``common.lua`` prepended), run by EVALSHA."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.text = script_source(name)
        self.sha = hashlib.sha1(self.text.encode("utf-8")).hexdigest()

    async def __call__(self, client: redis.asyncio.Redis, *args: Any) -> Any:
        try:
            return await client.evalsha(self.sha, 0, *args)
        except redis.exceptions.NoScriptError:
            return await client.eval(self.text, 0, *args)


@functools.cache
def script(name: str) -> Script:
    """The loaded script ``name`` (``fetch``, ``ack``, ...), parsed once per process."""
    return Script(name)


__all__ = ["Script", "close_client", "key_prefix", "make_client", "script", "split_url"]


@contextlib.contextmanager
def translated_errors(
    what: str, url: str, error: type[Exception], client: redis.asyncio.Redis | None = None
) -> Iterator[None]:
    """Raise redis-py's and the socket's errors as ``error`` (BrokerError, BackendError),
    naming ``what`` and the URL with its password masked.

    After a connection error the idle connections of ``client``'s pool are closed too:
    redis-py does not notice that a restarted server closed them, so each would fail
    its next command in turn, and an outage would look like many.
    """
    try:
        yield
    except RespError as exc:  # celeriac's own connections (the worker's hot path)
        raise error(f"{what} {mask_url(url)}: {exc.kind}: {exc}") from exc
    except (redis.RedisError, OSError) as exc:
        if client is not None and isinstance(exc, redis.ConnectionError | OSError):
            _drop_idle_connections(client)
        raise error(f"{what} {mask_url(url)}: {type(exc).__name__}: {exc}") from exc


def fast_connection(url: str, options: dict[str, Any]) -> AsyncConnection | None:
    """celeriac's own asyncio connection to ``url`` for the hot path (fetch, ack, store),
    or None when the URL needs redis-py (sentinel, options only redis-py knows)."""
    endpoint = parse_endpoint(url, options)
    return None if endpoint is None else AsyncConnection(endpoint)


async def run_fast(conn: AsyncConnection, name: str, *args: Any) -> Any:
    """Run the script ``name`` on ``conn`` (EVALSHA, EVAL after a server restart)."""
    loaded = script(name)
    return await run_script(conn, loaded.text, loaded.sha, *args)


_dropping: set[asyncio.Task[None]] = set()


def _drop_idle_connections(client: redis.asyncio.Redis) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = loop.create_task(_disconnect_idle(client))
    _dropping.add(task)
    task.add_done_callback(_dropping.discard)


async def _disconnect_idle(client: redis.asyncio.Redis) -> None:
    with contextlib.suppress(redis.RedisError, OSError):
        await client.connection_pool.disconnect(inuse_connections=False)
