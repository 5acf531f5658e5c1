"""TCP keepalive with short timers, for the transports' long-lived connections: the second
line of their deadlines, behind each transport's own probe (Redis PING, AMQP
heartbeats)."""

from __future__ import annotations

import contextlib
import socket


def tune_keepalive(sock: socket.socket, interval: float | None) -> None:
    """TCP keepalive on ``sock``; with a health-check ``interval``, short timers (first
    probe after ``interval``, then every third of it, three probes) and a TCP user
    timeout of three intervals (data unacknowledged that long drops the connection),
    where the platform has them."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if interval is None:
        return
    seconds = max(1, round(interval))
    tunes = (
        ("TCP_KEEPIDLE", seconds),
        ("TCP_KEEPINTVL", max(1, round(interval / 3))),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", int(interval * 3000)),
    )
    for name, value in tunes:
        option = getattr(socket, name, None)
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


__all__ = ["tune_keepalive"]
