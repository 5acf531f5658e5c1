"""A small RESP codec and a blocking-socket Redis connection, for the sync fast paths.

A sync ``delay()`` or ``get()`` on Redis needs one round trip, and on a loaded machine
each syscall and each event-loop turn shows: this module speaks to Redis with a plain
blocking socket, one ``sendall`` and (usually) one ``recv`` per command or pipeline, no
event loop, no connection pool. The async core (redis-py) remains the path for
everything else.

- :func:`encode_command` packs commands (``*N`` arrays of bulk strings); several packed
  commands sent together are a pipeline.
- :func:`make_reader` parses replies: ``hiredis.Reader`` when importable, else
  :class:`PyReader` (same results: RESP2 and the RESP3 types Redis sends). A ``-ERR``
  reply comes back as a :class:`ReplyError` *value*; the caller decides whether to raise.
- :class:`Endpoint` is a parsed ``redis://``, ``rediss://``, ``unix://`` or
  ``redis+socket://`` URL (user, password, database, timeouts, TLS options);
  :func:`parse_endpoint` returns None for what it does not handle (sentinel, unknown
  query options), so the caller keeps the general path for those.
- :class:`Connection` connects lazily (AUTH or ``HELLO 3 AUTH``, then SELECT, pipelined
  with the first command), sets TCP_NODELAY and keepalive, and applies the socket timeout
  in the kernel (``SO_RCVTIMEO``): CPython's own socket timeout polls before every
  ``recv``, one more syscall per call. Before an idle connection is reused, a zero-timeout
  poll checks that the server has not closed it (a restarted server): if it has, the
  connection is made anew, so a stale connection never fails a call.

Errors are :class:`RespError` subclasses whose ``kind`` names redis-py's exception type
(``ConnectionError``, ``TimeoutError``, ``ResponseError``), so callers can word them as
the async path does.
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
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

Arg = bytes | str | int | float | bytearray | memoryview

# --------------------------------------------------------------------------- errors


class RespError(Exception):
    """Any failure of this module; ``kind`` is the matching redis-py exception name."""

    kind = "RedisError"


class ReplyError(RespError):
    """An error reply from the server (``-ERR ...``); returned by readers as a value."""

    kind = "ResponseError"

    @property
    def code(self) -> str:
        """The error's first word (``ERR``, ``NOSCRIPT``, ``WRONGTYPE``, ...)."""
        text = str(self.args[0]) if self.args else ""
        return text.split(" ", 1)[0]


class ProtocolError(RespError):
    """Bytes that are not RESP."""

    kind = "InvalidResponse"


class RespConnectionError(RespError):
    """Connecting failed, or the connection broke (the command's fate is unknown)."""

    kind = "ConnectionError"


class RespTimeoutError(RespConnectionError):
    """The server did not answer within the socket timeout."""

    kind = "TimeoutError"


# --------------------------------------------------------------------------- encoding


def _arg_bytes(value: Arg) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bool):  # an int, but Redis has no booleans: refuse, as redis-py
        raise TypeError("a bool is not a valid Redis argument; pass an int or a string")
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, float):
        return repr(value).encode("ascii")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{type(value).__name__} is not a valid Redis argument")


def encode_command(*args: Arg) -> bytes:
    """One command as RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = _arg_bytes(arg)
        parts.append(b"$%d\r\n" % len(raw))
        parts.append(raw)
        parts.append(b"\r\n")
    return b"".join(parts)


def encode_commands(commands: Sequence[Sequence[Arg]]) -> bytes:
    """Several commands in one buffer (a pipeline)."""
    return b"".join(encode_command(*command) for command in commands)


def encode_reply(value: Any) -> bytes:
    """A value as a RESP2 reply, the inverse of the readers: None -> nil bulk string,
    bytes/str -> bulk string, int -> integer, list -> array, :class:`ReplyError` -> error.
    (The server's side of the protocol; tests use it to check the parsers.)"""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, ReplyError):
        text = str(value.args[0]) if value.args else "ERR"
        return b"-" + text.replace("\r", " ").replace("\n", " ").encode("utf-8") + b"\r\n"
    if isinstance(value, bool):
        raise TypeError("RESP2 has no booleans")
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, (bytes, str)):
        raw = value.encode("utf-8") if isinstance(value, str) else value
        return b"$%d\r\n%s\r\n" % (len(raw), raw)
    if isinstance(value, (list, tuple)):
        return b"*%d\r\n" % len(value) + b"".join(encode_reply(item) for item in value)
    raise TypeError(f"cannot encode {type(value).__name__} as a RESP reply")


# --------------------------------------------------------------------------- parsing

NEED_DATA: Any = object()  # gets() of a reader: no complete reply buffered yet


class _Incomplete(Exception):
    pass


class PyReader:
    """A pure-Python RESP2/RESP3 reply parser with ``hiredis.Reader``'s interface:
    ``feed(bytes)``, then ``gets()`` returns one reply or :data:`NEED_DATA`. Values are
    as hiredis gives them: bytes for strings, int, float, bool, None for every null,
    list for arrays, sets and pushes, dict for maps, a :class:`ReplyError` for errors."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def gets(self) -> Any:
        start = self._pos
        try:
            value = self._value()
        except _Incomplete:
            self._pos = start
            return NEED_DATA
        return value

    def _line(self) -> bytes:
        end = self._buf.find(b"\r\n", self._pos)
        if end < 0:
            raise _Incomplete
        line = bytes(self._buf[self._pos : end])
        self._pos = end + 2
        return line

    def _bulk(self, length: int) -> bytes:
        end = self._pos + length
        if len(self._buf) < end + 2:
            raise _Incomplete
        if self._buf[end : end + 2] != b"\r\n":
            raise ProtocolError("bulk string not terminated by CRLF")
        data = bytes(self._buf[self._pos : end])
        self._pos = end + 2
        return data

    def _count(self, line: bytes) -> int:
        try:
            return int(line[1:])
        except ValueError:
            raise ProtocolError(f"bad length in {line[:40]!r}") from None

    def _value(self) -> Any:  # noqa: PLR0912 - one branch per RESP type
        line = self._line()
        if not line:
            raise ProtocolError("empty reply line")
        kind = line[:1]
        if kind == b"+":
            return line[1:]
        if kind == b"-":
            return ReplyError(line[1:].decode("utf-8", "replace"))
        if kind == b":":
            return self._count(line)
        if kind in (b"$", b"=", b"!"):
            length = self._count(line)
            if length < 0:
                return None
            data = self._bulk(length)
            if kind == b"!":
                return ReplyError(data.decode("utf-8", "replace"))
            return data[4:] if kind == b"=" else data
        if kind in (b"*", b"~", b">"):
            count = self._count(line)
            return None if count < 0 else [self._value() for _ in range(count)]
        if kind == b"%":
            count = self._count(line)
            return {_key(self._value()): self._value() for _ in range(count)}
        if kind == b"_":
            return None
        if kind == b",":
            return float(line[1:])
        if kind == b"#":
            return line[1:] == b"t"
        if kind == b"(":
            return line[1:]
        raise ProtocolError(f"unknown reply type {kind!r}")


def _key(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def make_reader() -> Any:
    """hiredis's reader when it is installed, else :class:`PyReader`."""
    try:
        import hiredis  # noqa: PLC0415
    except ImportError:
        return PyReader()
    return hiredis.Reader(
        protocolError=ProtocolError, replyError=ReplyError, notEnoughData=NEED_DATA
    )


# --------------------------------------------------------------------------- endpoints

_SCHEMES = {"redis", "rediss", "unix", "redis+socket"}
_TIMEOUT_OPTIONS = ("socket_timeout", "socket_connect_timeout")
_SSL_OPTIONS = (
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
)
#: Query options the sync connection honours, or may ignore without changing behaviour.
_KNOWN_OPTIONS = frozenset(
    {"db", "password", "username", "socket_keepalive", "max_connections",
     "health_check_interval", "protocol", *_TIMEOUT_OPTIONS, *_SSL_OPTIONS}
)  # fmt: skip
_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a unix socket
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: bool = False
    cert_reqs: int = ssl.CERT_REQUIRED
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    check_hostname: bool | None = None
    connect_timeout: float | None = 5.0
    socket_timeout: float | None = 30.0
    keepalive: bool = True

    @property
    def where(self) -> str:
        return f"unix socket {self.path}" if self.path else f"{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_certs)
        check = self.check_hostname
        context.check_hostname = (self.cert_reqs != ssl.CERT_NONE) if check is None else check
        context.verify_mode = self.cert_reqs  # type: ignore[assignment]
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context


def _seconds(value: Any) -> float | None:
    if value is None or value == "":
        return None
    number = float(value)
    return number if number > 0 else None


def _flag(value: Any) -> bool:
    return str(value).lower() not in {"0", "false", "no", "off", ""}


def parse_endpoint(url: str, options: dict[str, Any] | None = None) -> Endpoint | None:
    """The endpoint of a Redis URL (celeriac's own options already taken out of its query
    string) with transport ``options``; None when the URL needs what this module does not
    do (sentinel, an unknown query option): the caller keeps redis-py for it."""
    options = dict(options or {})
    parsed = urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme not in _SCHEMES:
        return None
    query = dict(parse_qsl(parsed.query, keep_blank_values=True))
    if set(query) - _KNOWN_OPTIONS or str(query.get("protocol", "2")) not in {"2", ""}:
        return None
    for key in (*_TIMEOUT_OPTIONS, "socket_keepalive", *_SSL_OPTIONS):
        if key in query:
            options[key] = query[key]
    fields: dict[str, Any] = {}
    if scheme in {"unix", "redis+socket"}:
        fields["path"] = unquote(parsed.path)
        db = query.get("db") or 0
    else:
        fields["host"] = parsed.hostname or "localhost"
        try:
            fields["port"] = parsed.port or 6379
        except ValueError:
            return None
        db = query.get("db") or parsed.path.strip("/") or 0
        fields["tls"] = scheme == "rediss"
    try:
        fields["db"] = int(db)
    except ValueError:
        return None
    username = unquote(parsed.username) if parsed.username else query.get("username")
    password = unquote(parsed.password) if parsed.password else query.get("password")
    fields["username"] = username or None
    fields["password"] = password or None
    fields["connect_timeout"] = _seconds(options.get("socket_connect_timeout", 5.0))
    fields["socket_timeout"] = _seconds(options.get("socket_timeout", 30.0))
    fields["keepalive"] = _flag(options.get("socket_keepalive", True))
    if fields.get("tls"):
        reqs = str(options.get("ssl_cert_reqs", "required")).lower()
        if reqs not in _CERT_REQS:
            return None
        fields["cert_reqs"] = _CERT_REQS[reqs]
        fields["ca_certs"] = options.get("ssl_ca_certs")
        fields["certfile"] = options.get("ssl_certfile")
        fields["keyfile"] = options.get("ssl_keyfile")
        if "ssl_check_hostname" in options:
            fields["check_hostname"] = _flag(options["ssl_check_hostname"])
    return Endpoint(**fields)


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
        return sock

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
        self._head = encode_command("EVALSHA", self.sha, 0)[4:]  # without the "*3\r\n"

    def command(self, *args: Arg) -> tuple[Arg, ...]:
        return ("EVALSHA", self.sha, 0, *args)

    def pack(self, *args: Arg) -> bytes:
        """``encode_command(*self.command(*args))``, with its constant head packed once."""
        parts = [b"*%d\r\n" % (len(args) + 3), self._head]
        for arg in args:
            raw = _arg_bytes(arg)
            parts += (b"$%d\r\n" % len(raw), raw, b"\r\n")
        return b"".join(parts)

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


__all__ = [
    "NEED_DATA",
    "Connection",
    "Endpoint",
    "ProtocolError",
    "PyReader",
    "ReplyError",
    "RespConnectionError",
    "RespError",
    "RespTimeoutError",
    "Script",
    "encode_command",
    "encode_commands",
    "encode_reply",
    "make_reader",
    "parse_endpoint",
]
