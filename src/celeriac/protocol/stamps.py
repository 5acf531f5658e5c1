"""Stamps on the wire (Celery 5.3+ "stamping"), and the keys stamp revocations use.

A stamped task message carries two headers, as Celery's client writes them:
``stamped_headers`` (the stamp names, a list; ``None`` when unstamped) and ``stamps``
(name -> value; ``{}`` when unstamped). In a signature the same stamps are options: its
``stamped_headers`` option names them and each is an option of its own, so a chain's
next step or a chord's body, sent by a worker, carries its stamps in its message too.

``revoke_by_stamped_headers`` revokes every task with a stamp of a given value; a stamp
whose value is a list matches when any of its items does. celeriac keeps such a
revocation in the broker's revocation store, under one key per (name, value) pair
(:func:`revocation_key`), next to the task ids revoked by id.
"""

from __future__ import annotations

import json
from typing import Any

#: Key prefix of stamp revocations in the revocation store (task ids are UUIDs, so the
#: two never collide).
PREFIX = "stamp:"


def stamp_names(value: Any) -> list[str]:
    """The stamp names of a ``stamped_headers`` option or header (a name or a list)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [str(name) for name in value]
    raise TypeError(f"stamped_headers must be a list of names, got {value!r}")


def stamp_headers(options: dict[str, Any]) -> dict[str, Any] | None:
    """The message headers of a call's options: its ``headers`` option plus, for a
    stamped call, ``stamped_headers`` and ``stamps`` (None when there are neither)."""
    extra = options.get("headers")
    if "stamped_headers" not in options:  # the usual case, on the path of every delay()
        return extra
    names = stamp_names(options["stamped_headers"])
    if not names:
        return extra
    missing = [name for name in names if name not in options]
    if missing:
        raise ValueError(
            f"stamped_headers names {', '.join(map(repr, missing))} but the call has no "
            f"option of that name (stamp it with sig.stamp(name=value))"
        )
    return {
        **(extra or {}),
        "stamped_headers": names,
        "stamps": {name: options[name] for name in names},
    }


def keep_stamps(own: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without those that would replace a stamp of a signature whose options
    are ``own`` (as Celery: ``apply_async``/``clone`` options do not change a stamp)."""
    if "stamped_headers" not in own or not options:
        return options
    fixed = {"stamped_headers", *stamp_names(own["stamped_headers"])}
    return {k: v for k, v in options.items() if k not in fixed or k not in own}


def stamp_options(options: dict[str, Any]) -> dict[str, Any]:
    """The stamping options among ``options``: ``stamped_headers`` and the stamps."""
    names = stamp_names(options.get("stamped_headers"))
    if not names:
        return {}
    return {"stamped_headers": names, **{n: options[n] for n in names if n in options}}


def eager_stamps(options: dict[str, Any]) -> dict[str, Any]:
    """The request's ``stamped_headers``/``stamps`` for a call run eagerly (``apply``),
    as Celery's: there each stamp's value is a list (a scalar in a list of one)."""
    names = stamp_names(options.get("stamped_headers"))
    if "stamped_headers" not in options:
        return {}
    values = {n: options.get(n, []) for n in names}
    return {
        "stamped_headers": names,
        "stamps": {n: v if isinstance(v, list) else [v] for n, v in values.items()},
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def revocation_key(name: str, value: Any) -> str:
    """The revocation-store key of the stamp ``name`` with the (scalar) ``value``."""
    return f"{PREFIX}{name}={_canonical(value)}"


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def revocation_keys(headers: dict[str, Any]) -> list[str]:
    """Keys revoking ``{name: value or [values]}`` (``revoke_by_stamped_headers``)."""
    return [revocation_key(name, v) for name, value in headers.items() for v in _items(value)]


def message_keys(headers: dict[str, Any]) -> list[str]:
    """Keys under which a task message's stamps may be revoked ([] when unstamped)."""
    try:
        names = stamp_names(headers.get("stamped_headers"))
    except TypeError:
        return []  # not a stamped message we can read: nothing to revoke it by
    stamps = headers.get("stamps")
    if not names or not isinstance(stamps, dict):
        return []
    return [
        revocation_key(name, v)
        for name in names
        if stamps.get(name) is not None
        for v in _items(stamps[name])
    ]


def parse_revoke_headers(value: Any) -> dict[str, Any]:
    """``revoke_by_stamped_headers``'s ``headers``: a dict, or Celery's command-line form
    (a list of ``"name=value"``)."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        out: dict[str, Any] = {}
        for item in value:
            name, sep, text = str(item).partition("=")
            if not sep:
                raise ValueError(f"a stamped header to revoke is name=value, got {item!r}")
            out[name] = text
        return out
    raise ValueError(f"headers must be a dict of stamp name -> value(s), got {value!r}")


__all__ = [
    "PREFIX",
    "eager_stamps",
    "keep_stamps",
    "message_keys",
    "parse_revoke_headers",
    "revocation_key",
    "revocation_keys",
    "stamp_headers",
    "stamp_names",
    "stamp_options",
]
