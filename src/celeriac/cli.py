"""The command line: ``celeriac -A module worker|purge|result``."""

from __future__ import annotations

import importlib
import os
import pprint
import sys
from typing import Any

import click

from celeriac import __version__
from celeriac.app import Celeriac
from celeriac.exceptions import BrokerError, CeleriacError, ImproperlyConfigured

APP_ATTRS = ("app", "celery", "celeriac")


def find_app(spec: str) -> Celeriac:
    """Load an app from ``module``, ``module:attr`` or a package with celery/celeriac.py."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    module = _import(module_name, spec)
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, Celeriac):
            raise click.ClickException(
                f"cannot load app {spec!r}: module {module_name!r} has no app named {attr!r}"
            )
        return app
    found = _app_in(module)
    if found is not None:
        return found
    if hasattr(module, "__path__"):  # a package: look in proj.celeriac, then proj.celery
        for sub in ("celeriac", "celery"):
            try:
                submodule = importlib.import_module(f"{module_name}.{sub}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{module_name}.{sub}":
                    raise
                continue
            found = _app_in(submodule)
            if found is not None:
                return found
    raise click.ClickException(
        f"cannot load app {spec!r}: no celeriac app found in module {module_name!r} "
        f"(name it 'app', or pass -A {module_name}:<name>)"
    )


def _import(module_name: str, spec: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise click.ClickException(
                f"cannot load app {spec!r}: module {module_name!r} not found "
                f"(is it on the path? the current directory is {os.getcwd()})"
            ) from None
        raise click.ClickException(f"cannot load app {spec!r}: {exc}") from None
    except ImproperlyConfigured as exc:
        raise click.ClickException(str(exc)) from None


def _app_in(module: Any) -> Celeriac | None:
    for attr in APP_ATTRS:
        value = getattr(module, attr, None)
        if isinstance(value, Celeriac):
            return value
    apps = [v for v in vars(module).values() if isinstance(v, Celeriac)]
    return apps[0] if len(apps) == 1 else None


class AppContext:
    def __init__(self, spec: str | None, broker: str | None) -> None:
        self.spec = spec
        self.broker = broker
        self._app: Celeriac | None = None

    @property
    def app(self) -> Celeriac:
        if self._app is None:
            if not self.spec:
                raise click.UsageError("this command needs an app: pass -A/--app MODULE")
            self._app = find_app(self.spec)
            if self.broker:
                self._app.conf.override("broker_url", self.broker)
        return self._app


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", "app_spec", metavar="MODULE", help="module, module:app, or package")
@click.option("-b", "--broker", default=None, help="broker URL (overrides the app's)")
@click.version_option(__version__, "--version", prog_name="celeriac", message="%(version)s")
@click.pass_context
def cli(ctx: click.Context, app_spec: str | None, broker: str | None) -> None:
    """celeriac: run and manage task workers."""
    ctx.obj = AppContext(app_spec, broker)


@cli.command()
@click.option("-l", "--loglevel", default="WARNING", show_default=True)
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None)
@click.option(
    "-P", "--pool", type=click.Choice(["prefork", "threads", "asyncio", "solo"]), default=None
)
@click.option("-Q", "--queues", default=None, help="comma-separated queue names")
@click.option("-n", "--hostname", default=None, help="node name, e.g. w1@%h")
@click.option("--prefetch-multiplier", type=click.IntRange(min=1), default=None)
@click.option("--max-tasks-per-child", type=click.IntRange(min=1), default=None)
@click.pass_obj
def worker(
    obj: AppContext,
    loglevel: str,
    concurrency: int | None,
    pool: str | None,
    queues: str | None,
    hostname: str | None,
    prefetch_multiplier: int | None,
    max_tasks_per_child: int | None,
) -> None:
    """Start a worker."""
    from celeriac.worker import Worker  # noqa: PLC0415

    app = obj.app
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    code = Worker(
        app,
        concurrency=concurrency,
        pool=pool,
        queues=queue_list,
        hostname=hostname,
        loglevel=loglevel,
        prefetch_multiplier=prefetch_multiplier,
        max_tasks_per_child=max_tasks_per_child,
    ).run()
    sys.exit(code)


@cli.command()
@click.option("-f", "--force", is_flag=True, help="do not ask for confirmation")
@click.option(
    "-Q", "--queues", default=None, help="comma-separated queues (default: task_queues' or celery)"
)
@click.pass_obj
def purge(obj: AppContext, force: bool, queues: str | None) -> None:
    """Delete every waiting message from the queues."""
    from celeriac._loop import run_sync  # noqa: PLC0415
    from celeriac._queues import consumed_queues  # noqa: PLC0415

    app = obj.app
    given = [q.strip() for q in queues.split(",")] if queues else None
    names = given or consumed_queues(app.conf)  # as Celery: every queue in task_queues
    if not force:
        click.confirm(
            f"This will remove all messages from queue(s): {', '.join(names)}. "
            "There is no undo. Continue?",
            abort=True,
        )

    async def do() -> int:
        broker = await app.get_broker()
        return sum([await broker.purge(name) for name in names])

    count = run_sync(do())
    word = "message" if count == 1 else "messages"
    click.echo(f"Purged {count} {word} from {len(names)} known task queue(s).")


@cli.command()
@click.argument("task_id")
@click.option("-t", "--timeout", type=float, default=None, help="seconds to wait")
@click.option("--traceback", "show_traceback", is_flag=True, help="show the task's traceback")
@click.pass_obj
def result(obj: AppContext, task_id: str, timeout: float | None, show_traceback: bool) -> None:
    """Wait for a task's result and print it."""
    res = obj.app.AsyncResult(task_id)
    if show_traceback:
        res.get(timeout=timeout, propagate=False)
        click.echo(res.traceback or "")
        return
    value = res.get(timeout=timeout)
    click.echo(value if isinstance(value, str) else pprint.pformat(value))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``celeriac`` command."""
    try:
        cli.main(args=argv, prog_name="celeriac", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (ImproperlyConfigured, BrokerError, CeleriacError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
