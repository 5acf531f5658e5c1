"""Pure helpers of the producer: routing tables, ETA and expiry times, link lists."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any


def from_routes(
    routes: Any,
    name: str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    options: dict[str, Any],
    task: Any,
) -> Any:
    """The route ``task_routes`` gives a task (a table, a router callable, or a list of
    them, the first answer winning): a queue (its name or a queue object), a mapping with
    ``queue`` or ``exchange``/``routing_key``, or None."""
    if not routes:
        return None
    for router in routes if isinstance(routes, (list, tuple)) else [routes]:
        if callable(router):
            route = router(name, args, kwargs, options, task=task)
        else:
            route = match_route(router, name)
        if isinstance(route, dict):
            if route.get("queue") or route.get("exchange") or route.get("routing_key"):
                return route
        elif route:
            return route
    return None


def match_route(table: Any, name: str) -> Any:
    if not isinstance(table, dict):
        return None
    if name in table:
        return table[name]
    for pattern, route in table.items():
        if isinstance(pattern, re.Pattern):
            if pattern.match(name):
                return route
        elif isinstance(pattern, str) and fnmatch.fnmatchcase(name, pattern):
            return route
    return None


def as_utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"eta must be a datetime, got {value!r}")
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def expiry_time(expires: Any, now: datetime) -> datetime | None:
    if expires is None:
        return None
    if isinstance(expires, (int, float)):
        return now + timedelta(seconds=float(expires))
    if isinstance(expires, timedelta):
        return now + expires
    return as_utc(expires)


def sig_list(value: Any) -> list[Any] | None:
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    return [dict(item) if isinstance(item, dict) else item for item in items]
