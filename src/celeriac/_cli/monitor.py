"""``celeriac inspect``, ``control``, ``status`` and ``events``: Celery's monitoring
commands, against celeriac's workers and Celery's alike.

Exit codes are for scripts: 0 when every asked worker answered without an error;
1 when an answer is an error (``{"error": ...}``); 69 (``EX_UNAVAILABLE``, as Celery's
"no nodes replied") when no worker, or not every ``-d`` destination, answered.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from celeriac._cli.common import AppOptions, app_options
from celeriac.utils.log import mask_url

EX_UNAVAILABLE = 69

#: command -> ([(argument, type)], variadic argument name or None)
ArgSpec = tuple[list[tuple[str, Callable[[str], Any]]], str | None]


def _bool(text: str) -> bool:
    return text.lower() in ("1", "true", "yes", "on")


INSPECT: dict[str, ArgSpec] = {
    "active": ([], None),
    "active_queues": ([], None),
    "clock": ([], None),
    "conf": ([("with_defaults", _bool)], None),
    "memdump": ([], None),
    "memsample": ([], None),
    "ping": ([], None),
    "query_task": ([], "ids"),
    "registered": ([], "taskinfoitems"),
    "report": ([], None),
    "reserved": ([], None),
    "revoked": ([], None),
    "scheduled": ([], None),
    "stats": ([], None),
}
CONTROL: dict[str, ArgSpec] = {
    "add_consumer": (
        [("queue", str), ("exchange", str), ("exchange_type", str), ("routing_key", str)],
        None,
    ),
    "autoscale": ([("max", int), ("min", int)], None),
    "cancel_consumer": ([("queue", str)], None),
    "disable_events": ([], None),
    "election": ([("id", str), ("topic", str), ("action", str)], None),
    "enable_events": ([], None),
    "heartbeat": ([], None),
    "pool_grow": ([("n", int)], None),
    "pool_restart": ([], None),
    "pool_shrink": ([("n", int)], None),
    "rate_limit": ([("task_name", str), ("rate_limit", str)], None),
    "revoke": ([], "task_id"),
    "shutdown": ([], None),
    "terminate": ([("signal", str)], "task_id"),
    "time_limit": ([("task_name", str), ("soft", float), ("hard", float)], None),
}


def compile_arguments(spec: ArgSpec, values: tuple[str, ...]) -> dict[str, Any]:
    names, variadic = spec
    arguments: dict[str, Any] = {}
    rest = list(values)
    for name, kind in names:
        if not rest:
            break
        text = rest.pop(0)
        try:
            arguments[name] = kind(text)
        except ValueError:
            raise click.BadParameter(f"{name}: {text!r} is not a {kind.__name__}") from None
    if variadic is not None:
        arguments[variadic] = rest
    elif rest:
        raise click.UsageError(f"too many arguments: {' '.join(rest)}")
    return arguments


def _destination(value: str | None) -> list[str] | None:
    return [d.strip() for d in value.split(",") if d.strip()] if value else None


def _ask(
    obj: AppOptions,
    command: str,
    arguments: dict[str, Any],
    destination: list[str] | None,
    timeout: float,
    as_json: bool,
) -> int:
    replies = (
        obj.app.control.broadcast(
            command, arguments, destination=destination, reply=True, timeout=timeout
        )
        or []
    )
    merged: dict[str, Any] = {}
    for reply in replies:
        merged.update(reply)
    if as_json:
        click.echo(json.dumps(merged, default=repr))
    else:
        for node, answer in merged.items():
            failed = isinstance(answer, dict) and "error" in answer
            click.echo(f"->  {node}: {'ERROR' if failed else 'OK'}")
            if answer is not None:
                text = (
                    answer.get("ok", answer)
                    if isinstance(answer, dict) and len(answer) == 1
                    else answer
                )
                body = text if isinstance(text, str) else json.dumps(text, indent=4, default=repr)
                click.echo("\n".join("        " + line for line in str(body).splitlines()))
    if not merged or (destination and set(destination) - set(merged)):
        missing = sorted(set(destination or ()) - set(merged))
        what = f"no answer from {', '.join(missing)}" if missing else "No nodes replied"
        click.echo(f"Error: {what} within {timeout:g}s.", err=True)
        return EX_UNAVAILABLE
    if not as_json and command == "ping":
        click.echo(f"\n{len(merged)} node{'s' if len(merged) != 1 else ''} online.")
    if any(isinstance(a, dict) and "error" in a for a in merged.values()):
        return 1
    return 0


def _remote(kind: str, table: dict[str, ArgSpec]) -> click.Command:
    @click.command(name=kind, context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("action", type=click.Choice(sorted(table)))
    @click.argument("arguments", nargs=-1)
    @click.option("-d", "--destination", default=None, help="comma-separated worker names")
    @click.option("-t", "--timeout", type=float, default=1.0, show_default=True)
    @click.option("-j", "--json", "as_json", is_flag=True, help="answers as one JSON object")
    @app_options
    @click.pass_obj
    def command(
        obj: AppOptions,
        action: str,
        arguments: tuple[str, ...],
        destination: str | None,
        timeout: float,
        as_json: bool,
    ) -> None:
        args = compile_arguments(table[action], arguments)
        sys.exit(_ask(obj, action, args, _destination(destination), timeout, as_json))

    command.help = (
        "Ask workers about themselves (Celery's inspect commands)."
        if kind == "inspect"
        else "Change workers (Celery's control commands)."
    )
    return command


inspect = _remote("inspect", INSPECT)
control = _remote("control", CONTROL)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-d", "--destination", default=None, help="comma-separated worker names")
@click.option("-t", "--timeout", type=float, default=1.0, show_default=True)
@click.option("-j", "--json", "as_json", is_flag=True)
@app_options
@click.pass_obj
def status(obj: AppOptions, destination: str | None, timeout: float, as_json: bool) -> None:
    """Show the workers that answer a ping."""
    sys.exit(_ask(obj, "ping", {}, _destination(destination), timeout, as_json))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dump", is_flag=True, help="print every event as it comes")
@click.option("-F", "--freq", "--frequency", "freq", type=float, default=1.0, show_default=True)
@click.option("--timeout", type=float, default=None, help="stop after this many seconds")
@click.option("--limit", type=int, default=None, help="stop after this many events")
@app_options
@click.pass_obj
def events(
    obj: AppOptions, dump: bool, freq: float, timeout: float | None, limit: int | None
) -> None:
    """Watch the workers' events: a live view of workers and recent tasks (``--dump``:
    the raw events)."""
    from celeriac.events import EventReceiver  # noqa: PLC0415
    from celeriac.events.state import State  # noqa: PLC0415

    state = State()
    shown = [0.0]

    def on_event(event: dict[str, Any]) -> None:
        if dump:
            click.echo(dump_line(event))
            return
        state.event(event)
        now = time.monotonic()
        if now - shown[0] >= freq:
            shown[0] = now
            click.echo(render(state, clear=sys.stdout.isatty()))

    receiver = EventReceiver(obj.app, {"*": on_event})
    where = mask_url(obj.app.broker_url)

    def listening() -> None:
        click.echo(f"-> celeriac events: listening on {where}", err=True)

    with contextlib.suppress(KeyboardInterrupt):
        receiver.capture(timeout=timeout, limit=limit, listening=listening)
    if not dump:
        click.echo(render(state, clear=False))


def dump_line(event: dict[str, Any]) -> str:
    """One event as ``celery events --dump`` prints it."""
    fields = {k: v for k, v in event.items() if k not in ("type", "hostname", "timestamp")}
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(event.get("timestamp") or 0)))
    text = ", ".join(f"{k}={v!r}" for k, v in sorted(fields.items()))
    return f"{event.get('hostname')} [{when}] {event.get('type')}: {text}"


def render(state: Any, clear: bool) -> str:
    lines = ["\x1b[2J\x1b[H"] if clear else []
    lines.append(f"Workers ({len(state.workers)}), events received: {state.event_count}")
    for worker in sorted(state.workers.values(), key=lambda w: w.hostname):
        status = "ONLINE" if worker.alive else "OFFLINE"
        lines.append(
            f"  {worker.hostname:<30} {status:<8} active={worker.active} "
            f"processed={worker.processed} load={worker.loadavg} {worker.sw}"
        )
    lines.append("Tasks (most recent last)")
    for task in list(state.tasks.values())[-20:]:
        extra = task.result if task.state == "SUCCESS" else task.exception or ""
        lines.append(
            f"  {task.uuid} {task.name or '?':<30} {task.state:<9} {task.hostname or ''} {extra}"
        )
    return "\n".join(lines)


__all__ = ["CONTROL", "INSPECT", "control", "events", "inspect", "status"]
