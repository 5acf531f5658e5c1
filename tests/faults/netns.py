"""Hosts on a private network, made of Linux network namespaces: each host a namespace
with one veth link to a bridge in a hub namespace (``10.<a>.<b>.<i>/24``). Made and torn
down by :class:`Network` (root only); nothing touches the machine's own interfaces.
:meth:`Network.cut` takes a host's link down at the bridge: its packets are dropped, no
FIN, no RST, as when a cable or a switch port goes."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from types import TracebackType


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def why_not() -> str | None:
    """Why namespaces cannot be made here (``None``: they can)."""
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    if os.geteuid() != 0:
        return "needs root to make network namespaces"
    probe = f"cfprobe{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot make a network namespace ({exc})"
    try:
        ip("-n", probe, "link", "add", "br0", "type", "bridge")
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot make a bridge in a network namespace ({exc})"
    finally:
        ip("netns", "del", probe)
    return None


class Network:
    """``hosts`` namespaces on one bridge; ``address(host)`` and ``exec(host)`` name them."""

    def __init__(self, *hosts: str) -> None:
        self.tag = f"{random.randrange(16**4):04x}"
        self.subnet = f"10.{random.randrange(100, 250)}.{random.randrange(256)}"
        self.hosts = list(hosts)
        self.hub = f"cf{self.tag}hub"
        self.made: list[str] = []

    def namespace(self, host: str) -> str:
        return f"cf{self.tag}{host}"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{self.hosts.index(host) + 1}"

    def exec(self, host: str) -> list[str]:
        """The command prefix that runs a program on ``host``."""
        return ["ip", "netns", "exec", self.namespace(host)]

    def _port(self, host: str) -> str:
        return f"v{self.tag}{self.hosts.index(host)}p"

    def __enter__(self) -> Network:
        try:
            ip("netns", "add", self.hub)
            self.made.append(self.hub)
            ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            ip("-n", self.hub, "link", "set", "br0", "up")
            for index, host in enumerate(self.hosts):
                ns = self.namespace(host)
                ip("netns", "add", ns)
                self.made.append(ns)
                inner, outer = f"v{self.tag}{index}", self._port(host)
                ip("link", "add", inner, "type", "veth", "peer", "name", outer)
                ip("link", "set", outer, "netns", self.hub)
                ip("link", "set", inner, "netns", ns)
                ip("-n", self.hub, "link", "set", outer, "master", "br0")
                ip("-n", self.hub, "link", "set", outer, "up")
                ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", inner)
                ip("-n", ns, "link", "set", inner, "up")
                ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def cut(self, host: str) -> None:
        ip("-n", self.hub, "link", "set", self._port(host), "down")

    def mend(self, host: str) -> None:
        ip("-n", self.hub, "link", "set", self._port(host), "up")

    def close(self) -> None:
        """Delete the namespaces (their veth links go with them)."""
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=20)
        self.made.clear()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
