"""``celeriac dashboard``: the web dashboard (:mod:`celeriac.dashboard`) served by uvicorn.

With no credentials it serves loopback only and refuses to start on another address;
``--token``/``--basic-auth`` (admin) and ``--readonly-token``/``--readonly-basic-auth``
(read-only) may each be repeated, or come from the environment
(``CELERIAC_DASHBOARD_TOKEN``, ``CELERIAC_DASHBOARD_READONLY_TOKEN``,
``CELERIAC_DASHBOARD_BASIC_AUTH``, ``CELERIAC_DASHBOARD_READONLY_BASIC_AUTH``: one
value, or several separated by commas), which keeps them out of ``ps``."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import click

from celeriac._cli.common import AppOptions, app_options

_ENV = {
    "token": "CELERIAC_DASHBOARD_TOKEN",
    "readonly_token": "CELERIAC_DASHBOARD_READONLY_TOKEN",
    "basic_auth": "CELERIAC_DASHBOARD_BASIC_AUTH",
    "readonly_basic_auth": "CELERIAC_DASHBOARD_READONLY_BASIC_AUTH",
}


def _given(options: dict[str, Any], name: str) -> list[str]:
    values = list(options[name] or ())
    env = os.environ.get(_ENV[name], "")
    values.extend(v.strip() for v in env.split(",") if v.strip())
    return values


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", "--address", "host", default="127.0.0.1", show_default=True)
@click.option("-p", "--port", type=int, default=5555, show_default=True, help="0: any free port")
@click.option("--token", multiple=True, help="a bearer token of the admin role")
@click.option("--readonly-token", multiple=True, help="a bearer token of the read-only role")
@click.option("--basic-auth", multiple=True, metavar="USER:PASSWORD", help="an admin user")
@click.option("--readonly-basic-auth", multiple=True, metavar="USER:PASSWORD")
@click.option("--max-tasks", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option(
    "--refresh", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
    help="seconds between live updates (at most)",
)  # fmt: skip
@click.option("--poll-interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True)
@click.option(
    "--enable-events/--no-enable-events", default=True, show_default=True,
    help="ask each worker to send task events (as Flower does)",
)  # fmt: skip
@click.option("-l", "--loglevel", default="WARNING", show_default=True)
@app_options
@click.pass_obj
def dashboard(obj: AppOptions, /, **options: Any) -> None:
    """Serve the web dashboard: workers, queues, tasks, periodic entries, dead letters."""
    try:
        import uvicorn  # noqa: PLC0415

        from celeriac.dashboard import Auth, Dashboard  # noqa: PLC0415
        from celeriac.dashboard._auth import is_loopback  # noqa: PLC0415
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs the dashboard extra: pip install 'celeriac[dashboard]' ({exc})"
        ) from None
    try:
        auth = Auth.of(
            basic=_given(options, "basic_auth"),
            readonly_basic=_given(options, "readonly_basic_auth"),
            tokens=_given(options, "token"),
            readonly_tokens=_given(options, "readonly_token"),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    host = options["host"]
    if not auth.configured and not is_loopback(host):
        raise click.UsageError(
            f"--host {host} is not a loopback address: the dashboard then needs credentials "
            "(--token or --basic-auth, or CELERIAC_DASHBOARD_TOKEN); a read-only role is "
            "--readonly-token / --readonly-basic-auth"
        )
    app = obj.app
    app.check_configuration()
    dash = Dashboard(
        app,
        auth=auth,
        max_tasks=options["max_tasks"],
        refresh=options["refresh"],
        poll_interval=options["poll_interval"],
        enable_events=options["enable_events"],
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, options["port"]))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{options['port']}: {exc}") from None
    sock.listen(128)  # connections wait in the backlog until uvicorn serves
    port = sock.getsockname()[1]
    where = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(
        dash.asgi, log_level=options["loglevel"].lower(), lifespan="on", access_log=False
    )
    server = uvicorn.Server(config)
    roles = sorted({role for _, role in auth.users.values()} | set(auth.tokens.values()))
    click.echo(
        f"-> celeriac dashboard: http://{where}:{port}/ "
        f"(auth: {', '.join(roles) if roles else 'none, loopback only'})",
        err=True,
    )
    server.run(sockets=[sock])
    sys.exit(0)


__all__ = ["dashboard"]
