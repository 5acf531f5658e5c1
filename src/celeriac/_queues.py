"""``task_queues``: the queues an app declares, and the ones a worker consumes.

As in Celery, a worker started without ``-Q`` consumes every queue in ``task_queues``
(only ``task_default_queue`` when it is empty). A queue is given as kombu's ``Queue``
(read by its attributes: kombu is not needed), celeriac's own :class:`Queue`, a name, or
Celery's old mapping form ``{name: {"exchange": ..., "routing_key": ...}}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from celeriac._config import Settings


@dataclass(frozen=True)
class Queue:
    """A queue of ``task_queues`` (kombu's ``Queue`` works the same there)."""

    name: str
    exchange: str | None = None
    routing_key: str | None = None
    queue_arguments: dict[str, Any] = field(default_factory=dict)
    max_priority: int | None = None
    exchange_type: str = "direct"


def queue_table(setting: str, value: Any) -> Any:
    """Check ``value`` of ``setting`` (it is stored as given: Celery code reads its own
    objects back); a bad item fails naming it. What celeriac does not take from a queue
    (its arguments, a priority maximum, an exchange other than direct) is said once."""
    for queue in queues_from(setting, value):
        unused = {
            "queue_arguments": queue.queue_arguments,
            "max_priority": queue.max_priority,
            "exchange type": None if queue.exchange_type == "direct" else queue.exchange_type,
        }
        for what, given in unused.items():
            if given and (queue.name, what) not in _said:
                _said.add((queue.name, what))
                logger.warning(
                    "task_queues: the %s of queue %r (%r) is not used: celeriac declares "
                    "its queues with task_queue_max_priority and task_default_queue_type, "
                    "bound to a direct exchange of their name (and to their own exchange "
                    "when it is direct)",
                    what,
                    queue.name,
                    given,
                )
    return value


logger = logging.getLogger("celeriac.settings")
_said: set[tuple[str, str]] = set()


def queues_from(setting: str, value: Any) -> list[Queue]:
    """The queues ``value`` declares, as celeriac's :class:`Queue`."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [_from_mapping(setting, name, options) for name, options in value.items()]
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        value = [value]
    return [_one(setting, item) for item in value]


def _from_mapping(setting: str, name: Any, options: Any) -> Queue:
    if not isinstance(name, str) or not isinstance(options, Mapping | None):
        raise _bad(setting, {name: options})
    options = dict(options or {})
    exchange = options.get("exchange")
    return Queue(
        name,
        exchange=str(exchange) if exchange else None,
        routing_key=options.get("routing_key") or options.get("binding_key"),
        queue_arguments=dict(options.get("queue_arguments") or {}),
        max_priority=options.get("max_priority"),
        exchange_type=str(options.get("exchange_type") or "direct"),
    )


def _one(setting: str, item: Any) -> Queue:
    if isinstance(item, Queue):
        return item
    if isinstance(item, str) and item:
        return Queue(item)
    name = getattr(item, "name", None)
    if isinstance(name, str) and name and hasattr(item, "routing_key"):  # kombu's Queue
        exchange = getattr(item, "exchange", None)
        exchange_name = getattr(exchange, "name", exchange)
        return Queue(
            name,
            exchange=str(exchange_name) if exchange_name else None,
            routing_key=getattr(item, "routing_key", None) or None,
            queue_arguments=dict(getattr(item, "queue_arguments", None) or {}),
            max_priority=getattr(item, "max_priority", None),
            exchange_type=str(getattr(exchange, "type", None) or "direct"),
        )
    raise _bad(setting, item)


def _bad(setting: str, item: Any) -> ImproperlyConfigured:
    return ImproperlyConfigured(
        f"setting {setting}: {item!r} is not a queue: give kombu's Queue, celeriac.Queue, "
        "a queue name, or a mapping of names to options"
    )


def queue_name(queue: Any) -> str | None:
    """The name of a queue given as a name, kombu's ``Queue`` or celeriac's."""
    if isinstance(queue, str):
        return queue or None
    name = getattr(queue, "name", None)
    return str(name) if name else None


def route_queue(conf: Settings, route: Any) -> str | None:
    """The queue a route names: ``queue`` (a name or a queue object), else the queue of
    ``task_queues`` bound to ``exchange`` with ``routing_key`` (a direct exchange, as
    Celery's: a queue declared without them is bound to the exchange and key of its
    name). None when the route says nothing; an exchange and key no queue is bound to
    fail the send, naming them (Celery's broker would drop the message)."""
    if route is None or isinstance(route, str) or not isinstance(route, Mapping):
        return queue_name(route)
    queue = queue_name(route.get("queue"))
    if queue:
        return queue
    exchange = queue_name(route.get("exchange"))
    key = route.get("routing_key")
    if not exchange and not key:
        return None
    default = str(conf["task_default_queue"])
    exchange = exchange or str(conf["task_default_exchange"] or default)
    declared = queues_from("task_queues", conf["task_queues"]) or [Queue(default)]
    for candidate in declared:
        bound_to = candidate.exchange or candidate.name
        if bound_to == exchange and (
            key is None or (candidate.routing_key or candidate.name) == key
        ):
            return candidate.name
    raise ImproperlyConfigured(
        f"no queue of task_queues is bound to exchange {exchange!r} with routing key "
        f"{key!r} (declared: {', '.join(q.name for q in declared)}): route by queue name, "
        "or declare Queue(name, Exchange(exchange), routing_key=key)"
    )


def bindings(conf: Settings, consumed: list[str]) -> list[tuple[str, str, str]]:
    """``(queue, exchange, routing_key)`` of each consumed queue that ``task_queues``
    binds to another direct exchange or key than its name (a worker binds it so)."""
    found = []
    for queue in queues_from("task_queues", conf["task_queues"]):
        exchange, key = queue.exchange or queue.name, queue.routing_key or queue.name
        direct = queue.exchange_type == "direct"  # others: warned about, not bound
        if direct and queue.name in consumed and (exchange, key) != (queue.name, queue.name):
            found.append((queue.name, exchange, key))
    return found


async def bind_consumed(conf: Settings, broker: Any, consumed: list[str]) -> None:
    """A worker's: bind its queues to the exchanges and keys ``task_queues`` gives them,
    on a broker that has exchanges (capability ``QueueBindings``)."""
    from celeriac.transports.capabilities import QueueBindings  # noqa: PLC0415

    if isinstance(broker, QueueBindings):
        for queue, exchange, key in bindings(conf, consumed):
            await broker.bind(queue, exchange, key)


def declared_queues(conf: Settings) -> list[str]:
    """The names of the queues in ``task_queues``, in order."""
    return [q.name for q in queues_from("task_queues", conf["task_queues"])]


def consumed_queues(conf: Settings) -> list[str]:
    """What a worker started without ``-Q`` consumes: every queue of ``task_queues``, or
    ``task_default_queue`` when that is empty (as Celery's worker)."""
    return declared_queues(conf) or [str(conf["task_default_queue"])]


def check_queue(conf: Settings, queue: str) -> None:
    """``task_create_missing_queues=False``: a task routed to a queue that
    ``task_queues`` does not declare fails to send (as Celery's ``QueueNotFound``)."""
    if conf["task_create_missing_queues"]:
        return
    declared = declared_queues(conf) or [str(conf["task_default_queue"])]
    if queue not in declared:
        raise ImproperlyConfigured(
            f"queue {queue!r} is not in task_queues ({', '.join(declared)}) and "
            "task_create_missing_queues is False"
        )


__all__ = [
    "Queue",
    "bind_consumed",
    "bindings",
    "check_queue",
    "consumed_queues",
    "declared_queues",
    "queue_name",
    "queues_from",
    "route_queue",
]
