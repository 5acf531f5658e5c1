"""The rest of Celery 5.7's remote-control set, answered with Celery's reply shapes
(``celery inspect`` / ``celery control``, Flower): the reports (``active``, ``reserved``,
``scheduled``, ``stats``, ``active_queues``, ``conf``, ``revoked``, ``query_task``,
``report``, ``clock``, ``memsample``) and the changes (``rate_limit``, ``time_limit``,
``add_consumer``, ``cancel_consumer``, ``pool_grow``, ``pool_shrink``, ``autoscale``,
``enable_events``, ``disable_events``, ``heartbeat``, ``terminate``, ``election``,
``pool_restart``), with Celery's ``dump_*`` aliases.

In a prefork worker the child that answers speaks for every child: reports merge the
children's snapshots, changes reach every child (:mod:`celeriac.worker._state`), and
pool changes go to the supervisor. ``ping``, ``registered``, ``revoke`` and ``shutdown``
are :func:`celeriac.control.remote_command`'s own.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import platform
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from celeriac import __version__
from celeriac._rates import parse_rate
from celeriac.protocol import safe_repr
from celeriac.transports.capabilities import RevocationListing
from celeriac.utils.log import mask_url
from celeriac.worker._state import read_pool

if TYPE_CHECKING:
    from celeriac.worker.consumer import Consumer

Command = Callable[["Consumer", dict[str, Any]], Awaitable[Any]]
#: ``inspect revoked`` answers at most this many ids (Celery's ``REVOKES_MAX``)
REVOKED_MAX = 50_000
COMMANDS: dict[str, Command] = {}


def command(*names: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        for name in names:
            COMMANDS[name] = fn
        return fn

    return register


def ok(text: str) -> dict[str, str]:
    return {"ok": text}


def nok(text: str) -> dict[str, str]:
    return {"error": text}


def lookup(method: str) -> Command | None:
    return COMMANDS.get(method)


# -- reports --------------------------------------------------------------------------
@command("active", "dump_active")
async def active(consumer: Consumer, args: dict[str, Any]) -> Any:
    return [r for s in consumer.monitor.snapshots() for r in s.get("active") or ()]


@command("reserved", "dump_reserved")
async def reserved(consumer: Consumer, args: dict[str, Any]) -> Any:
    return [r for s in consumer.monitor.snapshots() for r in s.get("reserved") or ()]


@command("scheduled", "dump_schedule")
async def scheduled(consumer: Consumer, args: dict[str, Any]) -> Any:
    """The held requests that carry an ETA or countdown. A celeriac worker hands a task
    whose ETA is ahead back to the broker, which keeps it until then; what it holds
    with an ETA has come back at that time and waits for a pool slot (so it is in
    ``reserved`` too, unlike Celery's, which keeps it in its timer until the ETA)."""
    return [r for s in consumer.monitor.snapshots() for r in s.get("scheduled") or ()]


@command("revoked", "dump_revoked")
async def revoked(consumer: Consumer, args: dict[str, Any]) -> Any:
    """The ids of the live revocations in the broker's durable store (every worker sees
    the same), the newest first, at most as many as Celery keeps (50,000)."""
    store = consumer.revocation_store
    if not isinstance(store, RevocationListing):
        return []
    return await store.revoked_ids(REVOKED_MAX)


@command("query_task")
async def query_task(consumer: Consumer, args: dict[str, Any]) -> Any:
    ids = args.get("ids") or args.get("id") or []
    wanted = {ids} if isinstance(ids, str) else {str(i) for i in ids}
    found: dict[str, Any] = {}
    for snapshot in consumer.monitor.snapshots():
        for state in ("active", "reserved"):
            for info in snapshot.get(state) or ():
                if info.get("id") in wanted:
                    found[info["id"]] = [state, info]
    return found


@command("clock")
async def clock(consumer: Consumer, args: dict[str, Any]) -> Any:
    return {"clock": consumer.monitor.dispatcher.clock}


@command("report")
async def report(consumer: Consumer, args: dict[str, Any]) -> Any:
    app = consumer.app
    lines = [
        f"software -> celeriac:{__version__} py:{platform.python_version()}",
        f"            platform -> system:{platform.system()} arch:{platform.machine()} "
        f"imp:{platform.python_implementation()}",
        f"loader   -> celeriac ({sys.executable})",
        f"settings -> transport:{_transport(app.broker_url)} results:{mask_url(app.backend_url)}",
    ]
    return ok("\n".join(lines) + "\n")


@command("conf", "dump_conf")
async def conf(consumer: Consumer, args: dict[str, Any]) -> Any:
    settings = consumer.app.conf
    defaults = str(args.get("with_defaults", "")).lower() in ("1", "true", "yes", "on")
    names = list(settings.as_dict()) if defaults else list(settings._values)
    out: dict[str, Any] = {}
    for name in names:
        value = settings[name]
        if isinstance(value, str) and "://" in value:
            value = mask_url(value)
        out[name] = value if _jsonable(value) else safe_repr(value)
    return out


@command("memsample")
async def memsample(consumer: Consumer, args: dict[str, Any]) -> Any:
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0:.2f}MB"


@command("memdump")
async def memdump(consumer: Consumer, args: dict[str, Any]) -> Any:
    return f"Memory samples: {await memsample(consumer, args)}\n"


@command("objgraph")
async def objgraph(consumer: Consumer, args: dict[str, Any]) -> Any:
    """Celery's ``{'filename': ...}``: a graph of what refers to up to ``num`` objects of
    ``type`` (``Request``: celeriac's held jobs), drawn by the ``objgraph`` package when it
    is installed, else those objects' referrers' types as text."""
    kind = str(args.get("type") or "Request")
    num, depth = int(args.get("num") or 200), int(args.get("max_depth") or 10)
    name = "Job" if kind == "Request" else kind
    found = [o for o in gc.get_objects() if type(o).__name__ == name][:num]
    with tempfile.NamedTemporaryFile(
        "w", prefix="cobjg", suffix=".png" if _has_objgraph() else ".txt", delete=False
    ) as out:
        if _has_objgraph():
            graph: Any = importlib.import_module("objgraph")
            graph.show_backrefs(found, max_depth=depth, filename=out.name)
        else:
            out.write(f"{len(found)} object(s) of type {name} (install objgraph for a graph)\n")
            for obj in found:
                referrers = Counter(type(r).__name__ for r in gc.get_referrers(obj))
                out.write(f"{safe_repr(obj)[:200]}: referred to by {dict(referrers)}\n")
    return {"filename": out.name}


def _has_objgraph() -> bool:
    return importlib.util.find_spec("objgraph") is not None


@command("active_queues")
async def active_queues(consumer: Consumer, args: dict[str, Any]) -> Any:
    return [_queue_info(name) for name in consumer.queues]


@command("stats")
async def stats(consumer: Consumer, args: dict[str, Any]) -> Any:
    monitor = consumer.monitor
    snapshots = monitor.snapshots()
    total: Counter[str] = Counter()
    for snapshot in snapshots:
        total.update(snapshot.get("total") or {})
    worker = monitor.worker
    prefork = monitor.shared is not None
    processes = [os.getpid()]
    if monitor.shared is not None:
        pool = read_pool(monitor.shared.directory)
        processes = pool.get("processes") or sorted(int(s["pid"]) for s in snapshots)
    conf = consumer.app.conf
    usage = resource.getrusage(resource.RUSAGE_SELF)
    answer: dict[str, Any] = {
        "total": dict(total),
        "pid": consumer.worker_pid,
        "clock": str(monitor.dispatcher.clock),
        "uptime": round(time.monotonic() - monitor.started),
        "pool": {
            "implementation": "celery.concurrency.prefork:TaskPool"
            if prefork
            else f"celeriac:{consumer.pool.name}",
            "max-concurrency": len(processes) if prefork else consumer.pool.concurrency,
            "processes": processes,
            "max-tasks-per-child": getattr(worker, "max_tasks_per_child", None) or "N/A",
            "put-guarded-by-semaphore": False,
            "timeouts": [conf["task_soft_time_limit"] or 0, conf["task_time_limit"] or 0],
            "writes": {"total": 0, "avg": "0.00%", "all": "", "raw": "", "strategy": None},
        },
        "broker": broker_info(consumer.app.broker_url, conf),
        "prefetch_count": consumer.limit * (len(processes) if prefork else 1),
        "rusage": {
            field: getattr(usage, f"ru_{field}")
            for field in (
                "utime",
                "stime",
                "maxrss",
                "ixrss",
                "idrss",
                "isrss",
                "minflt",
                "majflt",
                "nswap",
                "inblock",
                "oublock",
                "msgsnd",
                "msgrcv",
                "nsignals",
                "nvcsw",
                "nivcsw",
            )
        },
    }
    autoscale = getattr(worker, "autoscale", None)
    if autoscale:
        answer["autoscaler"] = {"max": autoscale[0], "min": autoscale[1], "qty": len(processes)}
    return answer


# -- changes --------------------------------------------------------------------------
@command("rate_limit")
async def rate_limit(consumer: Consumer, args: dict[str, Any]) -> Any:
    name, rate = args.get("task_name"), args.get("rate_limit")
    try:
        parse_rate(rate)
    except ValueError as exc:
        return nok(f"Invalid rate limit string: {exc!r}")
    if name not in consumer.app.tasks:
        return nok("unknown task")
    await consumer.monitor.change(rate_limits={name: rate or None})
    if not rate:
        return ok("rate limit disabled successfully")
    return ok("new rate limit set successfully")


@command("time_limit")
async def time_limit(consumer: Consumer, args: dict[str, Any]) -> Any:
    name = args.get("task_name")
    if name not in consumer.app.tasks:
        return nok("unknown task")
    soft, hard = _seconds(args.get("soft")), _seconds(args.get("hard"))
    await consumer.monitor.change(time_limits={name: [soft, hard]})
    return ok("time limits set successfully")


@command("add_consumer")
async def add_consumer(consumer: Consumer, args: dict[str, Any]) -> Any:
    queue = str(args.get("queue") or "")
    if not queue:
        return nok("add_consumer: no queue given")
    if queue not in consumer.queues:
        await consumer.monitor.change(queues=[*consumer.queues, queue])
    return ok(f"add consumer {queue}")


@command("cancel_consumer")
async def cancel_consumer(consumer: Consumer, args: dict[str, Any]) -> Any:
    queue = str(args.get("queue") or "")
    if queue in consumer.queues:
        await consumer.monitor.change(queues=[q for q in consumer.queues if q != queue])
    return ok(f"no longer consuming from {queue}")


def _tell_supervisor(consumer: Consumer, word: str) -> bool:
    fd = consumer.monitor.supervisor_fd
    if fd is None:
        return False
    os.write(fd, f"{word} ".encode())
    return True


@command("pool_grow")
async def pool_grow(consumer: Consumer, args: dict[str, Any]) -> Any:
    if getattr(consumer.monitor.worker, "autoscale", None):
        return nok("pool_grow is not supported with autoscale. Adjust autoscale range instead.")
    if not _tell_supervisor(consumer, f"G{int(args.get('n') or 1)}"):
        return nok(f"pool_grow: the {consumer.pool.name} pool has a fixed size (use prefork)")
    return ok("pool will grow")


@command("pool_shrink")
async def pool_shrink(consumer: Consumer, args: dict[str, Any]) -> Any:
    if getattr(consumer.monitor.worker, "autoscale", None):
        return nok("pool_shrink is not supported with autoscale. Adjust autoscale range instead.")
    if not _tell_supervisor(consumer, f"S{int(args.get('n') or 1)}"):
        return nok(f"pool_shrink: the {consumer.pool.name} pool has a fixed size (use prefork)")
    return ok("pool will shrink")


@command("autoscale")
async def autoscale(consumer: Consumer, args: dict[str, Any]) -> Any:
    worker = consumer.monitor.worker
    current = getattr(worker, "autoscale", None)
    if not current:
        return {"error": "ValueError('Autoscale not enabled')"}
    high = int(args.get("max") or current[0])
    given = args.get("min")
    low = int(given if given is not None else current[1])
    worker.autoscale = (high, low)
    _tell_supervisor(consumer, f"A{high},{low}")
    return ok(f"autoscale now max={high} min={low}")


@command("pool_restart")
async def pool_restart(consumer: Consumer, args: dict[str, Any]) -> Any:
    return {"error": "ValueError('Pool restarts not enabled')"}


@command("enable_events")
async def enable_events(consumer: Consumer, args: dict[str, Any]) -> Any:
    if consumer.monitor.task_events:
        return ok("task events already enabled")
    await consumer.monitor.change(task_events=True)
    return ok("task events enabled")


@command("disable_events")
async def disable_events(consumer: Consumer, args: dict[str, Any]) -> Any:
    if not consumer.monitor.task_events:
        return ok("task events already disabled")
    await consumer.monitor.change(task_events=False)
    return ok("task events disabled")


@command("heartbeat")
async def heartbeat(consumer: Consumer, args: dict[str, Any]) -> Any:
    await consumer.monitor.heartbeat_now()
    return None


@command("election")
async def election(consumer: Consumer, args: dict[str, Any]) -> Any:
    return None  # celeriac workers hold no elections (no gossip); Celery answers None too


@command("terminate")
async def terminate(consumer: Consumer, args: dict[str, Any]) -> Any:
    from celeriac.control import remote_command  # noqa: PLC0415
    from celeriac.protocol import ControlRequest  # noqa: PLC0415

    request = ControlRequest(
        "revoke",
        {"task_id": args.get("task_id"), "terminate": True, "signal": args.get("signal")},
        None,
        None,
        None,
        0.0,
        False,
    )
    return await remote_command(consumer.app, request, consumer.worker_pid, consumer)


# -- helpers --------------------------------------------------------------------------
def _seconds(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


def _jsonable(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_jsonable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return False


def _queue_info(name: str) -> dict[str, Any]:
    """A queue as kombu's ``Queue.as_dict(recurse=True)`` shows Celery's default one."""
    return {
        "name": name,
        "exchange": {
            "name": name,
            "type": "direct",
            "arguments": None,
            "durable": True,
            "passive": False,
            "auto_delete": False,
            "delivery_mode": None,
            "no_declare": False,
        },
        "routing_key": name,
        "queue_arguments": None,
        "binding_arguments": None,
        "consumer_arguments": None,
        "durable": True,
        "exclusive": False,
        "auto_delete": False,
        "no_ack": False,
        "alias": None,
        "bindings": [],
        "no_declare": None,
        "expires": None,
        "message_ttl": None,
        "max_length": None,
        "max_length_bytes": None,
        "max_priority": None,
    }


_TRANSPORTS = {"redis": "redis", "rediss": "redis", "amqp": "amqp", "amqps": "amqp"}


def _transport(url: str) -> str:
    scheme = url.partition("://")[0].lower()
    return _TRANSPORTS.get(scheme, scheme or "sqlite")


def broker_info(url: str, conf: Any) -> dict[str, Any]:
    """The broker connection as kombu's ``Connection.info()`` shows it (no password)."""
    first = url.split(";", maxsplit=1)[0]
    parts = urlsplit(first)
    transport = _transport(first)
    vhost: str | None = unquote(parts.path[1:]) if parts.path else None
    if transport == "amqp" and not vhost:
        vhost = "/"
    try:
        port = parts.port
    except ValueError:
        port = None
    return {
        "hostname": parts.hostname or ("localhost" if transport in ("redis", "amqp") else None),
        "userid": unquote(parts.username) if parts.username else None,
        "virtual_host": vhost,
        "port": port or {"redis": 6379, "amqp": 5672}.get(transport),
        "insist": False,
        "ssl": parts.scheme.lower() in ("rediss", "amqps") or bool(conf["broker_use_ssl"]),
        "transport": transport,
        "connect_timeout": conf["broker_connection_timeout"],
        "transport_options": dict(conf["broker_transport_options"] or {}),
        "login_method": "PLAIN" if transport == "amqp" else None,
        "uri_prefix": None,
        "heartbeat": conf["broker_heartbeat"] or 0,
        "failover_strategy": "round-robin",
        "alternates": [],
    }


__all__ = ["COMMANDS", "broker_info", "lookup"]
