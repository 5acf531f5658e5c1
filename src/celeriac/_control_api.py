"""The rest of Celery's ``app.control`` and ``app.control.inspect()`` methods, as
mixins of :class:`celeriac.control.Control` and :class:`celeriac.control.Inspect`: each
sends the command of its name with Celery's argument names (the workers' side is
``celeriac.worker._inspect``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ControlCommands:
    """``app.control.rate_limit(...)``, ``pool_grow(...)``, ...: each returns the
    workers' answers (``[{worker: answer}, ...]``) with ``reply=True``, else None."""

    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: Sequence[str] | None = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
    ) -> list[dict[str, Any]] | None:
        raise NotImplementedError

    def _send(
        self,
        command: str,
        arguments: dict[str, Any],
        destination: Sequence[str] | None,
        options: dict[str, Any],
    ) -> list[dict[str, Any]] | None:
        return self.broadcast(
            command,
            arguments,
            destination,
            reply=bool(options.get("reply", False)),
            timeout=float(options.get("timeout", 1.0)),
            limit=options.get("limit"),
        )

    def rate_limit(
        self, task_name: str, rate_limit: str | float | None, destination: Any = None, **kw: Any
    ) -> Any:
        args = {"task_name": task_name, "rate_limit": rate_limit}
        return self._send("rate_limit", args, destination, kw)

    def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: Any = None,
        **kw: Any,
    ) -> Any:
        args = {"task_name": task_name, "soft": soft, "hard": hard}
        return self._send("time_limit", args, destination, kw)

    def add_consumer(
        self,
        queue: str,
        exchange: str | None = None,
        exchange_type: str = "direct",
        routing_key: str | None = None,
        options: dict[str, Any] | None = None,
        destination: Any = None,
        **kw: Any,
    ) -> Any:
        args = {
            "queue": queue,
            "exchange": exchange,
            "exchange_type": exchange_type,
            "routing_key": routing_key,
            **(options or {}),
        }
        return self._send("add_consumer", args, destination, kw)

    def cancel_consumer(self, queue: str, destination: Any = None, **kw: Any) -> Any:
        return self._send("cancel_consumer", {"queue": queue}, destination, kw)

    def pool_grow(self, n: int = 1, destination: Any = None, **kw: Any) -> Any:
        return self._send("pool_grow", {"n": n}, destination, kw)

    def pool_shrink(self, n: int = 1, destination: Any = None, **kw: Any) -> Any:
        return self._send("pool_shrink", {"n": n}, destination, kw)

    def pool_restart(
        self,
        modules: Sequence[str] | None = None,
        reload: bool = False,
        reloader: Any = None,
        destination: Any = None,
        **kw: Any,
    ) -> Any:
        args = {"modules": list(modules or ()), "reload": reload}
        return self._send("pool_restart", args, destination, kw)

    def autoscale(self, max: int, min: int, destination: Any = None, **kw: Any) -> Any:
        return self._send("autoscale", {"max": max, "min": min}, destination, kw)

    def enable_events(self, destination: Any = None, **kw: Any) -> Any:
        return self._send("enable_events", {}, destination, kw)

    def disable_events(self, destination: Any = None, **kw: Any) -> Any:
        return self._send("disable_events", {}, destination, kw)

    def heartbeat(self, destination: Any = None, **kw: Any) -> Any:
        return self._send("heartbeat", {}, destination, kw)

    def election(self, id: str, topic: str, action: str | None = None, **kw: Any) -> Any:
        args = {"id": id, "topic": topic, "action": action}
        return self._send("election", args, None, kw)

    def shutdown(self, destination: Any = None, **kw: Any) -> Any:
        return self._send("shutdown", {}, destination, kw)

    def terminate(
        self,
        task_id: str | Sequence[str],
        destination: Any = None,
        signal: str = "SIGTERM",
        **kw: Any,
    ) -> Any:
        revoke: Any = getattr(self, "revoke")  # noqa: B009 - Control's, with its own signature
        return revoke(task_id, destination=destination, terminate=True, signal=signal, **kw)


class InspectCommands:
    """``inspect().active_queues()``, ``conf()``, ``query_task(...)``, ...: each a
    ``{worker: answer}`` dict, or None when no worker answered."""

    def _ask(self, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any] | None:
        raise NotImplementedError

    def active_queues(self) -> dict[str, Any] | None:
        return self._ask("active_queues")

    def conf(self, with_defaults: bool = False) -> dict[str, Any] | None:
        return self._ask("conf", {"with_defaults": with_defaults})

    def revoked(self) -> dict[str, Any] | None:
        return self._ask("revoked")

    def query_task(self, *ids: Any) -> dict[str, Any] | None:
        if len(ids) == 1 and isinstance(ids[0], (list, tuple)):
            ids = tuple(ids[0])
        return self._ask("query_task", {"ids": list(ids)})

    def report(self) -> dict[str, Any] | None:
        return self._ask("report")

    def clock(self) -> dict[str, Any] | None:
        return self._ask("clock")

    def memsample(self) -> dict[str, Any] | None:
        return self._ask("memsample")

    def memdump(self, samples: int = 10) -> dict[str, Any] | None:
        return self._ask("memdump", {"samples": samples})

    def registered_tasks(self) -> dict[str, Any] | None:
        return self._ask("registered")

    def hello(self, from_node: str, revoked: Any = None) -> dict[str, Any] | None:
        return self._ask("hello", {"from_node": from_node, "revoked": revoked})


__all__ = ["ControlCommands", "InspectCommands"]
