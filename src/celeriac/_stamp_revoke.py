"""``app.control.revoke_by_stamped_headers``: revoking every task with a given stamp.

As Celery: ``revoke_by_stamped_headers({"name": value or [values]}, terminate=False,
signal="SIGTERM")`` makes workers discard the tasks stamped so (state REVOKED,
``TaskRevokedError("revoked")``) and, with ``terminate=True``, stop the running ones
(``TaskRevokedError("terminated")``). The request is Celery's remote-control command
``revoke_by_stamped_headers``, so Celery workers on the broker carry it out (in their
memory).

As celeriac's ``revoke``, it is durable: it is kept in the broker's revocation store (one
key per stamp value, ``celeriac.protocol.stamps``) for ``worker_revoke_expires``, so it
reaches every celeriac worker, including those started later. A celeriac worker that
receives the command from a Celery client records it there in the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol import control_message
from celeriac.protocol.stamps import parse_revoke_headers, revocation_keys
from celeriac.transports.capabilities import Broadcast, RevocationStore

if TYPE_CHECKING:
    from celeriac.app import Celeriac

COMMAND = "revoke_by_stamped_headers"


async def revoke_by_stamped_headers(
    app: Celeriac,
    headers: Any,
    *,
    terminate: bool = False,
    signal: str | None = "SIGTERM",
    destination: Sequence[str] | None = None,
    reply: bool = False,
    timeout: float = 1.0,
    limit: int | None = None,
    broadcast: bool = True,
) -> list[dict[str, Any]] | None:
    """Record the revocation in the broker's store and tell Celery's workers (with
    ``reply``: every worker, and return their answers)."""
    wanted = parse_revoke_headers(headers)
    broker = await app.get_broker()
    if not isinstance(broker, RevocationStore):
        raise ImproperlyConfigured(f"the {type(broker).__name__} broker cannot store revocations")
    keys = revocation_keys(wanted)
    if keys:
        ttl = float(app.conf["worker_revoke_expires"])
        await broker.revoke(keys, ttl, terminate=terminate, signal=signal)
    arguments = {"headers": wanted, "terminate": terminate, "signal": signal}
    if reply:  # celeriac workers answer too (recording it again changes nothing)
        return await app.control.abroadcast(COMMAND, arguments, destination, True, timeout, limit)
    if broadcast and isinstance(broker, Broadcast):
        message = control_message(COMMAND, arguments, destination=destination, in_effect=True)
        await broker.broadcast_control(message)
    return None


async def command(app: Celeriac, arguments: dict[str, Any]) -> dict[str, Any]:
    """A worker carrying out Celery's ``revoke_by_stamped_headers`` command."""
    try:
        wanted = parse_revoke_headers(arguments.get("headers"))
    except ValueError as exc:
        return {"error": str(exc)}
    terminate = bool(arguments.get("terminate"))
    signal = arguments.get("signal")
    await revoke_by_stamped_headers(
        app,
        wanted,
        terminate=terminate,
        signal=str(signal) if signal else None,
        broadcast=False,
    )
    if not terminate:
        return {"ok": f"headers {wanted} flagged as revoked, but not terminated"}
    return {"ok": f"headers {wanted} flagged as revoked; running tasks with them are terminated"}


__all__ = ["COMMAND", "command", "revoke_by_stamped_headers"]
