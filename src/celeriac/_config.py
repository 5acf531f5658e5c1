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
import logging
import os
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from celeriac._settings_table import NOTES, Note, old_name
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


def _pool(name: str, value: Any) -> Any:
    if value == "eventlet":
        from celeriac._concurrency import EVENTLET_REFUSED  # noqa: PLC0415

        raise ImproperlyConfigured(
            f"setting {name}='eventlet': {EVENTLET_REFUSED.partition(': ')[2]}"
        )
    return _choice("prefork", "threads", "asyncio", "solo", "gevent")(name, value)


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


def _queues(name: str, value: Any) -> Any:
    from celeriac._queues import queue_table  # noqa: PLC0415 - imports this module

    return None if value is None else queue_table(name, value)


def _annotations(name: str, value: Any) -> Any:
    if value is None or isinstance(value, Mapping) or hasattr(value, "annotate"):
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            _annotations(name, item)
        return list(value)
    raise _fail(name, value, "a mapping of task name (or '*') to attributes, or a list of them")


#: The keys of ``task_publish_retry_policy`` (Celery's, as kombu's ``ensure`` takes them).
RETRY_POLICY_KEYS = (
    "max_retries",
    "interval_start",
    "interval_step",
    "interval_max",
    "retry_errors",
)


def _retry_policy(name: str, value: Any) -> Any:
    value = _mapping(name, value)
    for key in value or {}:
        if key not in RETRY_POLICY_KEYS:
            near = difflib.get_close_matches(key, RETRY_POLICY_KEYS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise _fail(name, value, f"keys among {', '.join(RETRY_POLICY_KEYS)}{hint}")
    return value


def _protocol(name: str, value: Any) -> Any:
    value = _int(1)(name, value)
    if value not in (None, 2):
        raise _fail(name, value, "2 (celeriac speaks Celery's message protocol 2 only)")
    return value


def _timezone(name: str, value: Any) -> Any:
    if value is None or isinstance(value, tzinfo):
        return value
    if isinstance(value, str):
        if not value:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            near = difflib.get_close_matches(value, available_timezones(), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise _fail(
                name, value, f"an IANA time zone name such as 'Europe/Paris'{hint}"
            ) from None
        return value
    raise _fail(name, value, "a time zone name (str) or a tzinfo")


def _beat_schedule(name: str, value: Any) -> Any:
    from celeriac.beat.entries import check_schedule  # noqa: PLC0415 - imports this module

    value = _mapping(name, value)
    return None if value is None else check_schedule(name, value)


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
    "broker_connection_retry": Setting(True, _bool),
    "broker_connection_retry_on_startup": Setting(None, _bool),
    "broker_connection_max_retries": Setting(100, _int(0)),
    "broker_connection_timeout": Setting(4.0, _seconds),
    "broker_heartbeat": Setting(None, _seconds),
    "redis_socket_timeout": Setting(None, _seconds),
    "redis_socket_connect_timeout": Setting(None, _seconds),
    "redis_socket_keepalive": Setting(None, _bool),
    "result_backend": Setting(None, _str),
    "result_backend_transport_options": Setting({}, _mapping),
    "result_expires": Setting(86400.0, _seconds),
    "result_extended": Setting(False, _bool),
    "result_serializer": Setting("json", _serializer),
    # tasks
    "accept_content": Setting(["json"], _content),
    "task_serializer": Setting("json", _serializer),
    "task_default_queue": Setting("celery", _str),
    "task_default_priority": Setting(None, _int(0)),
    "task_inherit_parent_priority": Setting(False, _bool),
    "task_routes": Setting(None, _routes),
    "task_queues": Setting(None, _queues),
    "task_default_queue_type": Setting("classic", _choice("classic", "quorum")),
    "task_queue_max_priority": Setting(None, _int(1)),
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
    "task_protocol": Setting(2, _protocol),
    "task_annotations": Setting(None, _annotations),
    "task_publish_retry": Setting(True, _bool),
    "task_publish_retry_policy": Setting(None, _retry_policy),
    # worker
    "worker_concurrency": Setting(None, _int(1)),
    "worker_pool": Setting("prefork", _pool),
    "worker_prefetch_multiplier": Setting(4, _int(1)),
    "worker_prefetch_window": Setting(0.02, _seconds),
    "worker_max_tasks_per_child": Setting(None, _int(1)),
    "worker_max_memory_per_child": Setting(None, _int(1)),
    "worker_revoke_expires": Setting(10800.0, _seconds),
    "worker_disable_rate_limits": Setting(False, _bool),
    "worker_enable_remote_control": Setting(True, _bool),
    "worker_send_task_events": Setting(False, _bool),
    "worker_metrics_port": Setting(None, _int(1)),
    "task_send_sent_event": Setting(False, _bool),
    "worker_hijack_root_logger": Setting(True, _bool),
    "worker_log_format": Setting(None, _str),
    "worker_task_log_format": Setting(None, _str),
    "worker_log_datefmt": Setting(None, _str),
    "worker_task_log_datefmt": Setting(None, _str),
    # beat
    "beat_schedule": Setting({}, _beat_schedule),
    "beat_max_loop_interval": Setting(0, _seconds),
    "beat_cron_starting_deadline": Setting(None, _seconds),
    # misc
    "timezone": Setting(None, _timezone),
    "enable_utc": Setting(True, _bool),
    "imports": Setting([], _list),
    "include": Setting([], _list),
}

#: Every known name: celeriac's settings and the Celery settings it accepts with a note.
KNOWN: frozenset[str] = frozenset(SETTINGS) | frozenset(NOTES)
#: the names in the order ``app.conf`` lists them
ORDER: tuple[str, ...] = (*SETTINGS, *(name for name in NOTES if name not in SETTINGS))

#: Celery's old uppercase names (``BROKER_URL``, ``CELERYD_CONCURRENCY``), and a few
#: celeriac took before it derived them, mapped to the new names.
LEGACY_ALIASES: dict[str, str] = {
    **{old: name for name in sorted(KNOWN) if (old := old_name(name)) is not None},
    "CELERY_ENABLE_UTC": "enable_utc",
}

#: The environment variables that set the broker and backend URLs over every other
#: source, as Celery's ``CELERY_BROKER_URL`` (the ``CELERIAC_`` form first).
ENV_URLS = {
    "broker_url": ("CELERIAC_BROKER_URL", "CELERY_BROKER_URL"),
    "result_backend": ("CELERIAC_RESULT_BACKEND", "CELERY_RESULT_BACKEND"),
    "broker_read_url": ("CELERIAC_BROKER_READ_URL", "CELERY_BROKER_READ_URL"),
    "broker_write_url": ("CELERIAC_BROKER_WRITE_URL", "CELERY_BROKER_WRITE_URL"),
}

logger = logging.getLogger("celeriac.settings")
#: the settings whose note this process has logged (once each)
_noted: set[str] = set()


def _nearest(key: str, n: int = 3) -> list[str]:
    """Real names near ``key``, one per setting, in the key's style (capitals for a key
    in capitals: the new name's, or Celery's old name when that is nearer)."""
    upper = key.isupper()
    forms = {name: (name.upper() if upper else name, name) for name in KNOWN}
    if upper:
        forms.update({old.lower(): (old, name) for old, name in LEGACY_ALIASES.items()})
    found: list[str] = []
    seen: set[str] = set()
    for match in difflib.get_close_matches(key.lower(), forms, n=3 * n, cutoff=0.6):
        shown, name = forms[match]
        if name not in seen:
            seen.add(name)
            found.append(shown)
    return found[:n]


def canonical_name(key: str) -> str:
    """Map a given key to its setting name, or raise naming the nearest valid ones."""
    if key in KNOWN:
        return key
    if key in LEGACY_ALIASES:
        return LEGACY_ALIASES[key]
    lowered = key.lower()
    if lowered in KNOWN:
        return lowered
    if lowered.startswith("celery_") and lowered[7:] in KNOWN:
        raise ImproperlyConfigured(
            f"unknown setting {key!r}: {lowered[7:]} with the CELERY namespace, as "
            "config_from_object(obj, namespace='CELERY') reads it"
        )
    near = _nearest(key)
    hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
    raise ImproperlyConfigured(f"unknown setting {key!r}{hint}")


def _known(key: str) -> bool:
    return key in KNOWN or key in LEGACY_ALIASES or key.lower() in KNOWN


def _quiet(note: Note, value: Any) -> bool:
    """True when ``value`` changes nothing (it means what celeriac does anyway)."""
    if isinstance(value, str) and value.lower() in _BOOL_WORDS:
        value = _BOOL_WORDS[value.lower()]
    for q in note.quiet:
        if isinstance(value, bool) or isinstance(q, bool):
            if value is q:
                return True
            continue
        try:
            if value == q or (
                isinstance(value, str) and isinstance(q, (int, float)) and _number(value) == q
            ):
                return True
        except Exception:
            continue
    return False


def _like(default: Any, value: Any) -> Any:
    """A string (an environment variable's) as the type of the setting's default."""
    if not isinstance(value, str) or default is None or isinstance(default, str):
        return value
    if isinstance(default, bool):
        return _BOOL_WORDS.get(value.lower(), value)
    if isinstance(default, (int, float)):
        number = _number(value)
        if number is not None:
            return int(number) if isinstance(default, int) and number.is_integer() else number
    return value


def _number(text: str) -> float | None:
    """``text`` as a number (an environment variable's value), or None."""
    try:
        return float(text)
    except ValueError:
        return None


_BOOL_WORDS = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off"), False),
}


def note_setting(name: str, value: Any) -> None:
    """Log, once per process, that setting ``name`` is accepted and what celeriac does
    instead (nothing for a value that changes nothing)."""
    entry = NOTES.get(name)
    if entry is None or name in _noted or _quiet(entry[1], value):
        return
    _noted.add(name)
    note = entry[1]
    if note.kind == "not-yet":
        logger.warning("Setting %s=%r: %s %s", name, value, name, note.text)
    else:
        logger.warning("Setting %s=%r has no effect in celeriac: %s", name, value, note.text)


class Settings(MutableMapping[str, Any]):
    """``app.conf``: a validated mapping of Celery's setting names."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        #: settings an environment variable gives over every other source (ENV_URLS)
        self._pinned: dict[str, str] = {}
        #: what to call after one of these settings is assigned (see :meth:`watch`)
        self._watchers: list[tuple[frozenset[str], Callable[[], None]]] = []
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
            spec = SETTINGS.get(name)
            default = NOTES[name][0] if spec is None else spec.default
        else:
            default = spec.default
        return default.copy() if isinstance(default, (dict, list)) else default

    def __setitem__(self, key: str, value: Any) -> None:
        name = canonical_name(key)
        if name in self._pinned:
            variable = self._pinned[name]
            if "pinned:" + name not in _noted:
                _noted.add("pinned:" + name)
                logger.warning(
                    "Setting %s=%r is overridden by the environment variable %s (as in Celery)",
                    name,
                    value,
                    variable,
                )
            return
        self._set(name, value)

    def _set(self, name: str, value: Any) -> None:
        spec = SETTINGS.get(name)
        if spec is None:
            value = _like(NOTES[name][0], value)
            note_setting(name, value)
            self._values[name] = value
        else:
            self._values[name] = spec.check(name, value)
        self.version += 1
        for names, call in self._watchers:
            if name in names:
                call()

    def watch(self, names: Iterable[str], call: Callable[[], None]) -> None:
        """Call ``call()`` after any of the settings ``names`` is assigned."""
        self._watchers.append((frozenset(names), call))

    def override(self, key: str, value: Any) -> None:
        """Set ``key`` over an environment variable that gives it (the CLI's ``-b``)."""
        name = canonical_name(key)
        self._pinned.pop(name, None)
        self._set(name, value)

    def __delitem__(self, key: str) -> None:
        name = canonical_name(key)
        del self._values[name]
        self.version += 1
        for names, call in self._watchers:
            if name in names:
                call()

    def __iter__(self) -> Iterator[str]:
        return iter(ORDER)

    def __len__(self) -> int:
        return len(ORDER)

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
        """``CELERIAC_<NAME>`` variables (lowest precedence), and the URL variables of
        :data:`ENV_URLS` (``CELERY_BROKER_URL``...), which win over every other source."""
        env = os.environ if environ is None else environ
        url_variables = {v for pair in ENV_URLS.values() for v in pair}
        for key, raw in env.items():
            if not key.startswith(ENV_PREFIX) or key in url_variables:
                continue
            suffix = key[len(ENV_PREFIX) :].lower()
            if suffix in KNOWN:
                self[suffix] = raw
                continue
            near = difflib.get_close_matches(suffix, KNOWN, n=3, cutoff=0.8)
            if near:
                names = " or ".join(ENV_PREFIX + n.upper() for n in near)
                raise ImproperlyConfigured(
                    f"environment variable {key} names no setting; did you mean {names}?"
                )
            if key not in _noted:
                _noted.add(key)
                logger.warning("Environment variable %s names no celeriac setting: ignored", key)
        for name, variables in ENV_URLS.items():
            for variable in variables:
                if env.get(variable):
                    self._pinned.pop(name, None)
                    self._set(name, env[variable])
                    self._pinned[name] = variable
                    break

    def update_from_object(self, obj: Any, namespace: str | None = None) -> None:
        items: Mapping[str, Any]
        if isinstance(obj, Mapping):
            items = obj
        else:
            items = {k: getattr(obj, k) for k in dir(obj) if not k.startswith("_")}
        prefix = f"{namespace}_" if namespace else ""
        old: list[tuple[str, Any]] = []  # with a namespace, as Celery: old names too
        new: list[tuple[str, Any]] = []
        for key, value in items.items():
            if isinstance(value, (types.ModuleType, types.FunctionType, type)) or inspect.isbuiltin(
                value
            ):
                continue  # imports and helpers in a config module are not settings
            if not prefix:
                new.append((key, value))
            elif key.startswith(prefix) and _known(key[len(prefix) :]):
                new.append((key[len(prefix) :], value))
            elif key in LEGACY_ALIASES:  # CELERY_TASK_RESULT_EXPIRES, CELERYD_CONCURRENCY
                old.append((key, value))
            elif key.startswith(prefix):
                new.append((key[len(prefix) :], value))  # unknown: the error names it
        for key, value in [*old, *new]:  # a new name wins over an old one, as in Celery
            self[key] = value

    def as_dict(self) -> dict[str, Any]:
        return {name: self[name] for name in ORDER}

    def __repr__(self) -> str:
        return f"<Settings {self._values!r}>"
