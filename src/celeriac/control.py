"""``app.control``: revoke, purge, and asking workers (``ping``, ``inspect()``,
``broadcast``) the way Celery's clients do.

Revocations are durable: they are kept in the broker's store (with an expiry,
``worker_revoke_expires``), so they reach queued, delayed and future messages on every
worker, including workers started after the revoke. ``terminate=True`` also stops the task
if it is running (workers check running tasks against the store once a second). A revoke
is also broadcast as Celery's remote-control request, so Celery workers running on the
same broker flag the task as revoked too (in their memory, as Celery does).

With ``reply=True`` the workers are asked first and answer in Celery's words (``[{worker:
{"ok": "tasks {'<id>'} flagged as revoked"}}]``), then the caller records it too.

Workers answer Celery's remote control too (:func:`remote_command`, run by one consumer
per worker), with the commands of ``celeriac.worker.commands`` (a ``revoke`` from a Celery
client becomes a durable revocation as above; ``ping``, ``registered``, ``shutdown``,
``revoke_by_stamped_headers``) and the user's, from one registry. A revoke celeriac
broadcast without asking for answers carries a header that its workers skip (its effect
is in place already).
"""

from __future__ import annotations

import logging
import signal as signal_module
from collections.abc import Callable, Sequence
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


logger = logging.getLogger("celeriac.control")

#: stored states of a task no worker is running (a RETRY waits for its next run)
_NOT_STARTED = frozenset({states.PENDING, states.RETRY})


class Control(ControlCommands):
    def __init__(self, app: Celeriac) -> None:
        self.app = app

    def revoke(
        self,
        task_id: str | Sequence[str],
        destination: Sequence[str] | None = None,
        terminate: bool = False,
        signal: str | int | None = "SIGTERM",
        *,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
        callback: Callable[[dict[str, Any]], Any] | None = None,
        **extra: Any,
    ) -> list[dict[str, Any]] | None:
        """Revoke one or more tasks: they will not run (``terminate``: stop them where
        they run). Durable, for every worker (``destination`` narrows who is told and
        answers). With ``reply``, the workers' answers as Celery's: ``[{worker: {"ok":
        "tasks {'<id>'} flagged as revoked"}}, ...]`` (``timeout``, ``limit``, and
        ``callback`` called with each as it comes); extra keywords go to the workers as
        arguments, as Celery's ``broadcast``."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        name = _signal_name(signal) if terminate else None
        if not reply:
            run_sync(self.arevoke(ids, terminate=terminate, signal=name))
            return None
        # asked first: a celeriac worker records it durably and answers about the tasks
        # it holds (recorded here first, a terminate could stop them before it answers)
        arguments = {"task_id": ids, "terminate": terminate, "signal": name, **extra}
        answers = self.broadcast(
            "revoke", arguments, destination, True, timeout, limit, callback=callback
        )
        run_sync(self.arevoke(ids, terminate=terminate, signal=name, broadcast=False))
        return answers

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
        callback: Callable[[dict[str, Any]], Any] | None = None,
        **extra: Any,
    ) -> list[dict[str, Any]] | None:
        """Send a remote-control command to the workers (Celery's and celeriac's) on the
        broker; with ``reply``, their answers (``[{worker: answer}, ...]``) collected for
        ``timeout`` seconds, or until ``limit`` came (by default, one per ``destination``
        when it is given); ``callback(answer)`` is called with each. Extra keywords are
        arguments of the command, as in Celery."""
        arguments = {**(arguments or {}), **_arguments(extra)}
        answers = run_sync(self.abroadcast(command, arguments, destination, reply, timeout, limit))
        if callback is not None:
            for answer in answers or ():
                callback(answer)
        return answers

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


def _signal_name(signal: str | int | None) -> str:
    """The name of a signal given by name (``"KILL"``, ``"SIGKILL"``) or number; a
    ValueError naming the choices for anything else (Celery's worker would answer an
    error)."""
    if signal is None:
        return "SIGTERM"
    try:
        if isinstance(signal, int):
            return signal_module.Signals(signal).name
        text = str(signal).upper()
        return signal_module.Signals[text if text.startswith("SIG") else f"SIG{text}"].name
    except (KeyError, ValueError):
        raise ValueError(
            f"revoke(signal={signal!r}): not a signal; give a name such as 'SIGTERM', "
            f"'SIGKILL' or 'SIGUSR1', or a number"
        ) from None


#: Celery's ``broadcast`` keywords about its kombu connection: only None is possible here
_CONNECTION_KEYWORDS = ("connection", "channel")


def _arguments(extra: dict[str, Any]) -> dict[str, Any]:
    for key in _CONNECTION_KEYWORDS:
        if extra.pop(key, None) is not None:
            raise TypeError(
                f"{key}=: celeriac's remote control uses the app's own broker connection; "
                f"leave {key} out"
            )
    if extra.get("pattern") is not None or extra.get("matcher") is not None:
        raise TypeError("pattern/matcher: celeriac workers match destinations by name only")
    extra.pop("pattern", None)
    extra.pop("matcher", None)
    return extra


async def remote_command(
    app: Celeriac, request: ControlRequest, worker_pid: int, consumer: Any = None
) -> Any:
    """A worker's answer to a remote-control request (``celery control revoke``,
    ``celery inspect ping``, a custom command): the handler registered under its name in
    ``celeriac.worker.control.Panel`` (the built-ins of ``celeriac.worker.commands`` and
    the user's), run with the worker's ``state`` (``consumer`` is the worker's). An
    unknown command answers as Celery's worker does, ``{"error": "KeyError('name')"}``
    (and the worker logs which commands it knows)."""
    from celeriac.worker import control as panel  # noqa: PLC0415 - imports the worker

    handler = panel.lookup(request.method)
    if handler is not None:
        state = panel.make_state(app, consumer)
        return await panel.run_command(handler, state, dict(request.arguments))
    from celeriac.worker import _inspect  # noqa: PLC0415 - imports the worker

    builtin = _inspect.lookup(request.method)  # the inspect/control set of the monitor
    if builtin is not None and consumer is not None:
        return await builtin(consumer, dict(request.arguments))
    known = ", ".join(sorted({*panel.Panel.data, *_inspect.COMMANDS}))
    logger.warning("Remote control: no such command %r (known: %s)", request.method, known)
    return {"error": repr(KeyError(request.method))}


__all__ = ["Control", "Inspect", "remote_command"]
