"""Logging: ``get_task_logger`` and the worker's Celery-style log format."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from typing import Any

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"
)

_URL_PASSWORD = re.compile(r"(?P<head>[a-z0-9+.-]+://[^:/@]*:)(?P<password>[^@/]+)(?=@)", re.I)


def mask_url(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:**@host``."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + "**", url)


class _TaskFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from celeriac.task import _current_request  # noqa: PLC0415

        request = _current_request.get()
        record.task_id = request.id or "???"
        record.task_name = request.message_headers.get("task", "???")
        return True


def get_task_logger(name: str) -> logging.Logger:
    """A logger whose records carry ``task_id`` and ``task_name`` of the running task."""
    logger = logging.getLogger(f"celeriac.task.{name}")
    if not any(isinstance(f, _TaskFilter) for f in logger.filters):
        logger.addFilter(_TaskFilter())
    return logger


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


class WorkerFormatter(logging.Formatter):
    """The worker's log format (``worker_log_format``, ``worker_log_datefmt``), and for
    the records of task loggers (:func:`get_task_logger`) the task format
    (``worker_task_log_format``, ``worker_task_log_datefmt``), as Celery's worker."""

    def __init__(self, conf: Any = None) -> None:
        def setting(name: str) -> Any:
            return conf[name] if conf is not None else None

        super().__init__(setting("worker_log_format") or LOG_FORMAT, setting("worker_log_datefmt"))
        self.task = logging.Formatter(
            setting("worker_task_log_format") or TASK_LOG_FORMAT, setting("worker_task_log_datefmt")
        )

    def format(self, record: logging.LogRecord) -> str:
        if record.name.startswith("celeriac.task.") and hasattr(record, "task_id"):
            return self.task.format(record)
        return super().format(record)


def _level(level: str | int) -> int:
    if isinstance(level, str):
        name = level.upper()
        if name not in {"DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL", "FATAL"}:
            from celeriac.exceptions import ImproperlyConfigured  # noqa: PLC0415

            raise ImproperlyConfigured(
                f"unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )
        return logging.getLevelName(name)  # type: ignore[no-any-return]
    return level


def setup_worker_logging(
    level: str | int,
    conf: Any = None,
    logfile: str | None = None,
    to_file: Callable[[], None] | None = None,
) -> bool:
    """The worker's logging, with Celery's signals: ``setup_logging`` first -- when a
    receiver is connected, it configures logging and celeriac does nothing (False is
    returned) --, else the root logger is set up (:func:`setup_logging`), then
    ``after_setup_logger`` and ``after_setup_task_logger`` (the parent of the
    :func:`get_task_logger` loggers) are sent; ``to_file`` moves the output to
    ``logfile`` in between."""
    from celeriac import signals  # noqa: PLC0415

    number = _level(level)
    log_format = (conf["worker_log_format"] if conf is not None else None) or LOG_FORMAT
    task_format = (conf["worker_task_log_format"] if conf is not None else None) or TASK_LOG_FORMAT
    named: dict[str, Any] = {"loglevel": number, "logfile": logfile, "colorize": False}
    if signals.send_raising(signals.setup_logging, format=log_format, **named):
        return False
    setup_logging(number, conf)
    if to_file is not None:
        to_file()
    signals.after_setup_logger.send(logger=logging.getLogger(), format=log_format, **named)
    task_logger = logging.getLogger("celeriac.task")
    signals.after_setup_task_logger.send(logger=task_logger, format=task_format, **named)
    return True


def setup_logging(level: str | int, conf: Any = None) -> None:
    """Configure the root logger the way a Celery worker does."""
    level = _level(level)
    root = logging.getLogger()
    if conf is not None and not conf["worker_hijack_root_logger"] and root.handlers:
        return
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(WorkerFormatter(conf))
    root.addHandler(handler)
    root.setLevel(level)


__all__ = [
    "WorkerFormatter",
    "get_logger",
    "get_task_logger",
    "mask_url",
    "setup_logging",
    "setup_worker_logging",
]
