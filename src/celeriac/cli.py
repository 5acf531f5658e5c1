"""The command line: ``celeriac -A module worker|multi|purge|migrate|result|call|shell|report``."""

from __future__ import annotations

import pprint
import sys
from typing import Any

import click

from celeriac import __version__
from celeriac._cli.beat import beat
from celeriac._cli.common import AppOptions, app_options, find_app, global_options  # noqa: F401 - find_app: public
from celeriac._cli.dashboard import dashboard
from celeriac._cli.monitor import control, events, inspect, status
from celeriac._cli.multi import multi
from celeriac._cli.tools import call, list_command, report, shell
from celeriac._cli.worker import worker
from celeriac.app import Celeriac
from celeriac.exceptions import BrokerError, CeleriacError, ImproperlyConfigured


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@global_options
@click.version_option(__version__, "--version", prog_name="celeriac", message="%(version)s")
@click.pass_context
def cli(ctx: click.Context, /, **options: Any) -> None:
    """celeriac: run and manage task workers."""
    ctx.obj = AppOptions(**options, app=None if options["app_spec"] else _started_app)


#: the app of ``app.start()`` / ``app.worker_main()``, used when no ``-A`` is given
_started_app: Celeriac | None = None

for _command in (worker, beat, multi, call, shell, report, list_command):
    cli.add_command(_command)
for _command in (inspect, control, status, events, dashboard):
    cli.add_command(_command)


@cli.command()
@click.option("-f", "--force", is_flag=True, help="do not ask for confirmation")
@click.option(
    "-Q", "--queues", default=None, help="comma-separated queues (default: task_queues' or celery)"
)
@app_options
@click.pass_obj
def purge(obj: AppOptions, force: bool, queues: str | None) -> None:
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
@app_options
@click.pass_obj
def migrate(obj: AppOptions) -> None:
    """Create or update the schema of a PostgreSQL broker and result backend (for teams
    that manage schema themselves: the transports otherwise do it on first use)."""
    from celeriac._loop import run_sync  # noqa: PLC0415

    app = obj.app
    targets = {app.broker_url: app.broker_options(), app.backend_url: app.backend_options()}
    for url, options in targets.items():
        scheme = url.split("://", 1)[0].lower() if "://" in url else url
        if scheme not in ("postgres", "postgresql"):
            click.echo(f"{scheme}://: nothing to migrate (it creates its storage on first use)")
            continue
        from celeriac.transports.postgres.db import migrate_url  # noqa: PLC0415

        schema, applied, version = run_sync(migrate_url(url, options))
        click.echo(
            f"PostgreSQL schema {schema!r}: version {version} "
            f"({applied} migration{'' if applied == 1 else 's'} applied)"
        )


@cli.command()
@click.argument("task_id")
@click.option("-t", "--timeout", type=float, default=None, help="seconds to wait")
@click.option("--traceback", "show_traceback", is_flag=True, help="show the task's traceback")
@app_options
@click.pass_obj
def result(obj: AppOptions, task_id: str, timeout: float | None, show_traceback: bool) -> None:
    """Wait for a task's result and print it."""
    res = obj.app.AsyncResult(task_id)
    if show_traceback:
        res.get(timeout=timeout, propagate=False)
        click.echo(res.traceback or "")
        return
    value = res.get(timeout=timeout)
    click.echo(value if isinstance(value, str) else pprint.pformat(value))


def start_app(app: Celeriac, argv: list[str] | None = None) -> None:
    """``app.start(argv)``: run the command line with ``app`` as the default ``-A``.
    Without ``argv``, the arguments of this program (``python app.py worker -l info``)."""
    global _started_app
    args = list(sys.argv[1:] if argv is None else argv)
    if args and argv is not None and (args[0] == sys.argv[0] or args[0].endswith(".py")):
        args = args[1:]  # a program name in front, as sys.argv has
    _started_app = app
    try:
        main(args)
    finally:
        _started_app = None


def worker_main(app: Celeriac, argv: list[str] | None = None) -> None:
    """``app.worker_main(argv)``: as ``start_app``, where ``argv`` names ``worker``."""
    args = list(sys.argv if argv is None else argv)
    if "worker" not in args:
        raise ValueError(
            "The worker sub-command must be specified in argv.\n"
            "Use app.start() to programmatically start other commands."
        )
    start_app(app, args[1:] if argv is None else args)


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
