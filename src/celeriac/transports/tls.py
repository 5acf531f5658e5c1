"""Celery's TLS settings, ``broker_use_ssl`` and ``redis_backend_use_ssl``, applied to a
URL and its transport options.

``broker_use_ssl = True`` turns ``amqp://`` into ``amqps://`` and ``redis://`` into
``rediss://`` with the default checks (the server's certificate against the system's
CAs). A mapping sets the files and the check, in Celery's key names:

- RabbitMQ (py-amqp's names): ``ca_certs``, ``certfile``, ``keyfile``, ``cert_reqs``; they
  become aiormq's URL options ``cafile``, ``certfile``, ``keyfile``, ``no_verify_ssl``.
- Redis (redis-py's names): ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
  ``ssl_cert_reqs``, ``ssl_check_hostname``; they become transport options.

``cert_reqs`` takes ``ssl.CERT_NONE``/``CERT_OPTIONAL``/``CERT_REQUIRED`` or their names
(``"none"``, ``"optional"``, ``"required"``, also ``"CERT_NONE"``...). A key that is not
one of these, or TLS asked of a broker that has none (SQLite, memory), is a configuration
error naming what to change.
"""

from __future__ import annotations

import difflib
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from celeriac.exceptions import ImproperlyConfigured

_AMQP = {"amqp", "amqps", "pyamqp"}
_REDIS = {"redis", "rediss"}
_AMQP_KEYS = {"ca_certs": "cafile", "certfile": "certfile", "keyfile": "keyfile"}
_REDIS_KEYS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")
_REQS: dict[int, str] = {
    int(ssl.CERT_NONE): "none",
    int(ssl.CERT_OPTIONAL): "optional",
    int(ssl.CERT_REQUIRED): "required",
}


def _cert_reqs(setting: str, value: Any) -> str:
    if isinstance(value, int) and value in _REQS:
        return _REQS[value]
    text = str(value).lower().removeprefix("cert_")
    if text in _REQS.values():
        return text
    raise ImproperlyConfigured(
        f"{setting}: cert_reqs {value!r} is not one of ssl.CERT_NONE, ssl.CERT_OPTIONAL, "
        "ssl.CERT_REQUIRED (or 'none', 'optional', 'required')"
    )


def _check_keys(setting: str, given: Mapping[str, Any], valid: list[str]) -> None:
    for key in given:
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ImproperlyConfigured(
                f"{setting}: unknown key {key!r} (valid: {', '.join(sorted(valid))}){hint}"
            )


def apply_tls(setting: str, url: str, use_ssl: Any) -> tuple[str, dict[str, Any]]:
    """``url`` and the transport options to add, with ``use_ssl`` (the value of
    ``setting``) applied; unchanged when ``use_ssl`` is None or False."""
    if use_ssl is None or use_ssl is False:
        return url, {}
    if not (use_ssl is True or isinstance(use_ssl, Mapping)):
        raise ImproperlyConfigured(
            f"{setting} must be True or a mapping of TLS options, not {use_ssl!r}"
        )
    given: Mapping[str, Any] = use_ssl if isinstance(use_ssl, Mapping) else {}
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme in _AMQP:
        _check_keys(setting, given, [*_AMQP_KEYS, "cert_reqs"])
        base, _, query_text = rest.partition("?")
        query = dict(parse_qsl(query_text, keep_blank_values=True))
        for key, option in _AMQP_KEYS.items():
            if given.get(key):
                query[option] = str(given[key])
        if "cert_reqs" in given and _cert_reqs(setting, given["cert_reqs"]) == "none":
            query["no_verify_ssl"] = "1"
        return f"amqps://{base}" + (f"?{urlencode(query)}" if query else ""), {}
    if scheme in _REDIS:
        _check_keys(setting, given, [*_REDIS_KEYS, "ssl_cert_reqs"])
        options = {key: given[key] for key in _REDIS_KEYS if given.get(key) is not None}
        if "ssl_cert_reqs" in given:
            options["ssl_cert_reqs"] = _cert_reqs(setting, given["ssl_cert_reqs"])
        return f"rediss://{rest}", options
    raise ImproperlyConfigured(
        f"{setting} is set, but the {scheme}:// broker/backend has no TLS: unset it, or use "
        "an amqps:// or rediss:// URL"
    )


__all__ = ["apply_tls"]
