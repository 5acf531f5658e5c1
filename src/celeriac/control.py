"""``app.control``: revoke and purge.

Revocations are durable: they are kept in the broker's store (with an expiry,
``worker_revoke_expires``), so they reach queued, delayed and future messages on every
worker, including workers started after the revoke. ``terminate=True`` also stops the task
if it is running (workers check running tasks against the store once a second). A revoke
is also broadcast as Celery's remote-control request, so Celery workers running on the
same broker flag the task as revoked too (in their memory, as Celery does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac._loop import run_sync
from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol import control_message
from celeriac.worker.core import revoked_meta

if TYPE_CHECKING:
    from celeriac.app import Celeriac


class Control:
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
        self, task_id: str | Sequence[str], *, terminate: bool = False, signal: str | None = None
    ) -> None:
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        broker = await self.app.get_broker()
        if not broker.supports_revoke:
            raise ImproperlyConfigured(
                f"the {type(broker).__name__} broker cannot store revocations"
            )
        ttl = float(self.app.conf["worker_revoke_expires"])
        await broker.revoke(ids, ttl, terminate=terminate, signal=signal)
        # Celery workers on the same broker keep revocations in memory, told by broadcast
        arguments = {"task_id": ids, "terminate": terminate, "signal": signal}
        await broker.broadcast_control(control_message("revoke", arguments))
        backend = await self.app.get_backend()
        if backend.needs_reply_to:
            return
        done = await backend.get_many(ids)
        pending = [
            (i, revoked_meta(i, "revoked"), self.app.conf["result_expires"] or None)
            for i in ids
            if done.get(i, {}).get("status") not in states.READY_STATES
        ]
        if pending:
            await backend.store_many(pending)

    def purge(self) -> int:
        """Delete every waiting message of the default queue; return how many."""

        async def purge() -> int:
            broker = await self.app.get_broker()
            return await broker.purge(self.app.conf["task_default_queue"])

        return run_sync(purge())


__all__ = ["Control"]
