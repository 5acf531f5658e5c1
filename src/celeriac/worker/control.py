"""Custom remote-control commands: Celery's ``control_command`` / ``inspect_command``.

A module the worker imports (the app module, or one it includes) registers commands::

    from celeriac.worker.control import control_command, inspect_command

    @control_command(args=[("n", int)], signature="[N=1]")
    def increase_prefetch_count(state, n=1):
        ...
        return {"ok": f"prefetch count increased by {n}"}

    @inspect_command()
    def current_hostname(state):
        return {"hostname": state.hostname}

Callers reach them as Celery's do: ``app.control.broadcast("increase_prefetch_count",
arguments={"n": 3}, reply=True)`` gives ``[{worker: answer}, ...]``, and
``app.control.inspect()._request("current_hostname")`` gives ``{worker: answer}``
(Celery's ``Inspect`` has no method per custom name either). A handler takes the
``state`` and the request's arguments as keywords; what it returns is the answer (JSON).
As measured on Celery 5.7, a handler that raises (a wrong argument included) answers
``{"error": repr(exc)}``, and the worker goes on.

``state`` is what Celery's extensions use of its own: ``state.app``,
``state.hostname``, ``state.consumer`` (the worker's consumer: ``.app``,
``.hostname``, ``.pool``, ``.queues``) and ``state.tset`` (returns its argument, as
under Celery's event loop); it is a dict with attribute access, like Celery's. A sync
handler runs on a thread, so it may block or call ``app.control``/``app.backend``; an
``async def`` handler runs on the consumer's event loop.

The registry (:class:`Panel`) is process-wide, as Celery's: a name registered twice
keeps the last handler, and it takes precedence over a built-in command of that name.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

logger = logging.getLogger("celeriac.worker.control")

Handler = Callable[..., Any]


class CommandInfo(NamedTuple):
    """What a command was registered with (Celery's ``controller_info_t``)."""

    alias: str | None
    type: str
    visible: bool
    default_timeout: float
    help: str
    signature: str | None
    args: Any
    variadic: str | None


class Panel:
    """The process-wide registry of custom remote-control commands."""

    data: dict[str, Handler] = {}
    meta: dict[str, CommandInfo] = {}

    @classmethod
    def register(
        cls,
        fn: Handler | None = None,
        /,
        *,
        name: str | None = None,
        alias: str | None = None,
        type: str = "control",
        visible: bool = True,
        default_timeout: float = 1.0,
        help: str | None = None,
        signature: str | None = None,
        args: Any = None,
        variadic: str | None = None,
    ) -> Any:
        """Register ``fn`` (or return a decorator that does) under ``name`` (default:
        the function's name) and ``alias``."""
        if type not in ("control", "inspect"):
            raise ValueError(f"a remote-control command is 'control' or 'inspect', not {type!r}")

        def register(handler: Handler) -> Handler:
            if not callable(handler):
                raise TypeError(f"a remote-control command must be callable, not {handler!r}")
            command = name or handler.__name__
            text = help or (handler.__doc__ or "").strip().split("\n")[0]
            info = CommandInfo(
                alias, type, visible, default_timeout, text, signature, args, variadic
            )
            for key in (command, alias):
                if key:
                    cls.data[key] = handler
                    cls.meta[key] = info
            return handler

        return register(fn) if fn is not None else register

    @classmethod
    def unregister(cls, name: str) -> None:
        """Forget a command (and nothing else); for tests and reloads."""
        cls.data.pop(name, None)
        cls.meta.pop(name, None)


def control_command(fn: Handler | None = None, /, **options: Any) -> Any:
    """Register a remote-control command that acts on the worker (``celery control``)."""
    return Panel.register(fn, type="control", **options)


def inspect_command(fn: Handler | None = None, /, **options: Any) -> Any:
    """Register a remote-control command that reports on the worker (``celery inspect``)."""
    return Panel.register(fn, type="inspect", **options)


class ControlState(dict[str, Any]):
    """The ``state`` a handler gets: a dict whose keys are also attributes."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"the remote-control state has no {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def _as_is(value: Any) -> Any:
    return value


def make_state(app: Any, consumer: Any) -> ControlState:
    hostname = getattr(consumer, "hostname", None)
    return ControlState(app=app, hostname=hostname, consumer=consumer, tset=_as_is)


def lookup(method: str) -> Handler | None:
    """The custom handler registered for ``method``, if any."""
    return Panel.data.get(method)


async def run_command(handler: Handler, state: ControlState, arguments: dict[str, Any]) -> Any:
    """Run one handler; an exception becomes Celery's ``{"error": repr(exc)}`` answer."""
    try:
        if inspect.iscoroutinefunction(handler):
            return await handler(state, **arguments)
        value = await asyncio.to_thread(handler, state, **arguments)
        if inspect.isawaitable(value):
            value = await value
        return value
    except Exception as exc:
        logger.error("Remote control: command %r failed: %r", handler, exc, exc_info=True)
        return {"error": repr(exc)}


__all__ = [
    "CommandInfo",
    "ControlState",
    "Panel",
    "control_command",
    "inspect_command",
    "lookup",
    "make_state",
    "run_command",
]


# the worker's own commands, registered first so that a user's of the same name wins
from celeriac.worker import commands as _commands  # noqa: E402,F401
