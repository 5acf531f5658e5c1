"""Result metas (the dicts Celery's result backends store) and exceptions in the JSON form
Celery gives them on the wire.

See ``docs/internals/protocol.md``.
"""

from __future__ import annotations

import importlib
import sys
from datetime import datetime
from typing import Any

from celeriac import states
from celeriac.protocol.message import _iso, safe_repr
from celeriac.protocol.serialization import json_dumps, json_loads

_MODULE_TO_WIRE = {"celeriac.exceptions": "celery.exceptions"}
_MODULE_FROM_WIRE = {"celery.exceptions": "celeriac.exceptions"}


def encode_exception(exc: BaseException) -> dict[str, Any]:
    """Celery's JSON form of an exception: type name, constructor args, module."""
    cls = type(exc)
    args: list[Any] = list(exc.args)
    try:
        json_dumps(args)
    except (TypeError, ValueError):
        args = [safe_repr(a) for a in args]
    module = cls.__module__
    return {
        "exc_type": cls.__qualname__,
        "exc_message": args,
        "exc_module": _MODULE_TO_WIRE.get(module, module),
    }


def decode_exception(meta: Any) -> BaseException:
    """Rebuild an exception from Celery's dict form, as its own type when importable."""
    if isinstance(meta, BaseException):
        return meta
    if not isinstance(meta, dict) or "exc_type" not in meta:
        return Exception(meta)
    name = str(meta.get("exc_type"))
    module = str(meta.get("exc_module") or "builtins")
    module = _MODULE_FROM_WIRE.get(module, module)
    message = meta.get("exc_message", [])
    args = tuple(message) if isinstance(message, (list, tuple)) else (message,)
    cls = _find_exception_class(module, name)
    try:
        return cls(*args)
    except Exception:
        try:
            exc = cls.__new__(cls)
        except Exception:  # a type that cannot be made from its args (pydantic's errors)
            return _synthetic_exception(module, name)(*args)
        exc.args = args
        return exc


def _find_exception_class(module_name: str, qualname: str) -> type[BaseException]:
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except Exception:
            module = None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None) if obj is not None else None
    if isinstance(obj, type) and issubclass(obj, BaseException):
        return obj
    return _synthetic_exception(module_name, qualname)


_SYNTHETIC: dict[tuple[str, str], type[Exception]] = {}


def _synthetic_exception(module: str, name: str) -> type[Exception]:
    key = (module, name)
    cls = _SYNTHETIC.get(key)
    if cls is None:
        cls = type(name.rsplit(".", 1)[-1], (Exception,), {"__module__": module})
        _SYNTHETIC[key] = cls
    return cls


def result_meta(
    task_id: str,
    status: str,
    result: Any,
    *,
    traceback: str | None = None,
    children: list[Any] | None = None,
    date_done: datetime | None = None,
    extended: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The dict Celery's result backends store for a task (``task_id`` last)."""
    meta: dict[str, Any] = {
        "status": status,
        "result": result,
        "traceback": traceback,
        "children": children if children is not None else [],
        "date_done": _iso(date_done) if date_done else None,
    }
    if extended:
        meta.update(extended)
    meta["task_id"] = task_id
    return meta


def ready_meta(raw: bytes | str | None) -> dict[str, Any] | None:
    """A stored result meta (JSON) if it is a finished task's, else None: not there yet,
    still PENDING/STARTED/RETRY, or not a result meta at all (another program's key)."""
    if raw is None:
        return None
    try:
        meta = json_loads(raw)
    except ValueError:
        return None
    if isinstance(meta, dict) and meta.get("status") in states.READY_STATES:
        return meta
    return None
