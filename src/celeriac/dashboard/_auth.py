"""Who may see and who may change: tokens and basic-auth users, each with a role.

* ``admin`` sees everything and presses buttons; ``read-only`` sees everything and can
  change nothing (the server refuses its POSTs with 403, the page hides the buttons).
* With no credentials configured, only loopback clients are served (as admin): the
  command line refuses to start on another address, and a mounted app refuses the
  requests that come from elsewhere.
* A token is given as ``Authorization: Bearer <token>``, or once as ``?token=<token>``
  in a browser, which then keeps it in an HttpOnly cookie.
* Every POST must carry the ``X-Celeriac-Dashboard`` header, which a page of another
  site cannot send without the browser asking first (no CSRF with basic auth).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

ADMIN = "admin"
READ_ONLY = "read-only"
ROLES = (ADMIN, READ_ONLY)
COOKIE = "celeriac_dashboard_token"
#: what a token may be made of: it travels in a header, a query string and a cookie
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{8,}")
CSRF_HEADER = "x-celeriac-dashboard"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Auth:
    """The credentials: ``users`` name -> (password, role), ``tokens`` token -> role."""

    users: dict[str, tuple[str, str]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        basic: list[str] | tuple[str, ...] = (),
        readonly_basic: list[str] | tuple[str, ...] = (),
        tokens: list[str] | tuple[str, ...] = (),
        readonly_tokens: list[str] | tuple[str, ...] = (),
    ) -> Auth:
        """From ``user:password`` and token strings, as the command line takes them."""
        auth = cls()
        for role, pairs in ((ADMIN, basic), (READ_ONLY, readonly_basic)):
            for pair in pairs:
                user, sep, password = pair.partition(":")
                if not sep or not user or not password:
                    raise ValueError(f"basic auth wants user:password, not {pair!r}")
                auth.users[user] = (password, role)
        for role, given in ((ADMIN, tokens), (READ_ONLY, readonly_tokens)):
            for token in given:
                if not _TOKEN.fullmatch(token):
                    raise ValueError(
                        "a dashboard token must be at least 8 characters of letters, "
                        "digits and -._~+/="
                    )
                auth.tokens[token] = role
        return auth

    @property
    def configured(self) -> bool:
        return bool(self.users or self.tokens)

    def role_of(self, headers: dict[str, str], cookies: dict[str, str], query: str) -> str | None:
        """The role the request's credentials give, or None."""
        given = headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            known = self.users.get(user)
            if known and hmac.compare_digest(known[0].encode(), password.encode()):
                return known[1]
            return None
        candidates = []
        if scheme.lower() == "bearer":
            candidates.append(value.strip())
        candidates.extend(parse_qs(query).get("token", []))
        if COOKIE in cookies:
            candidates.append(cookies[COOKIE])
        for token in candidates:
            for known_token, role in self.tokens.items():
                if hmac.compare_digest(known_token.encode(), token.encode()):
                    return role
        return None


def _cookies(header: str) -> dict[str, str]:
    found = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            found[name] = value
    return found


class AuthMiddleware:
    """Sets ``scope["dashboard_role"]``; answers 401/403 itself."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        if not self.auth.configured:
            client = (scope.get("client") or ("", 0))[0]
            if not is_loopback(str(client)):
                await _answer(send, 403, "the dashboard has no credentials: loopback only")
                return
            role: str | None = ADMIN
        else:
            role = self.auth.role_of(headers, _cookies(headers.get("cookie", "")), query)
            if role is None:
                await _answer(send, 401, "authentication required", basic=bool(self.auth.users))
                return
        if scope["method"] not in ("GET", "HEAD") and CSRF_HEADER not in headers:
            await _answer(send, 403, f"a change needs the {CSRF_HEADER} header")
            return
        if scope["method"] not in ("GET", "HEAD") and role != ADMIN:
            await _answer(send, 403, "the read-only role can change nothing")
            return
        scope["dashboard_role"] = role
        token = parse_qs(query).get("token", [None])[0]
        if token is None or not self.auth.tokens:
            await self.app(scope, receive, send)
            return

        async def remember(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, remember)


async def _answer(send: Send, status: int, text: str, basic: bool = False) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    if basic:
        headers.append((b"www-authenticate", b'Basic realm="celeriac dashboard"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text.encode()})


__all__ = ["ADMIN", "READ_ONLY", "Auth", "AuthMiddleware", "is_loopback"]
