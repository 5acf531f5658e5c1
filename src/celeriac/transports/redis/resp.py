"""celeriac's Redis client, sans-I/O part: the RESP codec, the errors, and where to
connect. The drivers that do the I/O build on it: :mod:`.resp_async` (an asyncio
Protocol, pipelining; the broker, the backend, pub/sub, Sentinel) and
:mod:`.resp_blocking` (a blocking socket; the sync fast paths).

- :func:`encode_command` packs a command with ``hiredis.pack_command``; several packed
  commands sent together are a pipeline.
- :func:`make_reader` is a ``hiredis.Reader`` set up to return an error reply as a
  :class:`ReplyError` *value* (the caller decides whether to raise) and
  :data:`NEED_DATA` when no complete reply is buffered.
- :class:`Endpoint` is a parsed ``redis://``, ``rediss://``, ``unix://`` or
  ``redis+socket://`` URL (user, password, database, timeouts, keepalive, TLS options);
  :class:`Sentinels` a parsed ``sentinel://h1:p1;sentinel://h2:p2`` URL (the master is
  asked of the sentinels at each connection). :func:`parse_target` reads either, and
  raises :class:`~celeriac.exceptions.ImproperlyConfigured` for what it cannot use.

Errors are :class:`RespError` subclasses whose ``kind`` names the usual Redis client
exception type (``ConnectionError``, ``TimeoutError``, ``ResponseError``), which the
broker's and backend's error messages quote.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import hiredis

from celeriac.exceptions import ImproperlyConfigured

Arg = bytes | str | int | float | bytearray | memoryview

# --------------------------------------------------------------------------- errors


class RespError(Exception):
    """Any failure of the client; ``kind`` names the matching Redis client error."""

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


class RespRefusedError(RespConnectionError):
    """The server answered the connection's AUTH, HELLO or SELECT with an error (a wrong
    password, an unknown user, a database out of range): connecting again cannot help."""

    kind = "AuthenticationError"


class RespTimeoutError(RespConnectionError):
    """The server did not answer within the socket timeout."""

    kind = "TimeoutError"


# --------------------------------------------------------------------------- codec

_pack: Any = hiredis.pack_command


def _plain(value: Arg) -> bytes | str | int | float:
    if isinstance(value, bool):  # an int, but Redis has no booleans
        raise TypeError("a bool is not a valid Redis argument; pass an int or a string")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (bytes, str, int, float)):
        return value
    raise TypeError(f"{type(value).__name__} is not a valid Redis argument")


def encode_command(*args: Arg) -> bytes:
    """One command as RESP: an array of bulk strings."""
    try:
        packed: bytes = _pack(args)
    except TypeError:  # bytearray, memoryview (converted), or not an argument (raised)
        packed = _pack(tuple(_plain(arg) for arg in args))
    return packed


def encode_commands(commands: Sequence[Sequence[Arg]]) -> bytes:
    """Several commands in one buffer (a pipeline)."""
    return b"".join([encode_command(*command) for command in commands])


def encode_reply(value: Any) -> bytes:
    """A value as a RESP2 reply, the inverse of the reader: None -> nil bulk string,
    bytes/str -> bulk string, int -> integer, list -> array, :class:`ReplyError` -> error.
    (The server's side of the protocol; tests use it to check the reader.)"""
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


NEED_DATA: Any = object()  # gets() of a reader: no complete reply buffered yet
#: The type of a RESP3 push as the reader returns it: ``hiredis.PushNotification`` (a
#: list) from hiredis 3.2, a plain list before (then every array counts as a push).
PUSH: type[list[Any]] = getattr(hiredis, "PushNotification", list)


def make_reader() -> Any:
    """A reply parser: ``feed(bytes)``, then ``gets()`` returns one reply (bytes for
    strings, int, float, bool, None for every null, list for arrays, sets and pushes,
    dict for maps, a :class:`ReplyError` for errors) or :data:`NEED_DATA`."""
    return hiredis.Reader(
        protocolError=ProtocolError, replyError=ReplyError, notEnoughData=NEED_DATA
    )


# --------------------------------------------------------------------------- endpoints

_SCHEMES = {"redis", "rediss", "unix", "redis+socket"}
_TIMEOUT_OPTIONS = ("socket_timeout", "socket_connect_timeout", "health_check_interval")
#: seconds of silence after which a connection is probed with PING, and then how long the
#: reply may take (the default of ``health_check_interval``): a silent connection is
#: found dead within twice this
HEALTH_CHECK_INTERVAL = 5.0
_SSL_OPTIONS = (
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_check_hostname",
)
#: Options the client honours (in the URL's query or the transport options: timeouts,
#: ``socket_keepalive``, ``health_check_interval``, for ``rediss://`` the ``ssl_*`` ones),
#: or accepts and needs nothing for (``max_connections``: ``scripts.target`` logs once
#: that it does nothing here).
_KNOWN_OPTIONS = frozenset(
    {
        *("db", "password", "username", "socket_keepalive", "protocol"),
        "max_connections",
        *_TIMEOUT_OPTIONS,
        *_SSL_OPTIONS,
    }
)
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
    health_check: float | None = HEALTH_CHECK_INTERVAL

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
    string) with transport ``options``; None when the URL is not one this reads (sentinel,
    an unknown query option, ``protocol=3``): :func:`parse_target` says why."""
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
    fields.update(_timeouts(options))
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


def _timeouts(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "connect_timeout": _seconds(options.get("socket_connect_timeout", 5.0)),
        "socket_timeout": _seconds(options.get("socket_timeout", 30.0)),
        "keepalive": _flag(options.get("socket_keepalive", True)),
        "health_check": _seconds(options.get("health_check_interval", HEALTH_CHECK_INTERVAL)),
    }


@dataclass(frozen=True)
class Sentinels:
    """A ``sentinel://`` URL: the sentinels to ask, in order, for the address of
    ``master_name``; ``master`` is the master's endpoint but for its address (user,
    password, database, timeouts), ``sentinel`` the same for the sentinels (the
    ``sentinel_kwargs`` option: ``password``, ``username``, timeouts)."""

    addresses: tuple[tuple[str, int], ...]
    master_name: str
    master: Endpoint
    sentinel: Endpoint

    @property
    def db(self) -> int:
        return self.master.db

    @property
    def where(self) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self.addresses)
        return f"master {self.master_name!r} of sentinels {hosts}"

    def at(self, host: str, port: int, *, master: bool = True) -> Endpoint:
        """The master's (or a sentinel's) endpoint at ``host:port``."""
        return replace(self.master if master else self.sentinel, host=host, port=port)


_SENTINEL_KWARGS = frozenset({"password", "username", *_TIMEOUT_OPTIONS, "socket_keepalive"})


def parse_sentinels(url: str, options: dict[str, Any]) -> Sentinels:
    """A ``sentinel://h1:p1[/db];sentinel://h2:p2`` URL with ``master_name`` (and
    optionally ``sentinel_kwargs``) in the transport options."""
    master_name = options.get("master_name")
    if not master_name:
        raise ImproperlyConfigured(
            f"{url!r}: a sentinel:// URL needs the master's name in the transport options "
            f"(broker_transport_options={{'master_name': 'mymaster'}})"
        )
    addresses: list[tuple[str, int]] = []
    first = None
    for part in url.split(";"):
        parsed = urlsplit(part.strip())
        try:
            host, port = parsed.hostname, parsed.port or 26379
        except ValueError:
            host = None
        if not host:
            raise ImproperlyConfigured(f"sentinel URL part {part!r} has no host")
        first = first or parsed
        addresses.append((host, port))
    assert first is not None
    given = dict(options.get("sentinel_kwargs") or {})
    unknown = set(given) - _SENTINEL_KWARGS
    if unknown:
        raise ImproperlyConfigured(
            f"sentinel_kwargs: unknown option(s) {sorted(unknown)}; use {sorted(_SENTINEL_KWARGS)}"
        )
    try:
        master = Endpoint(
            username=unquote(first.username) if first.username else None,
            password=unquote(first.password) if first.password else None,
            db=int(first.path.strip("/") or 0),
            **_timeouts(options),
        )
        sentinel = Endpoint(
            username=given.get("username"),
            password=given.get("password"),
            **_timeouts({**{k: options[k] for k in _TIMEOUT_OPTIONS if k in options}, **given}),
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"Redis URL {url!r}: {exc}") from None
    return Sentinels(tuple(addresses), str(master_name), master, sentinel)


def parse_target(url: str, options: dict[str, Any]) -> Endpoint | Sentinels:
    """Where ``url`` (celeriac's own options taken out) with transport ``options`` leads;
    :class:`ImproperlyConfigured` for a URL or option the client cannot use."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sentinel":
        return parse_sentinels(url, options)
    if scheme not in _SCHEMES:
        raise ImproperlyConfigured(f"{url!r} is not a Redis URL")
    try:
        endpoint = parse_endpoint(url, options)
    except ValueError as exc:
        raise ImproperlyConfigured(f"Redis URL {url!r}: {exc}") from None
    if endpoint is None:
        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        unknown = sorted(set(query) - _KNOWN_OPTIONS)
        what = f"unknown option(s) {unknown}" if unknown else "an unusable port, db or option"
        raise ImproperlyConfigured(f"Redis URL {url!r}: {what}")
    return endpoint


__all__ = [
    "NEED_DATA",
    "PUSH",
    "Endpoint",
    "ProtocolError",
    "ReplyError",
    "RespConnectionError",
    "RespError",
    "RespRefusedError",
    "RespTimeoutError",
    "Sentinels",
    "encode_command",
    "encode_commands",
    "encode_reply",
    "make_reader",
    "parse_endpoint",
    "parse_sentinels",
    "parse_target",
]
