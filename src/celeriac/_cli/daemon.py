"""Running as a daemon: ``--detach``, ``--pidfile``, ``--logfile``, ``--uid``/``--gid``.

``--detach`` forks twice with a new session in between (the daemon is no session leader
and has no terminal), changes to the working directory, applies ``--umask``, sends its
standard streams to the log file (or ``/dev/null``), and the daemon itself writes the
pidfile. A pidfile naming a live process is refused; a stale one is replaced.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import pwd
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

import click


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    return True


def read_pid(path: str) -> int | None:
    """The pid in ``path``, or None if there is no (readable, well-formed) pidfile."""
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except FileNotFoundError:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def check_pidfile(path: str) -> None:
    """Refuse to start when ``path`` names a running process; remove a stale one."""
    pid = read_pid(path)
    if pid is not None and pid != os.getpid() and pid_alive(pid):
        raise click.ClickException(
            f"pidfile {path} already exists: the worker seems to be running (pid {pid})"
        )
    if os.path.exists(path):
        os.unlink(path)  # stale: its process is gone, or it is not a pidfile


@contextlib.contextmanager
def pidfile_lock(path: str | None) -> Iterator[None]:
    """Write this process's pid to ``path`` for the duration; remove it afterwards."""
    if not path:
        yield
        return
    check_pidfile(path)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise click.ClickException(f"pidfile {path} was created by another process") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{os.getpid()}\n")
    mine = os.getpid()
    try:
        yield
    finally:
        if os.getpid() == mine and read_pid(path) == mine:
            with contextlib.suppress(OSError):
                os.unlink(path)


def touch_logfile(path: str) -> None:
    """Fail now, on the terminal, if the log file cannot be written."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "a"):
        pass


def detach(logfile: str | None, workdir: str, umask: int | None) -> Callable[[str], None]:
    """Become a daemon: this returns in the daemon only, with ``started``: the daemon
    calls it once its pidfile is written (or with the error that stops it), and the
    command that started it exits then (0, or 1 with the error)."""
    if logfile:
        touch_logfile(logfile)
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        _exit_when_started(read_end, logfile)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir(workdir)
    if umask is not None:
        os.umask(umask)
    null = os.open(os.devnull, os.O_RDWR)
    out = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if logfile else null
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    for fd in {null, out}:
        if fd > 2:
            os.close(fd)

    def started(error: str = "") -> None:
        with contextlib.suppress(OSError):
            os.write(write_end, (error or "ok").encode()[:4000])
            os.close(write_end)

    return started


def _exit_when_started(read_end: int, logfile: str | None) -> NoReturn:
    chunks = []
    while chunk := os.read(read_end, 4096):
        chunks.append(chunk)
    message = b"".join(chunks).decode(errors="replace")
    if message == "ok":
        os._exit(0)
    where = f" (see {logfile})" if logfile else ""
    sys.stderr.write(f"Error: {message or 'the daemon exited while starting' + where}\n")
    sys.stderr.flush()
    os._exit(1)


def parse_umask(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    try:
        return int(text, 8)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an octal umask", param_hint="--umask") from None


def drop_privileges(uid: str | None, gid: str | None) -> None:
    """Become ``uid``/``gid`` (names or numbers), as ``--uid``/``--gid`` ask."""
    if not uid and not gid:
        return
    user = _user(uid) if uid else None
    group_id = _group(gid) if gid else (user.pw_gid if user else None)
    try:
        if group_id is not None and group_id != os.getgid():
            if user is not None:
                os.initgroups(user.pw_name, group_id)
            else:
                os.setgroups([group_id])
            os.setgid(group_id)
        if user is not None and user.pw_uid != os.getuid():
            os.setuid(user.pw_uid)
    except PermissionError as exc:
        if exc.errno == errno.EPERM:
            raise click.ClickException(
                f"cannot change to uid {uid} / gid {gid}: not permitted ({exc.strerror})"
            ) from None
        raise


def _user(uid: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(uid)) if uid.isdigit() else pwd.getpwnam(uid)
    except KeyError:
        raise click.BadParameter(f"no such user {uid!r}", param_hint="--uid") from None


def _group(gid: str) -> int:
    try:
        return int(gid) if gid.isdigit() else grp.getgrnam(gid).gr_gid
    except KeyError:
        raise click.BadParameter(f"no such group {gid!r}", param_hint="--gid") from None


def log_to_file(path: str) -> None:
    """Send the root logger's output to ``path`` instead of the terminal."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    root = logging.getLogger()
    formatter = next((h.formatter for h in root.handlers if h.formatter), None)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(path, encoding="utf-8")
    if formatter is not None:
        handler.setFormatter(formatter)
    root.addHandler(handler)


__all__ = [
    "check_pidfile",
    "detach",
    "drop_privileges",
    "log_to_file",
    "parse_umask",
    "pid_alive",
    "pidfile_lock",
    "read_pid",
]
