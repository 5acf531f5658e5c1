"""Wake a waiting SQLite reader when another process writes the database (Linux: inotify,
through ctypes; nothing to install), so an idle worker neither polls nor waits for a
commit made elsewhere.

Every commit writes the database's ``-wal`` file (or the file itself, in rollback-journal
mode), and inotify reports that write to whoever watches the directory. The watch is on
the directory, not on the files: the WAL is deleted and made again as connections come
and go. A write is not yet a visible commit (SQLite publishes it in the shared-memory
index right after, which inotify does not see), so the waiter checks ``PRAGMA
data_version`` at once and again a few times over the next ~50 ms
(:class:`~celeriac.transports.sqlite.db.ChangeWatcher`); with no write, it checks once a
second only. Elsewhere (no inotify, a directory it cannot watch) the waiter polls as
before.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

_IN_MODIFY = 0x002
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_Q_OVERFLOW = 0x4000  # events were dropped: count it as a write
_MASK = _IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.inotify_init1  # noqa: B018 - present?
    except (OSError, AttributeError):
        return None
    return libc


class FileWatch:
    """One process's inotify watch on a database's directory; calls ``on_write`` when one
    of the database's files is written. :meth:`start` returns None where it cannot."""

    def __init__(self, fd: int, names: set[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._fd = fd
        self._names = names
        self._loop = loop
        self._callbacks: list[Callable[[], None]] = []
        loop.add_reader(fd, self._readable)

    @classmethod
    def start(cls, db_path: str, loop: asyncio.AbstractEventLoop) -> FileWatch | None:
        libc = _libc()
        if libc is None:
            return None
        path = Path(db_path).resolve()
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        if libc.inotify_add_watch(fd, os.fsencode(path.parent), _MASK) < 0:
            os.close(fd)
            return None
        name = os.fsencode(path.name)
        return cls(fd, {name, name + b"-wal", name + b"-journal"}, loop)

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    def _readable(self) -> None:
        hit = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                self.close()
                return
            pos = 0
            while pos + _EVENT.size <= len(data):
                _wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
                name = data[pos + _EVENT.size : pos + _EVENT.size + length].rstrip(b"\0")
                pos += _EVENT.size + length
                hit = hit or name in self._names or bool(mask & _IN_Q_OVERFLOW)
        if hit:
            for callback in list(self._callbacks):
                callback()

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


__all__ = ["FileWatch"]
