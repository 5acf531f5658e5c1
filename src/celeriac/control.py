"""``app.control``: revoke, purge, and asking workers (``ping``, ``inspect()``,
``broadcast``) the way Celery's clients do.

Revocations are durable: they are kept in the broker's store (with an expiry,
``worker_revoke_expires``), so they reach queued, delayed and future messages on every
worker, including workers started after the revoke. ``terminate=True`` also stops the task
if it is running (workers check running tasks against the store once a second). A revoke
is also broadcast as Celery's remote-control request, so Celery workers running on the
same broker flag the task as revoked too (in their memory, as Celery does).

Workers answer Celery's remote control too (:func:`remote_command`, run by one consumer
per worker): a ``revoke`` from a Celery client becomes a durable revocation as above;
``ping``, ``registered`` and ``shutdown`` are carried out, and ``revoke_by_stamped_headers``
is stored durably too (``celeriac._stamp_revoke``). A revoke celeriac broadcast
itself carries a header that its workers skip (its effect is in place already).
"""

from __future__ import annotations

import os
import signal as signal_module
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac import _stamp_revoke, states
from celeriac._control_api import ControlCommands, InspectCommands
from celeriac._loop import run_sync
from celeriac._outcome import revoked_meta
from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol import ControlRequest, control_message, json_loads, new_id
from celeriac.transports.capabilities import Broadcast, RemoteControl, RevocationStore

if TYPE_CHECKING:
    from celeriac.app import Celeriac


#: stored states of a task no worker is running (a RETRY waits for its next run)
_NOT_STARTED = frozenset({states.PENDING, states.RETRY})


class Control(ControlCommands):
    def __init__(self, app: Celeriac) -> None:
        self.app = app

    def revoke(
        self,
        task_id: str | Sequence[str],
        destination: Any = None,
        terminate: bool = False,
        signal: str | None = None,
        **_ignored: Any,
    ) -> None:
        """Revoke one or more tasks: they will not run (``terminate``: stop if running)."""
        run_sync(self.arevoke(task_id, terminate=terminate, signal=signal))

    async def arevoke(
        self,
        task_id: str | Sequence[str],
        *,
        terminate: bool = False,
        signal: str | None = None,
        broadcast: bool = True,
    ) -> None:
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        broker = await self.app.get_broker()
        if not isinstance(broker, RevocationStore):
            raise ImproperlyConfigured(
                f"the {type(broker).__name__} broker cannot store revocations"
            )
        ttl = float(self.app.conf["worker_revoke_expires"])
        await broker.revoke(ids, ttl, terminate=terminate, signal=signal)
        if broadcast and isinstance(broker, Broadcast):  # Celery workers keep them in memory
            arguments = {"task_id": ids, "terminate": terminate, "signal": signal}
            await broker.broadcast_control(control_message("revoke", arguments, in_effect=True))
        backend = await self.app.get_backend()
        if backend.needs_reply_to:
            return
        # a task not started yet is REVOKED now (it will not run: the revocation is
        # durable); one a worker is running (STARTED, PROGRESS, ...) keeps its state
        # until that worker settles it: with terminate=False it finishes and stores its
        # result, as with Celery
        stored = await backend.get_many(ids)
        pending = [
            (i, revoked_meta(i, "revoked"), self.app.conf["result_expires"] or None)
            for i in ids
            if stored.get(i, {}).get("status", states.PENDING) in _NOT_STARTED
        ]
        if pending:
            await backend.store_many(pending)

    def revoke_by_stamped_headers(
        self,
        headers: dict[str, Any] | Sequence[str],
        destination: Sequence[str] | None = None,
        terminate: bool = False,
        signal: str | None = "SIGTERM",
        **options: Any,
    ) -> list[dict[str, Any]] | None:
        """Revoke every task stamped with one of ``headers`` (``{name: value or
        [values]}``); with ``reply=True`` (``timeout``, ``limit``), the workers' answers.
        Durable, as :meth:`revoke`: see ``celeriac._stamp_revoke``."""
        return run_sync(
            self.arevoke_by_stamped_headers(headers, destination, terminate, signal, **options)
        )

    async def arevoke_by_stamped_headers(
        self,
        headers: dict[str, Any] | Sequence[str],
        destination: Sequence[str] | None = None,
        terminate: bool = False,
        signal: str | None = "SIGTERM",
        *,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
    ) -> list[dict[str, Any]] | None:
        return await _stamp_revoke.revoke_by_stamped_headers(
            self.app,
            headers,
            terminate=terminate,
            signal=signal,
            destination=destination,
            reply=reply,
            timeout=timeout,
            limit=limit,
        )

    # -- asking workers (Celery's broadcast / inspect) ----------------------
    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: Sequence[str] | None = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
    ) -> list[dict[str, Any]] | None:
        """Send a remote-control command to the workers (Celery's and celeriac's) on the
        broker; with ``reply``, their answers (``[{worker: answer}, ...]``) collected for
        ``timeout`` seconds, or until ``limit`` came (by default, one per ``destination``
        when it is given)."""
        return run_sync(self.abroadcast(command, arguments, destination, reply, timeout, limit))

    async def abroadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: Sequence[str] | None = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
    ) -> list[dict[str, Any]] | None:
        broker = await self.app.get_broker()
        if not reply:
            if isinstance(broker, Broadcast):  # else no worker of this broker listens
                message = control_message(command, arguments or {}, destination=destination)
                await broker.broadcast_control(message)
            return None
        if not isinstance(broker, RemoteControl):
            raise ImproperlyConfigured(
                f"the {type(broker).__name__} broker has no remote control (Redis and "
                f"RabbitMQ have)"
            )
        if limit is None and destination is not None:
            limit = len(destination)
        key, ticket = new_id(), new_id()
        message = control_message(
            command,
            arguments or {},
            destination=destination,
            reply=(key, ticket),
            timeout=timeout,
        )
        answers: list[dict[str, Any]] = []
        for got in await broker.request_control(message, key, timeout, limit):
            if got.headers.get("ticket") not in (None, ticket):
                continue
            try:
                body = json_loads(got.body)
            except ValueError:
                continue
            if isinstance(body, dict):
                answers.append(body)
        return answers

    def ping(
        self, destination: Sequence[str] | None = None, timeout: float = 1.0
    ) -> list[dict[str, Any]]:
        """``[{worker: {"ok": "pong"}}, ...]`` from the workers that answer in time."""
        return self.broadcast("ping", destination=destination, reply=True, timeout=timeout) or []

    def inspect(self, destination: Sequence[str] | None = None, timeout: float = 1.0) -> Inspect:
        """Celery's ``app.control.inspect()``: ``.ping()``, ``.registered()``,
        ``.active()``, ``.stats()``, ... each a ``{worker: answer}`` dict (None when no
        worker answered)."""
        return Inspect(self, destination, timeout)

    def purge(self) -> int:
        """Delete every waiting message of the default queue; return how many."""

        async def purge() -> int:
            broker = await self.app.get_broker()
            return await broker.purge(self.app.conf["task_default_queue"])

        return run_sync(purge())


class Inspect(InspectCommands):
    """Asks workers about themselves; see :meth:`Control.inspect`."""

    def __init__(self, control: Control, destination: Sequence[str] | None, timeout: float) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout

    def _request(self, command: str, **kwargs: Any) -> dict[str, Any] | None:
        """Ask for any command, a custom ``inspect_command`` too (Celery's way):
        ``{worker: answer}``, or None when no worker answered."""
        return self._ask(command, kwargs)

    def _ask(self, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any] | None:
        answers = self.control.broadcast(
            command, arguments, destination=self.destination, reply=True, timeout=self.timeout
        )
        merged: dict[str, Any] = {}
        for answer in answers or ():
            merged.update(answer)
        return merged or None

    def ping(self) -> dict[str, Any] | None:
        return self._ask("ping")

    def registered(self) -> dict[str, Any] | None:
        return self._ask("registered")

    def active(self) -> dict[str, Any] | None:
        return self._ask("active")

    def reserved(self) -> dict[str, Any] | None:
        return self._ask("reserved")

    def scheduled(self) -> dict[str, Any] | None:
        return self._ask("scheduled")

    def stats(self) -> dict[str, Any] | None:
        return self._ask("stats")


#: the remote-control commands a celeriac worker carries out
COMMANDS = ("ping", "registered", "revoke", "revoke_by_stamped_headers", "shutdown")


async def remote_command(
    app: Celeriac, request: ControlRequest, worker_pid: int, consumer: Any = None
) -> Any:
    """A worker's answer to a Celery remote-control request (``celery control revoke``,
    ``celery inspect ping``): the :data:`COMMANDS` are carried out (``shutdown`` is a warm
    shutdown: SIGTERM to ``worker_pid``, the worker's main process); ``hello`` (a starting
    Celery worker's greeting) gets an empty answer; anything else an error naming what is
    answered. A command registered with ``celeriac.worker.control``'s decorators comes
    first (``consumer`` is the worker's, for its ``state``)."""
    from celeriac.worker import control as custom  # noqa: PLC0415 - imports the worker

    method, args = request.method, request.arguments
    handler = custom.lookup(method)
    if handler is not None:
        return await custom.run_command(handler, custom.make_state(app, consumer), dict(args))
    if method == "ping":
        return {"ok": "pong"}
    if method == "registered":
        return sorted(name for name in app.tasks if not name.startswith("celery."))
    if method == "shutdown":
        os.kill(worker_pid, signal_module.SIGTERM)
        return {"ok": "shutting down"}
    if method == "revoke":
        given = args.get("task_id")
        ids = [str(given)] if isinstance(given, str) else [str(i) for i in given or ()]
        if not ids:
            return {"ok": "no task id given"}
        signal = args.get("signal")
        await app.control.arevoke(
            ids,
            terminate=bool(args.get("terminate")),
            signal=str(signal) if signal else None,
            broadcast=False,
        )
        return {"ok": f"tasks {', '.join(ids)} flagged as revoked"}
    if method == _stamp_revoke.COMMAND:
        return await _stamp_revoke.command(app, args)
    if method == "hello":
        return {"revoked": {}, "clock": 0}
    from celeriac.worker import _inspect  # noqa: PLC0415 - imports the worker

    builtin = _inspect.lookup(method)
    if builtin is not None and consumer is not None:
        return await builtin(consumer, dict(args))
    known = ", ".join([*COMMANDS, *sorted(_inspect.COMMANDS), *sorted(custom.Panel.data)])
    return {"error": f"No such command: {method!r} (celeriac workers answer {known})"}


__all__ = ["COMMANDS", "Control", "Inspect", "remote_command"]
