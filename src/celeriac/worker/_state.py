"""What the consumers of one prefork worker tell each other: files in a directory the
supervisor makes (and removes), so that the one child that answers remote control and
sends the worker's heartbeats speaks for all of them.

* ``child-<pid>.json``: each child's snapshot (its pid, tasks processed by name, the
  requests it runs and holds), written at most every :data:`WRITE_EVERY` seconds while
  it changes;
* ``settings.json``: the changes remote control made (queues consumed, rate and time
  limits, task events on or off), with a version; every child applies a new version
  within :data:`READ_EVERY` seconds, and a child started later applies it at start.
* ``pool.json``: the supervisor's children (pids) and its pool size;
* the supervisor's pipe takes ``G<n>`` / ``S<n>`` (grow or shrink the pool by ``n``) and
  ``A<max>,<min>`` (autoscale range) from the answering child.

A worker with one consumer (threads, asyncio, solo) has no directory: its consumer is
the whole worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

#: a child rewrites its snapshot at most this often (seconds)
WRITE_EVERY = 0.1
#: a child looks for new settings this often (seconds)
READ_EVERY = 0.25


def _write(path: str, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, default=repr)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class SharedState:
    """One child's view of the worker's state directory."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.pid = os.getpid()
        self.settings_version = 0

    def write_snapshot(self, snapshot: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            _write(os.path.join(self.directory, f"child-{self.pid}.json"), snapshot)

    def snapshots(self) -> list[dict[str, Any]]:
        """Every child's latest snapshot (this one's as last written)."""
        found = []
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(self.directory)):
                if name.startswith("child-") and name.endswith(".json"):
                    data = _read(os.path.join(self.directory, name))
                    if data is not None:
                        found.append(data)
        return found

    def settings(self) -> dict[str, Any]:
        return _read(os.path.join(self.directory, "settings.json")) or {}

    def new_settings(self) -> dict[str, Any] | None:
        """The settings, when their version changed since this child last looked."""
        data = self.settings()
        version = int(data.get("version") or 0)
        if version == self.settings_version:
            return None
        self.settings_version = version
        return data

    def update_settings(self, **changes: Any) -> None:
        data = self.settings()
        for key, value in changes.items():
            old = data.get(key)
            data[key] = (
                {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
            )
        data["version"] = int(data.get("version") or 0) + 1
        _write(os.path.join(self.directory, "settings.json"), data)


def write_pool(directory: str, processes: list[int], concurrency: int) -> None:
    """The supervisor's record of its children (``stats``' ``pool``)."""
    with contextlib.suppress(OSError):
        _write(os.path.join(directory, "pool.json"), {"processes": processes, "max": concurrency})


def read_pool(directory: str) -> dict[str, Any]:
    return _read(os.path.join(directory, "pool.json")) or {}


def forget_child(directory: str, pid: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(directory, f"child-{pid}.json"))


__all__ = ["READ_EVERY", "WRITE_EVERY", "SharedState", "forget_child", "read_pool", "write_pool"]
