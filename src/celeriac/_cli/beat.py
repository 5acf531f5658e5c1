"""``celeriac beat`` (the options of ``celery beat``, 5.7) and the beat embedded in a
worker (``celeriac worker -B``): a forked process beside the worker's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click

from celeriac._cli.common import AppOptions, app_options
from celeriac._cli.daemon import check_pidfile, detach, drop_privileges, parse_umask, pidfile_lock

logger = logging.getLogger("celeriac.beat")

DEFAULT_SCHEDULERS = ("celery.beat:PersistentScheduler", "celery.beat.PersistentScheduler")
#: option -> the warning logged at start-up when it is given
NO_MEANING = {
    "schedule": "-s/--schedule: celeriac's beat keeps each entry's last run in the broker, "
    "not in a file; it is not used",
    "executable": "--executable: --detach forks this process; it is not used",
    "enable_remote_control": "--enable-remote-control: celeriac's beat answers no remote "
    "control yet (health-check it by its log or its process); it is not used",
    "hostname": "-n/--hostname: celeriac's beat answers no remote control, so it needs no "
    "node name; it is not used",
}


def check_scheduler(scheduler: str | None) -> None:
    if scheduler and scheduler not in DEFAULT_SCHEDULERS:
        raise click.UsageError(
            f"--scheduler {scheduler}: celeriac's beat has one scheduler (entries from "
            "beat_schedule and app.beat.add(), state in the broker); remove the option"
        )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--detach", is_flag=True, help="run in the background (a daemon)")
@click.option("-s", "--schedule", default=None, help="(no meaning here; warned)")
@click.option("-S", "--scheduler", default=None, help="only Celery's default is accepted")
@click.option("--max-interval", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--enable-remote-control/--no-enable-remote-control", default=None)
@click.option("-n", "--hostname", default=None, help="(no meaning here; warned)")
@click.option("-l", "--loglevel", default="WARNING", show_default=True)
@click.option("-f", "--logfile", default=None, help="log to this file")
@click.option("--pidfile", default=None, help="write the beat's pid to this file")
@click.option("--uid", default=None, help="run as this user")
@click.option("--gid", default=None, help="run as this group")
@click.option("--umask", default=None, help="octal umask, e.g. 022")
@click.option("--executable", default=None)
@click.option("--list", "list_entries", is_flag=True, help="print the entries and exit")
@app_options
@click.pass_obj
def beat(obj: AppOptions, /, **options: Any) -> None:
    """Start the periodic task scheduler (any number may run at once)."""
    sys.exit(run_beat(obj, options))


def run_beat(obj: AppOptions, o: dict[str, Any]) -> int:
    from celeriac.beat.service import Claims  # noqa: PLC0415
    from celeriac.utils.log import setup_logging  # noqa: PLC0415

    check_scheduler(o["scheduler"])
    app = obj.app
    app.check_configuration()
    Claims.check(app)
    if o["list_entries"]:
        app.import_modules()
        app.finalize()
        print_entries(app)
        return 0
    pidfile = os.path.abspath(o["pidfile"]) if o["pidfile"] else None
    logfile = os.path.abspath(o["logfile"]) if o["logfile"] else None
    umask = parse_umask(o["umask"])

    def start() -> int:
        setup_logging(o["loglevel"], app.conf)
        if logfile:
            from celeriac._cli.daemon import log_to_file  # noqa: PLC0415

            log_to_file(logfile)
        for line in [*obj.warnings, *(t for k, t in NO_MEANING.items() if o[k])]:
            logger.warning("%s", line)
        app.import_modules()
        return serve(app, o["max_interval"])

    if not o["detach"]:
        if umask is not None:
            os.umask(umask)
        drop_privileges(o["uid"], o["gid"])
        with pidfile_lock(pidfile):
            return start()
    if pidfile:
        check_pidfile(pidfile)
    started = detach(logfile, os.getcwd(), umask)
    drop_privileges(o["uid"], o["gid"])
    with pidfile_lock(pidfile):
        started("")
        return start()


def serve(app: Any, max_interval: float | None, parent: int | None = None) -> int:
    """Run a beat until SIGTERM/SIGINT (or until process ``parent`` is gone): sends
    ``beat_init`` as it starts, and ``beat_embedded_init`` too when a worker's ``-B``
    started it (``parent``), as Celery's beat does."""
    from celeriac import signals  # noqa: PLC0415
    from celeriac.beat import Beat  # noqa: PLC0415

    beat = Beat(app, max_interval=max_interval)
    signals.beat_init.send(sender=beat)
    if parent is not None:
        signals.beat_embedded_init.send(sender=beat)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watch = None
        if parent is not None:
            watch = asyncio.create_task(_watch_parent(parent, stop))
        try:
            await beat.run(stop)
        finally:
            if watch is not None:
                watch.cancel()
            await app.close_clients()

    asyncio.run(main())
    return 0


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent:  # noqa: ASYNC110 - no event tells a parent's death
        await asyncio.sleep(1.0)
    logger.warning("beat: the worker that started it is gone; stopping")
    stop.set()


def with_embedded_beat(
    app: Any, loglevel: str, run: Callable[[], int], logfile: str | None = None
) -> int:
    """``worker -B``: fork a beat process, run the worker, then stop the beat."""
    from celeriac._cli.daemon import log_to_file  # noqa: PLC0415
    from celeriac.utils.log import setup_logging  # noqa: PLC0415

    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the beat
        code = 1
        try:
            setup_logging(loglevel, app.conf)
            if logfile:
                log_to_file(logfile)
            app.import_modules()
            code = serve(app, None, parent=parent)
        except BaseException:
            logger.exception("beat: stopped by an error")
        finally:
            os._exit(code)
    try:
        return run()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(ChildProcessError):  # the supervisor may have reaped it
            os.waitpid(pid, 0)


def print_entries(app: Any) -> None:
    rows = app.beat.rows()
    if not rows:
        click.echo("No periodic entries (beat_schedule is empty, none stored).")
        return
    for row in rows:
        last = row.last_run.isoformat() if row.last_run else "never"
        upcoming = row.next_run.isoformat() if row.next_run else "never"
        where = "" if row.entry.source == "config" else " [stored]"
        click.echo(f"{row.entry.name}{where}: {row.entry.task}")
        click.echo(f"    schedule: {row.schedule}")
        click.echo(f"    last run: {last}; next run: {upcoming}")


__all__ = ["beat", "run_beat", "serve", "with_embedded_beat"]
