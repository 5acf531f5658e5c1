"""``celeriac multi start|stop|stopwait|restart|kill|show|names``: several detached
workers on this host, with Celery's node names and option syntax.

``multi start 3 -c 2`` starts ``celery1@host`` .. ``celery3@host``; ``multi start a b@%h``
names them. An option given as ``-c:2 4``, ``-Q:1-2 hi`` or ``-Q:a lo`` is for those
nodes only (by position, range, list or name). Long options take ``--opt=value``; a short
one takes the next word. ``--pidfile`` (default ``/var/run/celery/%n.pid``) and
``--logfile`` (default ``/var/log/celery/%n%I.log``) expand ``%n``, ``%h``, ``%d``, ``%p``
per node; ``stop``/``stopwait`` find the workers by their pidfiles, so give them the same
``--pidfile`` as ``start``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import click

from celeriac import __version__
from celeriac._cli.daemon import pid_alive, read_pid
from celeriac._cli.nodes import expand, local_host, multi_keys

DEFAULT_PIDFILE = "/var/run/celery/%n.pid"
DEFAULT_LOGFILE = "/var/log/celery/%n%I.log"
#: options that go before ``worker`` (the global ones)
GLOBAL = {
    "-A",
    "--app",
    "-b",
    "--broker",
    "--result-backend",
    "--loader",
    "--config",
    "--workdir",
    "-q",
    "--quiet",
    "-C",
    "--no-color",
}
#: options of ``multi`` itself, not passed to the workers
OWN = {"--range-prefix", "--hostname", "--executable", "--nosplash", "--verbose"}
FLAGS_WITHOUT_VALUE = {"-q", "-C", "-D", "-E", "-B"}


@dataclass
class Option:
    name: str
    value: str | None
    scope: str | None = None  # None: every node; else "2", "1-3", "1,2" or a name
    long: bool = False


@dataclass
class Node:
    name: str
    index: int
    options: list[Option] = field(default_factory=list)

    def get(self, *names: str) -> str | None:
        found = None
        for option in self.options:
            if option.name in names:
                found = option.value
        return found


def parse(args: list[str]) -> tuple[list[str], list[Option], list[str]]:
    """(node names, options, words after ``--``) from ``multi``'s arguments."""
    names: list[str] = []
    options: list[Option] = []
    extra: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            extra = args[i + 1 :]
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            name, _, scope = name.partition(":")
            options.append(Option(name, value if eq else None, scope or None, long=True))
        elif arg.startswith("-") and len(arg) > 1:
            name, _, scope = arg.partition(":")
            value = None
            if len(name) > 2:  # -c3
                name, value = name[:2], name[2:]
            elif (
                name not in FLAGS_WITHOUT_VALUE
                and i + 1 < len(args)
                and not args[i + 1].startswith("-")
            ):
                i += 1
                value = args[i]
            options.append(Option(name, value, scope or None))
        else:
            names.append(arg)
        i += 1
    return names, options, extra


def _in_scope(scope: str | None, node: Node) -> bool:
    if scope is None:
        return True
    for part in scope.split(","):
        low, dash, high = part.partition("-")
        if dash and low.isdigit() and high.isdigit():
            if int(low) <= node.index <= int(high):
                return True
        elif part.isdigit():
            if int(part) == node.index:
                return True
        elif part in (node.name, node.name.partition("@")[0]):
            return True
    return False


def nodes_from(args: list[str]) -> tuple[list[Node], list[Option], list[str]]:
    names, options, extra = parse(args)
    own = {o.name: o.value for o in options if o.name in OWN}
    host = own.get("--hostname") or local_host()
    prefix = own.get("--range-prefix") or "celery"
    if len(names) == 1 and names[0].isdigit():
        names = [f"{prefix}{i}" for i in range(1, int(names[0]) + 1)]
    if not names:
        raise click.UsageError("name the nodes: a number (multi start 3) or names (w1 w2)")
    nodes = []
    for index, name in enumerate(names, 1):
        full = expand(name, {"h": host}) if "@" in name else f"{name}@{host}"
        node = Node(full, index)
        node.options = [o for o in options if o.name not in OWN and _in_scope(o.scope, node)]
        if node.get("-n") is not None:
            # as Celery's multi: the node's name is the one multi gives it
            click.echo(
                f"warning: -n is ignored for {full}: name the nodes instead "
                "(multi start foo@%h bar@%h)",
                err=True,
            )
        nodes.append(node)
    return nodes, [o for o in options if o.name in OWN], extra


def _pidfile(node: Node) -> str:
    return os.path.abspath(expand(node.get("--pidfile") or DEFAULT_PIDFILE, multi_keys(node.name)))


def _logfile(node: Node) -> str:
    path = node.get("--logfile", "-f") or DEFAULT_LOGFILE
    return os.path.abspath(expand(path, multi_keys(node.name)))


def _word(option: Option, keys: dict[str, str]) -> list[str]:
    if option.value is None:
        return [option.name]
    value = expand(option.value, keys)
    return [f"{option.name}={value}"] if option.long else [option.name, value]


def argv(node: Node, own: list[Option], extra: list[str]) -> list[str]:
    keys = multi_keys(node.name)
    skip = {"-n", "--hostname", "--pidfile", "--logfile", "-f", "--detach", "-D"}
    executable = next((o.value for o in own if o.name == "--executable" and o.value), None)
    front = [w for o in node.options if o.name in GLOBAL for w in _word(o, keys)]
    rest = [w for o in node.options if o.name not in GLOBAL | skip for w in _word(o, keys)]
    return [
        executable or sys.executable,
        "-m",
        "celeriac",
        *front,
        "worker",
        "--detach",
        *rest,
        "-n",
        node.name,
        f"--pidfile={_pidfile(node)}",
        f"--logfile={_logfile(node)}",
        *(["--", *extra] if extra else []),
    ]


def start(nodes: list[Node], own: list[Option], extra: list[str]) -> int:
    click.echo("> Starting nodes...")
    failed = 0
    for node in nodes:
        for path in (_pidfile(node), _logfile(node)):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        proc = subprocess.run(argv(node, own, extra), capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            click.echo(f"\t> {node.name}: OK")
        else:
            failed += 1
            click.echo(f"\t> {node.name}: FAILED (exit code {proc.returncode})")
            for line in proc.stderr.strip().splitlines()[-5:]:
                click.echo(f"\t  {line}", err=True)
    return 1 if failed else 0


def signal_nodes(nodes: list[Node], sig: signal.Signals) -> dict[str, int]:
    """Signal each running node; returns the pids signalled by node name."""
    sent: dict[str, int] = {}
    for node in nodes:
        pid = read_pid(_pidfile(node))
        if pid is None or not pid_alive(pid):
            click.echo(f"> {node.name}: DOWN")
            continue
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            click.echo(f"> {node.name}: DOWN")
            continue
        click.echo(f"\t> {node.name}: {sig.name.removeprefix('SIG')} -> {pid}")
        sent[node.name] = pid
    return sent


def wait_gone(sent: dict[str, int]) -> None:
    """Wait until every signalled process has exited (as the user asked: stopwait)."""
    waiting = dict(sent)
    if waiting:
        noun = "node" if len(waiting) == 1 else "nodes"
        pids = ", ".join(str(p) for p in waiting.values())
        click.echo(f"> Waiting for {len(waiting)} {noun} -> {pids}...")
    delay = 0.01
    while waiting:
        for name, pid in list(waiting.items()):
            if not pid_alive(pid):
                del waiting[name]
                click.echo(f"\t> {name}: OK")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("command", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def multi(command: str | None, args: tuple[str, ...]) -> None:
    """Start, stop or restart several detached workers (see ``multi help``)."""
    if command in (None, "help", "--help", "-h"):
        click.echo(__doc__)
        return
    nodes, own, extra = nodes_from(list(args))
    if command == "show":
        for node in nodes:
            click.echo(" ".join(argv(node, own, extra)))
        return
    if command == "names":
        click.echo("\n".join(node.name for node in nodes))
        return
    click.echo(f"celeriac multi v{__version__}")
    if command == "start":
        sys.exit(start(nodes, own, extra))
    elif command in ("stop", "stopwait"):
        click.echo("> Stopping nodes...")
        sent = signal_nodes(nodes, signal.SIGTERM)
        if command == "stopwait":
            wait_gone(sent)
    elif command == "kill":
        signal_nodes(nodes, signal.SIGKILL)
    elif command == "restart":
        click.echo("> Stopping nodes...")
        wait_gone(signal_nodes(nodes, signal.SIGTERM))
        sys.exit(start(nodes, own, extra))
    else:
        raise click.UsageError(
            f"unknown multi command {command!r}: use start, stop, stopwait, restart, kill, "
            "show or names"
        )


__all__ = ["multi", "nodes_from", "parse"]
