"""Node names and the ``%`` expansions of ``-n``, ``--logfile`` and ``--pidfile``.

In a worker, a node name ``foo@bar.example.com`` expands ``%p`` to the whole name,
``%n`` to ``foo``, ``%h`` to ``bar.example.com`` and ``%d`` to ``example.com``; in a log
file name ``%i`` is the pool process index (0 in the main process) and ``%I`` is ``-N``
in pool process N (empty in the main process). ``celeriac multi`` expands ``%n`` and
``%N`` to the short name, ``%h`` and ``%p`` to the node name and ``%d`` to its host, and
leaves ``%i``/``%I`` to the worker (as Celery measured).
"""

from __future__ import annotations

import re
import socket

_PERCENT = re.compile(r"%(\w)")


def expand(text: str, keys: dict[str, str]) -> str:
    """Replace ``%x`` by ``keys[x]``; an unknown ``%x`` stays as it is."""
    return _PERCENT.sub(lambda m: keys.get(m.group(1), m.group(0)), text)


def split_node(nodename: str) -> tuple[str, str]:
    short, at, host = nodename.partition("@")
    return (short, host) if at else ("celeriac", nodename)


def node_keys(nodename: str, index: int | None = None) -> dict[str, str]:
    """The keys of a worker's expansion; ``index`` is the pool process (None: main)."""
    short, host = split_node(nodename)
    keys = {"p": nodename, "n": short, "h": host, "d": host.partition(".")[2]}
    if index is not None:
        keys["i"] = str(index)
        keys["I"] = f"-{index}" if index else ""
    return keys


def node_format(text: str | None, nodename: str, index: int | None = None) -> str | None:
    return None if text is None else expand(text, node_keys(nodename, index))


def multi_keys(nodename: str) -> dict[str, str]:
    short, host = split_node(nodename)
    return {"p": nodename, "n": short, "N": short, "h": nodename, "d": host}


def local_host() -> str:
    return socket.gethostname()


__all__ = ["expand", "local_host", "multi_keys", "node_format", "node_keys", "split_node"]
