"""celeriac's Redis client, blocking driver: one plain socket, for the sync fast paths.

A sync ``delay()`` or ``get()`` on Redis needs one round trip, and on a loaded machine
each syscall and each event-loop turn shows: :class:`Connection` speaks to Redis with a
blocking socket, one ``sendall`` and (usually) one ``recv`` per command or pipeline, no
event loop, no connection pool. The codec and the errors are :mod:`.resp`'s.

:class:`Connection` connects lazily (AUTH or ``HELLO 3 AUTH``, then SELECT, pipelined
with the first command), sets TCP_NODELAY and keepalive, and applies the socket timeout
in the kernel (``SO_RCVTIMEO``): CPython's own socket timeout polls before every
``recv``, one more syscall per call. Before an idle connection is reused, a zero-timeout
poll checks that the server has not closed it (a restarted server): if it has, the
connection is made anew, so a stale connection never fails a call. One idle for
``health_check_interval`` (5 s) or longer is also asked a PING first, answered within
that long, else given up and made anew: a connection that a NAT or a load balancer forgot
while it was idle (no FIN, no RST) costs a caller that long, not the socket timeout.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import struct
import time
from collections.abc import Sequence
from typing import Any

from celeriac.transports.redis.resp import (
    NEED_DATA,
    Arg,
    Endpoint,
    ReplyError,
    RespConnectionError,
    RespTimeoutError,
    encode_command,
    encode_commands,
    make_reader,
)

# --------------------------------------------------------------------------- connection

_RECV = 65536
#: How long a read of a reply polls the socket before it sleeps in the kernel. A reply
#: from a Redis on the same host comes back in 20-60 us, but a thread that sleeps for it
#: is woken 50-70 us after it came on a virtual machine (measured on the development VM:
#: PING 100 us sleeping, 30 us polling), which was half the cost of a sync ``delay()``.
_SPIN = 0.0002
#: After this many polls in a row that came back empty (a distant server), reads sleep
#: at once for the next ``_SPIN_REST`` replies, then try polling again.
_SPIN_MISSES = 4
_SPIN_REST = 256


def _timeval(seconds: float | None) -> bytes:
    if not seconds:
        return struct.pack("ll", 0, 0)  # no timeout
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


class Connection:
    """One blocking connection to Redis; see the module docstring. Not thread-safe: use
    one per thread. ``resp3=True`` speaks RESP3 (``HELLO 3``), where a subscribed
    connection may still run commands and pushes are told apart from replies."""

    def __init__(self, endpoint: Endpoint, *, resp3: bool = False) -> None:
        self.endpoint = endpoint
        self.resp3 = resp3
        self.pid = os.getpid()
        self._sock: socket.socket | None = None
        self._poll: select.poll | None = None
        self._reader: Any = None
        self._pending = 0  # replies of the handshake still to read and check
        self._misses = 0  # polls in a row that found no reply (see ``_spin``)
        self._rest = 0  # reads left that sleep without polling first
        self._used = 0.0  # monotonic time of the last reply (or of the connect)

    # -- lifecycle ------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._sock is not None

    def _connect(self) -> socket.socket:
        ep = self.endpoint
        try:
            if ep.path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(ep.connect_timeout)
                    sock.connect(ep.path)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((ep.host, ep.port), ep.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if ep.keepalive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if ep.tls:
                try:
                    sock = ep.ssl_context().wrap_socket(sock, server_hostname=ep.host)
                except BaseException:
                    sock.close()
                    raise
                sock.settimeout(ep.socket_timeout)  # an SSL socket keeps Python's timeout
            else:
                sock.settimeout(None)  # blocking; the kernel applies the timeout
                tv = _timeval(ep.socket_timeout)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        except TimeoutError:
            raise RespTimeoutError(f"Timeout connecting to {ep.where}") from None
        except OSError as exc:
            raise RespConnectionError(_connect_error(exc, ep)) from None
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        self._sock, self._poll, self._reader = sock, poller, make_reader()
        self.pid = os.getpid()
        self._used = time.monotonic()
        return sock

    def _handshake(self) -> list[bytes]:
        ep = self.endpoint
        commands: list[bytes] = []
        if self.resp3:
            auth: list[Arg] = []
            if ep.password is not None:
                auth = ["AUTH", ep.username or "default", ep.password]
            commands.append(encode_command("HELLO", 3, *auth))
        elif ep.password is not None:
            user = [ep.username] if ep.username else []
            commands.append(encode_command("AUTH", *user, ep.password))
        if ep.db:
            commands.append(encode_command("SELECT", ep.db))
        return commands

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._poll = self._reader = None
        self._pending = 0
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def __del__(self) -> None:
        self.close()

    def _usable(self) -> socket.socket | None:
        """The socket, if it can be used: same process, and the server has not closed
        it while it was idle (a zero-timeout poll: readable means EOF, or bytes nobody
        asked for, such as pushes of a subscription that ended)."""
        sock = self._sock
        if sock is None:
            return None
        if self.pid != os.getpid():  # inherited across fork: the parent's, not ours
            self.close()  # closes the child's copy of the descriptor only
            return None
        assert self._poll is not None
        if self._poll.poll(0) and not self._pending:
            data = self._recv_now(sock)
            if data is None:
                return sock  # a TLS record not complete yet
            if not data or not self.resp3:
                self.close()  # EOF (a restarted server), or a reply out of step
                return None
            self._reader.feed(data)  # pushes: the reader of a RESP3 connection skips them
        return sock if self._answers() else None

    def _answers(self) -> bool:
        """True unless the connection has been idle for the health-check interval and a
        PING gets no answer within that long (then it is closed)."""
        interval = self.endpoint.health_check
        if interval is None or self._pending or time.monotonic() - self._used < interval:
            return True
        try:
            self._send(b"*1\r\n$4\r\nPING\r\n")
            reply = self.read(time.monotonic() + interval)
        except RespConnectionError:
            return False  # closed already
        if reply is NEED_DATA or isinstance(reply, ReplyError):
            self.close()
            return False
        return True

    def _recv_now(self, sock: socket.socket) -> bytes | None:
        """What can be read without waiting: b"" at EOF (or on an error), None if
        nothing."""
        tls = isinstance(sock, ssl.SSLSocket)
        try:
            if tls:
                sock.settimeout(0.0)
                return sock.recv(_RECV)
            return sock.recv(_RECV, socket.MSG_DONTWAIT)
        except (BlockingIOError, ssl.SSLWantReadError):
            return None
        except OSError:
            return b""
        finally:
            if tls:
                sock.settimeout(self.endpoint.socket_timeout)

    def send(self, data: bytes) -> bool:
        """Send packed commands, connecting first if needed (the handshake goes in the
        same write); True if the connection is new, so nothing sent before on it can
        have been lost."""
        if self._usable() is not None:
            self._send(data)
            return False
        self._connect()
        handshake = self._handshake()
        self._pending = len(handshake)
        self._send(b"".join([*handshake, data]))
        return True

    # -- I/O --------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise RespConnectionError("not connected")
        try:
            sock.sendall(data)
        except (TimeoutError, BlockingIOError):
            self.close()
            raise RespTimeoutError(f"Timeout writing to {self.endpoint.where}") from None
        except OSError as exc:
            self.close()
            raise RespConnectionError(
                f"Error {exc.errno} while writing to {self.endpoint.where}: {exc.strerror}"
            ) from None

    def _fill(self, deadline: float | None) -> bool:
        """Read more bytes into the reader; False when ``deadline`` (monotonic) passed
        first. With no deadline, the socket timeout applies (and raises)."""
        sock = self._sock
        if sock is None:
            raise RespConnectionError("not connected")
        where = self.endpoint.where
        tls = isinstance(sock, ssl.SSLSocket)
        try:
            data = None
            if not tls and deadline is None:
                data = self._spin(sock)
            if data is None:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if tls:
                        sock.settimeout(max(left, 0.001))
                    elif left <= 0 or not self._wait_readable(left):
                        return False
                data = sock.recv(_RECV)
        except (TimeoutError, BlockingIOError):
            if deadline is not None:
                return False
            self.close()
            raise RespTimeoutError(f"Timeout reading from {where}") from None
        except OSError as exc:
            self.close()
            raise RespConnectionError(
                f"Error {exc.errno} while reading from {where}: {exc.strerror}"
            ) from None
        finally:
            if tls and deadline is not None and self._sock is sock:
                sock.settimeout(self.endpoint.socket_timeout)
        if not data:
            self.close()
            raise RespConnectionError(f"Connection closed by server ({where})")
        self._reader.feed(data)
        return True

    def _spin(self, sock: socket.socket) -> bytes | None:
        """Poll for a reply for up to ``_SPIN`` seconds; None if none came (then the
        caller sleeps in ``recv``). A server that is too far for polling to pay is
        noticed after ``_SPIN_MISSES`` misses and not polled for a while."""
        if self._rest:
            self._rest -= 1
            return None
        end = time.perf_counter() + _SPIN
        while True:
            try:
                data = sock.recv(_RECV, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if time.perf_counter() < end:
                    continue
                self._misses += 1
                if self._misses >= _SPIN_MISSES:
                    self._misses, self._rest = 0, _SPIN_REST
                return None
            self._misses = 0
            return data

    def _wait_readable(self, seconds: float) -> bool:
        assert self._poll is not None
        return bool(self._poll.poll(max(1, int(seconds * 1000 + 0.999))))

    def _handshake_replies(self, deadline: float | None = None) -> None:
        while self._pending:
            reply = self._reader.gets()
            if reply is NEED_DATA:
                if not self._fill(deadline):
                    raise RespTimeoutError(f"Timeout reading from {self.endpoint.where}")
                continue
            self._pending -= 1
            if isinstance(reply, ReplyError):  # AUTH, HELLO or SELECT refused
                self.close()
                raise RespConnectionError(f"Redis refused the connection: {reply}")

    def read(self, deadline: float | None = None) -> Any:
        """The next reply (a :class:`ReplyError` is returned, not raised); NEED_DATA if
        ``deadline`` passed first."""
        if self._pending:
            self._handshake_replies()
        reader = self._reader
        while True:
            reply = reader.gets()
            if reply is not NEED_DATA:
                self._used = time.monotonic()
                return reply
            if not self._fill(deadline):
                return NEED_DATA
            reader = self._reader

    def execute(self, *args: Arg) -> Any:
        """Run one command; an error reply is raised."""
        (reply,) = self.pipeline([args])
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Run commands in one write; their replies in order (errors as values)."""
        return self.pipeline_packed(encode_commands(commands), len(commands))

    def pipeline_packed(self, data: bytes, count: int) -> list[Any]:
        """Send ``count`` commands packed in ``data``; their replies in order."""
        try:
            self.send(data)
            return [self.read() for _ in range(count)]
        except BaseException:
            self.close()  # replies may be left unread: the connection is out of step
            raise


def _connect_error(exc: OSError, ep: Endpoint) -> str:
    if exc.errno is None:
        return f"Error connecting to {ep.where}. {exc}."
    return f"Error {exc.errno} connecting to {ep.where}. {exc.strerror}."


class Script:
    """A Lua script run by EVALSHA, or by EVAL when the server answers NOSCRIPT (its
    script cache is empty after a restart)."""

    def __init__(self, text: str, sha: str) -> None:
        self.text = text.encode("utf-8")
        self.sha = sha.encode("ascii")

    def command(self, *args: Arg) -> tuple[Arg, ...]:
        return ("EVALSHA", self.sha, 0, *args)

    def pack(self, *args: Arg) -> bytes:
        """``encode_command(*self.command(*args))``."""
        return encode_command("EVALSHA", self.sha, 0, *args)

    def run(
        self, conn: Connection, args: Sequence[Arg], before: Sequence[Sequence[Arg]] = ()
    ) -> Any:
        """Run the script on ``conn`` after the commands ``before`` (in one write);
        returns its reply, raising the first error reply."""
        if before:
            replies = conn.pipeline([*before, self.command(*args)])
        else:
            replies = conn.pipeline_packed(self.pack(*args), 1)
        for reply in replies[:-1]:
            if isinstance(reply, ReplyError):
                raise reply
        reply = replies[-1]
        if isinstance(reply, ReplyError) and reply.code == "NOSCRIPT":
            reply = conn.pipeline([("EVAL", self.text, 0, *args)])[0]
        if isinstance(reply, ReplyError):
            raise reply
        return reply


__all__ = ["Connection", "Script"]
