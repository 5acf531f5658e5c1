"""Settings: Celery's lowercase names, one schema, validated when set.

Sources, lowest precedence first: defaults, ``CELERIAC_<NAME>`` environment variables,
``config_from_object``, keyword arguments and ``app.conf.update``/item assignment.
An unknown name or a bad value raises :class:`ImproperlyConfigured` naming the setting
and, for unknown names, the nearest valid one.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
import types
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celeriac.exceptions import ImproperlyConfigured

ENV_PREFIX = "CELERIAC_"

Validator = Callable[[str, Any], Any]


def _fail(name: str, value: Any, expected: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"setting {name}={value!r} is invalid: expected {expected}")


def _str(name: str, value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    raise _fail(name, value, "a string")


def _bool(name: str, value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    }:
        return value.lower() in {"1", "true", "yes", "on"}
    raise _fail(name, value, "true or false")


def _int(minimum: int = 0) -> Validator:
    def check(name: str, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _fail(name, value, f"a whole number >= {minimum}")
        return value

    return check


def _seconds(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _fail(name, value, "a number of seconds") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise _fail(name, value, "a number of seconds >= 0 or a timedelta")
    return float(value)


def _list(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _fail(name, value, "a list of strings")


def _mapping(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _fail(name, value, "a mapping (JSON object in the environment)") from None
    if isinstance(value, Mapping):
        return dict(value)
    raise _fail(name, value, "a mapping")


def _tls_setting(name: str, value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
        return _mapping(name, value)
    if isinstance(value, Mapping):
        return dict(value)
    raise _fail(name, value, "True, False or a mapping of TLS options")


def _any(name: str, value: Any) -> Any:
    return value


def _choice(*choices: str) -> Validator:
    def check(name: str, value: Any) -> Any:
        if value is None or value in choices:
            return value
        near = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise _fail(name, value, f"one of {', '.join(choices)}{hint}")

    return check


def _serializer(name: str, value: Any) -> Any:
    return _choice("json", "msgpack", "pickle")(name, value)


def _content(name: str, value: Any) -> Any:
    value = _list(name, value)
    allowed = {
        "json",
        "msgpack",
        "pickle",
        "application/json",
        "application/x-msgpack",
        "application/x-python-serialize",
    }
    for item in value or []:
        if item not in allowed:
            raise _fail(name, value, f"serializer names from {sorted(allowed)}")
    return value


def _routes(name: str, value: Any) -> Any:
    if value is None or isinstance(value, (Mapping, list, tuple)) or callable(value):
        return value
    raise _fail(name, value, "a mapping of task name (or glob) to {'queue': ...}, or a list")


@dataclass(frozen=True, slots=True)
class Setting:
    default: Any
    check: Validator


SETTINGS: dict[str, Setting] = {
    # broker and results
    "broker_url": Setting(None, _str),
    "broker_transport_options": Setting({}, _mapping),
    "broker_use_ssl": Setting(None, _tls_setting),
    "redis_backend_use_ssl": Setting(None, _tls_setting),
    "broker_connection_retry_on_startup": Setting(True, _bool),
    "broker_connection_timeout": Setting(4.0, _seconds),
    "result_backend": Setting(None, _str),
    "result_backend_transport_options": Setting({}, _mapping),
    "result_expires": Setting(86400.0, _seconds),
    "result_extended": Setting(False, _bool),
    "result_serializer": Setting("json", _serializer),
    "result_accept_content": Setting(None, _content),
    # tasks
    "accept_content": Setting(["json"], _content),
    "task_serializer": Setting("json", _serializer),
    "task_default_queue": Setting("celery", _str),
    "task_default_priority": Setting(None, _int(0)),
    "task_routes": Setting(None, _routes),
    "task_queues": Setting(None, _any),
    "task_create_missing_queues": Setting(True, _bool),
    "task_acks_late": Setting(True, _bool),
    "task_acks_on_failure_or_timeout": Setting(True, _bool),
    "task_reject_on_worker_lost": Setting(None, _bool),
    "task_max_redeliveries": Setting(3, _int(0)),
    "task_ignore_result": Setting(False, _bool),
    "task_store_errors_even_if_ignored": Setting(False, _bool),
    "task_track_started": Setting(False, _bool),
    "task_time_limit": Setting(None, _seconds),
    "task_soft_time_limit": Setting(None, _seconds),
    "task_default_rate_limit": Setting(None, _str),
    "task_default_retry_delay": Setting(180.0, _seconds),
    "task_always_eager": Setting(False, _bool),
    "task_eager_propagates": Setting(False, _bool),
    "task_send_sent_event": Setting(False, _bool),
    "task_protocol": Setting(2, _int(1)),
    "task_annotations": Setting(None, _any),
    # worker
    "worker_concurrency": Setting(None, _int(1)),
    "worker_pool": Setting("prefork", _choice("prefork", "threads", "asyncio", "solo")),
    "worker_prefetch_multiplier": Setting(4, _int(1)),
    "worker_prefetch_window": Setting(0.02, _seconds),
    "worker_max_tasks_per_child": Setting(None, _int(1)),
    "worker_max_memory_per_child": Setting(None, _int(1)),
    "worker_shutdown_timeout": Setting(None, _seconds),
    "worker_send_task_events": Setting(False, _bool),
    "worker_revoke_expires": Setting(10800.0, _seconds),
    "worker_hijack_root_logger": Setting(True, _bool),
    "worker_log_format": Setting(None, _str),
    "worker_task_log_format": Setting(None, _str),
    "worker_redirect_stdouts": Setting(True, _bool),
    # misc
    "timezone": Setting("UTC", _str),
    "enable_utc": Setting(True, _bool),
    "imports": Setting([], _list),
    "include": Setting([], _list),
    "beat_schedule": Setting({}, _mapping),
}

#: Celery's old uppercase names that differ from ``NAME.lower()``.
LEGACY_ALIASES = {
    "BROKER_URL": "broker_url",
    "CELERY_RESULT_BACKEND": "result_backend",
    "CELERY_TASK_SERIALIZER": "task_serializer",
    "CELERY_RESULT_SERIALIZER": "result_serializer",
    "CELERY_ACCEPT_CONTENT": "accept_content",
    "CELERY_TIMEZONE": "timezone",
    "CELERY_ENABLE_UTC": "enable_utc",
    "CELERY_ROUTES": "task_routes",
    "CELERY_IMPORTS": "imports",
    "CELERYD_CONCURRENCY": "worker_concurrency",
    "CELERYD_PREFETCH_MULTIPLIER": "worker_prefetch_multiplier",
    "CELERYBEAT_SCHEDULE": "beat_schedule",
}


def canonical_name(key: str) -> str:
    """Map a given key to its setting name, or raise naming the nearest valid one."""
    if key in SETTINGS:
        return key
    if key in LEGACY_ALIASES:
        return LEGACY_ALIASES[key]
    lowered = key.lower()
    if lowered in SETTINGS:
        return lowered
    near = difflib.get_close_matches(lowered, SETTINGS, n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise ImproperlyConfigured(f"unknown setting {key!r}{hint}")


class Settings(MutableMapping[str, Any]):
    """``app.conf``: a validated mapping of Celery's setting names."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self.finalized = False
        #: grows with every assignment or deletion (not with changes made inside a
        #: value, such as a key set in a dict setting): caches of derived state check it
        self.version = 0

    def __getitem__(self, key: str) -> Any:
        values = self._values
        if key in values:  # stored under canonical names: a hit needs no look-up
            return values[key]
        spec = SETTINGS.get(key)
        if spec is None:
            name = canonical_name(key)
            if name in values:
                return values[name]
            spec = SETTINGS[name]
        default = spec.default
        return default.copy() if isinstance(default, (dict, list)) else default

    def __setitem__(self, key: str, value: Any) -> None:
        name = canonical_name(key)
        self._values[name] = SETTINGS[name].check(name, value)
        self.version += 1

    def __delitem__(self, key: str) -> None:
        del self._values[canonical_name(key)]
        self.version += 1

    def __iter__(self) -> Iterator[str]:
        return iter(SETTINGS)

    def __len__(self) -> int:
        return len(SETTINGS)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self[key]
        except ImproperlyConfigured as exc:
            raise AttributeError(str(exc)) from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("_") or key in ("finalized", "version"):
            object.__setattr__(self, key, value)
        else:
            self[key] = value

    def is_set(self, key: str) -> bool:
        return canonical_name(key) in self._values

    def setdefault_value(self, key: str, value: Any) -> None:
        """Set ``key`` unless it was set explicitly."""
        if not self.is_set(key):
            self[key] = value

    def update_from_env(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        for key, raw in env.items():
            if not key.startswith(ENV_PREFIX):
                continue
            suffix = key[len(ENV_PREFIX) :].lower()
            if suffix not in SETTINGS:
                near = difflib.get_close_matches(suffix, SETTINGS, n=1, cutoff=0.6)
                hint = f"; did you mean {ENV_PREFIX}{near[0].upper()}?" if near else ""
                raise ImproperlyConfigured(f"unknown environment setting {key}{hint}")
            self[suffix] = raw

    def update_from_object(self, obj: Any, namespace: str | None = None) -> None:
        items: Mapping[str, Any]
        if isinstance(obj, Mapping):
            items = obj
        else:
            items = {k: getattr(obj, k) for k in dir(obj) if not k.startswith("_")}
        prefix = f"{namespace}_" if namespace else ""
        for key, value in items.items():
            if isinstance(value, (types.ModuleType, types.FunctionType, type)) or inspect.isbuiltin(
                value
            ):
                continue  # imports and helpers in a config module are not settings
            if prefix and not key.startswith(prefix):
                continue
            self[key[len(prefix) :]] = value

    def as_dict(self) -> dict[str, Any]:
        return {name: self[name] for name in SETTINGS}

    def __repr__(self) -> str:
        return f"<Settings {self._values!r}>"
