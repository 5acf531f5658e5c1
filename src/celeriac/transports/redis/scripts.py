"""Redis plumbing shared by the Redis broker and result backend.

Connections (celeriac's own client, :mod:`.resp_async`, for every URL form:
``redis://``, ``rediss://``, ``unix://``/``redis+socket://``,
``sentinel://h1:p1;sentinel://h2:p2``), the error wording, and the Lua scripts beside
this module: each ``<name>.lua`` is run with ``common.lua`` prepended, by EVALSHA with a
fallback to EVAL when the server answers NOSCRIPT (its script cache is empty after a
restart).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from celeriac.exceptions import BackendError, BrokerError
from celeriac.transports.redis.layout import key_prefix, script_source, split_url
from celeriac.transports.redis.resp import (
    Endpoint,
    ReplyError,
    RespError,
    RespRefusedError,
    Sentinels,
    parse_target,
)
from celeriac.transports.redis.resp_async import AsyncConnection, Push, run_script
from celeriac.utils.log import mask_url

logger = logging.getLogger("celeriac.transports.redis")


#: Options of redis-py's pool that this client accepts but has no use for (one
#: connection per use, no pool). ``health_check_interval`` is not one: it sets how soon
#: a silent connection is PINGed and found dead (:mod:`.resp_async`).
INERT_OPTIONS = ("max_connections",)
_warned: set[str] = set()


def target(url: str, options: dict[str, Any]) -> Endpoint | Sentinels:
    """Where ``url`` (already stripped by :func:`split_url`) leads, or
    :class:`~celeriac.exceptions.ImproperlyConfigured`. An option set that does nothing
    here is said once per process, not ignored silently."""
    for name in INERT_OPTIONS:
        if options.get(name) is not None and name not in _warned:
            _warned.add(name)
            logger.warning(
                "Redis option %s=%r does nothing here: celeriac's client keeps no "
                "connection pool; remove it to silence this line",
                name,
                options[name],
            )
    return parse_target(url, options)


def connection(
    where: Endpoint | Sentinels,
    *,
    push: Push | None = None,
    on_lost: Callable[[BaseException], None] | None = None,
) -> AsyncConnection:
    """A new (lazily connected) asyncio connection to ``where``."""
    return AsyncConnection(where, push=push, on_lost=on_lost)


class Script:
    """One ``.lua`` file (with ``common.lua`` prepended), run by EVALSHA."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.text = script_source(name)
        self.sha = hashlib.sha1(self.text.encode("utf-8")).hexdigest()

    async def __call__(self, conn: AsyncConnection, *args: Any) -> Any:
        return await run_script(conn, self.text, self.sha, *args)


@functools.cache
def script(name: str) -> Script:
    """The loaded script ``name`` (``fetch``, ``ack``, ...), parsed once per process."""
    return Script(name)


async def run_fast(conn: AsyncConnection, name: str, *args: Any) -> Any:
    """Run the script ``name`` on ``conn`` (EVALSHA, EVAL after a server restart)."""
    loaded = script(name)
    return await run_script(conn, loaded.text, loaded.sha, *args)


def first_error(replies: list[Any]) -> list[Any]:
    """``replies``, raising the first error reply among them."""
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise reply
    return replies


@contextlib.contextmanager
def translated_errors(
    what: str, url: str, error: type[BrokerError | BackendError]
) -> Iterator[None]:
    """Raise the client's and the socket's errors as ``error`` (BrokerError,
    BackendError), naming ``what`` and the URL with its password masked (``refused``
    when the server refused the connection)."""
    try:
        yield
    except RespError as exc:
        translated = error(f"{what} {mask_url(url)}: {exc.kind}: {exc}")
        translated.refused = isinstance(exc, RespRefusedError)
        raise translated from exc
    except OSError as exc:
        raise error(f"{what} {mask_url(url)}: {type(exc).__name__}: {exc}") from exc


__all__ = [
    "Script",
    "connection",
    "first_error",
    "key_prefix",
    "run_fast",
    "script",
    "split_url",
    "target",
    "translated_errors",
]
