"""``celeriac call``, ``shell``, ``report`` and ``list bindings``."""

from __future__ import annotations

import code
import datetime
import json
import platform
import re
from typing import Any

import click

from celeriac import __version__, _queues
from celeriac._cli.common import AppOptions, app_options
from celeriac._concurrency import GEVENT_MISSING, patch_gevent
from celeriac.utils.log import mask_url

SECRET = re.compile(r"API|TOKEN|KEY|SECRET|PASS|PROFANITIES_LIST|SIGNATURE|DATABASE", re.I)


def _json(kind: type, what: str) -> Any:
    def convert(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}") from None
        if not isinstance(parsed, kind):
            raise click.BadParameter(f"expected a JSON {what}, got {value!r}")
        return parsed

    return convert


def _when(value: str | None) -> datetime.datetime | float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither seconds nor an ISO-8601 time") from None


@click.command()
@click.argument("name")
@click.option("-a", "--args", callback=_json(list, "array"), help="JSON array")
@click.option("-k", "--kwargs", callback=_json(dict, "object"), help="JSON object")
@click.option("--eta", default=None, help="ISO-8601 time to run at")
@click.option("--countdown", type=float, default=None, help="seconds from now")
@click.option("--expires", default=None, help="ISO-8601 time or seconds from now")
@click.option("--serializer", default=None)
@click.option("--queue", default=None)
@click.option("--exchange", default=None)
@click.option("--routing-key", default=None)
@app_options
@click.pass_obj
def call(obj: AppOptions, /, name: str, **o: Any) -> None:
    """Call a task by name; prints the task id."""
    options: dict[str, Any] = {}
    if o["eta"] is not None:
        eta = _when(o["eta"])
        if not isinstance(eta, datetime.datetime):
            raise click.BadParameter("expected an ISO-8601 time", param_hint="--eta")
        options["eta"] = eta
    if o["countdown"] is not None:
        options["countdown"] = o["countdown"]
    if o["expires"] is not None:
        options["expires"] = _when(o["expires"])
    if o["serializer"]:
        options["serializer"] = o["serializer"]
    queue = o["queue"] or o["routing_key"]  # the default exchange routes a key to its queue
    if queue:
        options["queue"] = queue
    if o["exchange"]:
        click.echo(
            f"warning: --exchange={o['exchange']}: celeriac sends to a queue "
            f"({queue or 'the task route'}), not through a named exchange",
            err=True,
        )
    result = obj.app.send_task(name, o["args"] or [], o["kwargs"] or {}, **options)
    click.echo(result.id)


@click.command()
@click.option("--ipython", is_flag=True, help="use IPython")
@click.option("--bpython", is_flag=True, help="use bpython")
@click.option("--python", "plain", is_flag=True, help="the plain Python shell")
@click.option("-T", "--without-tasks", is_flag=True, help="no task names in the namespace")
@click.option("--eventlet", is_flag=True, help="(refused: celeriac has no eventlet support)")
@click.option("--gevent", is_flag=True, help="monkey patch with gevent first")
@app_options
@click.pass_obj
def shell(obj: AppOptions, /, **o: Any) -> None:
    """A Python shell with the app, its tasks and celeriac's names."""
    if o["eventlet"]:
        raise click.UsageError(
            "--eventlet: celeriac has no eventlet support; use --gevent (or no option)"
        )
    if o["gevent"] and not patch_gevent():
        raise click.UsageError(f"--gevent: {GEVENT_MISSING}")
    import celeriac  # noqa: PLC0415

    app = obj.app
    app.import_modules()
    names: dict[str, Any] = {
        "app": app,
        "celery": app,
        "celeriac": celeriac,
        **{n: getattr(celeriac, n) for n in ("Task", "chain", "chord", "group", "signature")},
    }
    if not o["without_tasks"]:
        for task in app.tasks.values():
            if not task.name.startswith("celery."):
                names[task.name.rpartition(".")[2]] = task
    banner = f"celeriac {__version__} shell: app, celery, celeriac and the app's tasks"
    if o["ipython"] or o["bpython"]:
        which = "IPython" if o["ipython"] else "bpython"
        try:
            module = __import__(which)
        except ImportError:
            raise click.UsageError(f"--{which.lower()}: {which} is not installed") from None
        if which == "IPython":
            module.start_ipython(argv=[], user_ns=names)
        else:
            module.embed(locals_=names, banner=banner)
        return
    code.interact(banner=banner, local=names, exitmsg="")


def _masked(key: str, value: Any) -> Any:
    """``value`` with passwords in URLs and secret-looking keys (also nested) hidden."""
    if isinstance(value, dict):
        return {k: _masked(str(k), v) for k, v in value.items()}
    if isinstance(value, str) and "://" in value:
        value = mask_url(value)
    if SECRET.search(key) and value not in (None, "", [], {}):
        return "********"
    return value


@click.command()
@app_options
@click.pass_obj
def report(obj: AppOptions, /) -> None:
    """Versions, the broker and the settings, for a bug report (secrets masked)."""
    app = obj.app
    lines = [
        f"software -> celeriac:{__version__} py:{platform.python_version()}",
        f"platform -> system:{platform.system()} arch:{platform.machine()} "
        f"release:{platform.release()}",
        f"settings -> transport:{mask_url(app.broker_url)} results:{mask_url(app.backend_url)}",
        "",
    ]
    conf = app.conf
    for key in sorted(k for k in conf if conf.is_set(k)):
        lines.append(f"{key}: {_masked(key, conf[key])!r}")
    click.echo("\n".join(lines))


@click.command("list")
@click.argument("what", type=click.Choice(["bindings"]))
@app_options
@click.pass_obj
def list_command(obj: AppOptions, /, what: str) -> None:
    """``list bindings``: the bindings celeriac declares for this app's queues (AMQP)."""
    app = obj.app
    url = app.broker_url
    if not url.startswith(("amqp://", "amqps://", "pyamqp://")):
        raise click.ClickException(
            f"list bindings needs an AMQP broker; this app's broker is {mask_url(url)}, "
            "which has no exchanges or bindings"
        )
    from celeriac._cli.worker import queue_names  # noqa: PLC0415

    # each celeriac queue is bound to the direct exchange of its name, key = its name, and
    # to the exchange and key task_queues gives it (celeriac._queues.bindings)
    names = queue_names(app.conf)
    rows = [(q, q, q) for q in names] + _queues.bindings(app.conf, names)
    width = max([len(q) for q, _, _ in rows] + [5])
    click.echo(f"{'Queue':<{width}}  {'Exchange':<20}  Routing Key")
    for queue, exchange, key in rows:
        click.echo(f"{queue:<{width}}  {exchange:<20}  {key}")


__all__ = ["call", "list_command", "report", "shell"]
