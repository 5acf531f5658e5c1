"""``celeriac worker``: every option of ``celery worker`` (5.7), with the same meaning.

An option celeriac implements changes what the worker does; an option that has no
meaning here is accepted with one warning line at start-up saying what happens
instead (:data:`NO_MEANING`); ``-B`` runs a beat in a process of its own beside the
worker (:mod:`celeriac._cli.beat`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from celeriac._cli.common import AppOptions, app_options
from celeriac._cli.daemon import (
    check_pidfile,
    detach,
    drop_privileges,
    parse_umask,
    pidfile_lock,
)
from celeriac._cli.nodes import node_format
from celeriac._concurrency import EVENTLET_REFUSED

#: option -> the warning logged at start-up when it is given
NO_MEANING = {
    "statedb": "--statedb: celeriac keeps revoked task ids in the broker (durable), "
    "so there is no state file; it is not used",
    "without_gossip": "--without-gossip: celeriac workers do not gossip; nothing to turn off",
    "without_mingle": "--without-mingle: celeriac workers do not mingle at start-up "
    "(revokes are in the broker); nothing to turn off",
    "schedule_filename": "-s/--schedule: celeriac's beat keeps each entry's last run in "
    "the broker, not in a file; it is not used",
    "executable": "--executable: --detach forks this process instead of running a new "
    "interpreter; it is not used",
}
AUTOSCALE_WARNING = (
    "--autoscale={max},{min}: only the prefork pool grows and shrinks; "
    "this {pool} pool runs {max}, fixed"
)
SPAWN_WARNING = "--pool-start-method=spawn: celeriac's prefork pool always forks its children"


class Concurrency(click.ParamType[Any, Any]):
    name = "concurrency"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int) or value == "auto":
            return value
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a whole number or 'auto'", param, ctx)
        if number < 1:
            self.fail(f"{number} is smaller than the minimum valid value 1", param, ctx)
        return number


class Autoscale(click.ParamType[Any, Any]):
    name = "<max workers>,<min workers>"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        parts = str(value).split(",")
        if len(parts) > 2:
            self.fail(f"expected one or two comma-separated integers, got {value!r}", param, ctx)
        try:
            numbers = sorted((int(p) for p in parts), reverse=True)
        except ValueError:
            self.fail(f"expected integers, got {value!r}", param, ctx)
        if len(numbers) == 1:
            numbers.append(0)
        if numbers[0] < 1:
            self.fail("the maximum must be at least 1", param, ctx)
        return tuple(numbers)


def auto_concurrency() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = cpus or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return count


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def queue_names(conf: Any) -> list[str]:
    queues = conf["task_queues"]
    if not queues:
        return [conf["task_default_queue"]]
    if isinstance(queues, dict):
        return list(queues)
    return [str(getattr(q, "name", q)) for q in queues]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-n", "--hostname", default=None, help="node name, e.g. w1@%h")
@click.option("-D", "--detach", is_flag=True, help="run in the background (a daemon)")
@click.option("-S", "--statedb", default=None, help="(no meaning here; warned)")
@click.option(
    "-l", "--loglevel", default="WARNING", show_default=True, help="DEBUG, INFO, WARNING, ..."
)
@click.option(
    "-O",
    "--optimization",
    type=click.Choice(["default", "fair"]),
    default=None,
    help="fair: a slot takes a message only when it is free (no prefetch)",
)
@click.option(
    "--prefetch-multiplier",
    type=click.IntRange(min=1),
    default=None,
    help="messages held per pool slot (worker_prefetch_multiplier)",
)
@click.option("--disable-prefetch", is_flag=True, help="fetch a task only for a free slot")
@click.option("-c", "--concurrency", type=Concurrency(), default=None, help="N or auto")
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["prefork", "processes", "threads", "asyncio", "solo", "gevent", "eventlet"]),
    default=None,
)
@click.option("-E", "--task-events", "--events", "task_events", is_flag=True)
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="seconds; a task running longer is stopped (task_time_limit)",
)
@click.option(
    "--soft-time-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="seconds; SoftTimeLimitExceeded is raised in the task (task_soft_time_limit)",
)
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    default=None,
    help="replace a prefork child after this many tasks",
)
@click.option(
    "--pool-start-method",
    type=click.Choice(["fork", "spawn"]),
    default=None,
    help="fork (spawn is warned: children are always forked)",
)
@click.option(
    "--max-memory-per-child",
    type=click.IntRange(min=1),
    default=None,
    help="KiB; replace a prefork child whose resident memory grew past it",
)
@click.option(
    "--purge", "--discard", "purge", is_flag=True, help="delete the waiting messages first"
)
@click.option("-Q", "--queues", default=None, help="comma-separated queue names")
@click.option("-X", "--exclude-queues", default=None, help="comma-separated queue names")
@click.option("-I", "--include", default=None, help="comma-separated modules to import")
@click.option("--without-gossip", is_flag=True)
@click.option("--without-mingle", is_flag=True)
@click.option("--without-heartbeat", is_flag=True)
@click.option("--heartbeat-interval", type=int, default=None)
@click.option(
    "--autoscale", type=Autoscale(), default=None, help="max,min: grow and shrink the prefork pool"
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="serve Prometheus /metrics and /healthz on this port (celeriac[metrics])",
)
@click.option("-B", "--beat", is_flag=True, help="run a beat (periodic tasks) beside the worker")
@click.option("-s", "--schedule-filename", "--schedule", "schedule_filename", default=None)
@click.option("--scheduler", default=None)
@click.option("-f", "--logfile", default=None, help="log to this file (%n, %i, ... expand)")
@click.option("--pidfile", default=None, help="write the worker's pid to this file")
@click.option("--uid", default=None, help="run as this user")
@click.option("--gid", default=None, help="run as this group")
@click.option("--umask", default=None, help="octal umask, e.g. 022")
@click.option("--executable", default=None)
@app_options
@click.pass_obj
def worker(obj: AppOptions, /, **options: Any) -> None:
    """Start a worker."""
    sys.exit(run_worker(obj, options))


def _apply_settings(conf: Any, o: dict[str, Any], prefork: bool) -> int | None:
    """The options that are settings (``--time-limit`` is ``task_time_limit``, ...);
    returns the prefetch multiplier."""
    if o["task_events"]:
        conf["worker_send_task_events"] = True
    if o["metrics_port"]:
        conf["worker_metrics_port"] = o["metrics_port"]
    if o["include"]:
        conf["include"] = [*conf["include"], *_csv(o["include"])]
    for option, setting in (
        ("time_limit", "task_time_limit"),
        ("soft_time_limit", "task_soft_time_limit"),
        ("max_memory_per_child", "worker_max_memory_per_child"),
    ):
        if o[option] is not None:
            conf[setting] = o[option]
    if o["optimization"] == "fair" or o["disable_prefetch"] or (o["autoscale"] and prefork):
        # a slot takes the next message only when it is free: one per slot, no batching
        conf["worker_prefetch_window"] = 0.0
        return 1
    return o["prefetch_multiplier"]  # type: ignore[no-any-return]


def _warnings(conf: Any, o: dict[str, Any], pool: str) -> list[str]:
    warnings = [text for name, text in NO_MEANING.items() if o[name] not in (None, False)]
    if o["autoscale"] is not None and pool != "prefork":
        high, low = o["autoscale"]
        warnings.append(AUTOSCALE_WARNING.format(max=high, min=low, pool=pool))
    if o["pool_start_method"] == "spawn":
        warnings.append(SPAWN_WARNING)
    if o["max_memory_per_child"] is not None and pool != "prefork":
        warnings.append(
            "--max-memory-per-child: applies to the prefork pool's children only; "
            f"this worker's pool is {pool}"
        )
    return warnings


def _queues(conf: Any, o: dict[str, Any]) -> list[str] | None:
    queues = _csv(o["queues"])
    excluded = set(_csv(o["exclude_queues"]))
    if excluded:
        queues = [q for q in queues or queue_names(conf) if q not in excluded]
        if not queues:
            raise click.UsageError("-X/--exclude-queues leaves no queue to consume from")
    return queues or None


def _concurrency(o: dict[str, Any]) -> int | None:
    if o["autoscale"] is not None:
        return int(o["autoscale"][0])
    if o["concurrency"] == "auto":
        return auto_concurrency()
    return o["concurrency"]  # type: ignore[no-any-return]


def run_worker(obj: AppOptions, o: dict[str, Any]) -> int:
    from celeriac._cli.beat import check_scheduler, with_embedded_beat  # noqa: PLC0415
    from celeriac.beat.service import Claims  # noqa: PLC0415
    from celeriac.worker import Worker, expand_hostname  # noqa: PLC0415

    if o["pool"] == "eventlet":
        raise click.UsageError(EVENTLET_REFUSED)
    app = obj.app
    if o["beat"]:
        check_scheduler(o["scheduler"])
        Claims.check(app)
    else:  # with -B, the beat process sends the app signals after importing the tasks
        if o["scheduler"]:
            obj.warnings.append("--scheduler: only the beat (-B) uses it; it is not used")
        app.finalize()
    conf = app.conf
    pool = "prefork" if o["pool"] == "processes" else o["pool"]
    pool_name = pool or conf["worker_pool"]
    prefetch = _apply_settings(conf, o, pool_name == "prefork")
    hostname = expand_hostname(o["hostname"])
    the_worker = Worker(
        app,
        concurrency=_concurrency(o),
        pool=pool,
        queues=_queues(conf, o),
        hostname=hostname,
        loglevel=o["loglevel"],
        prefetch_multiplier=prefetch,
        max_tasks_per_child=o["max_tasks_per_child"],
        banner=not obj.quiet,
    )
    the_worker.startup_warnings = [*obj.warnings, *_warnings(conf, o, pool_name)]
    if o["autoscale"] is not None and pool_name == "prefork":
        the_worker.autoscale = o["autoscale"]
    the_worker.purge = o["purge"]
    the_worker.heartbeat_interval = _heartbeat(o)
    the_worker.options = dict(o)  # celeryd_init's options
    the_worker.logfile = _absolute(o["logfile"])
    pidfile = _absolute(node_format(o["pidfile"], hostname))
    beat_log = node_format(the_worker.logfile, hostname, 0)
    umask = parse_umask(o["umask"])
    if not o["detach"]:
        if umask is not None:
            os.umask(umask)
        drop_privileges(o["uid"], o["gid"])
        with pidfile_lock(pidfile):
            if o["beat"]:
                return with_embedded_beat(app, o["loglevel"], the_worker.run, beat_log)
            return the_worker.run()
    if pidfile:
        check_pidfile(pidfile)  # refuse here, on the terminal, if it is running
    started = detach(node_format(the_worker.logfile, hostname, 0), os.getcwd(), umask)
    try:
        drop_privileges(o["uid"], o["gid"])
        with pidfile_lock(pidfile):
            started("")
            if o["beat"]:
                return with_embedded_beat(app, o["loglevel"], the_worker.run, beat_log)
            return the_worker.run()
    except click.ClickException as exc:
        started(exc.format_message())
        raise


def _heartbeat(o: dict[str, Any]) -> float | None:
    """Seconds between event heartbeats: ``--heartbeat-interval`` (2), none with
    ``--without-heartbeat``."""
    if o["without_heartbeat"]:
        return None
    return float(o["heartbeat_interval"] or 2.0)


def _absolute(path: str | None) -> str | None:
    return os.path.abspath(path) if path else None


__all__ = ["NO_MEANING", "auto_concurrency", "run_worker", "worker"]
