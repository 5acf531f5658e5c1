"""What every command shares: loading the app, and the global options.

The global options are Celery's (``-A``, ``-b``, ``--result-backend``, ``--loader``,
``--config``, ``--workdir``, ``-C/--no-color``, ``-q/--quiet``, ``--skip-checks``);
``-A`` and ``-b`` are also accepted after the subcommand (``celeriac worker -A proj``).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from celeriac.app import Celeriac
from celeriac.exceptions import ImproperlyConfigured

F = TypeVar("F", bound=Callable[..., Any])

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


class AppOptions:
    """The global options, and the app they name (loaded when first asked for)."""

    def __init__(
        self,
        app_spec: str | None = None,
        broker: str | None = None,
        result_backend: str | None = None,
        loader: str | None = None,
        config: str | None = None,
        workdir: str | None = None,
        no_color: bool = False,
        quiet: bool = False,
        skip_checks: bool = False,
        app: Celeriac | None = None,
    ) -> None:
        self.spec = app_spec
        self.broker = broker
        self.result_backend = result_backend
        self.config = config
        self.quiet = quiet
        self.no_color = no_color  # celeriac's output has no colours to turn off
        self.skip_checks = skip_checks  # celeriac runs no Django checks to skip
        #: one-line warnings for options that mean nothing here (the worker logs them)
        self.warnings: list[str] = []
        if loader:
            self.warnings.append(
                f"--loader={loader}: celeriac has no loaders; the app's own configuration is used"
            )
        if workdir:
            os.chdir(workdir)
        self._app = app

    @property
    def app(self) -> Celeriac:
        if self._app is None:
            if not self.spec:
                raise click.UsageError("this command needs an app: pass -A/--app MODULE")
            self._app = find_app(self.spec)
            self._configure(self._app)
        return self._app

    def _configure(self, app: Celeriac) -> None:
        if self.config:
            app.config_from_object(self.config)
        if self.broker:
            app.conf.override("broker_url", self.broker)
        if self.result_backend:
            app.conf.override("result_backend", self.result_backend)


def global_options(fn: F) -> F:
    """Celery's global options, on the ``celeriac`` group."""
    decorators = [
        click.option(
            "-A", "--app", "app_spec", metavar="MODULE", help="module, module:app, or package"
        ),
        click.option("-b", "--broker", default=None, help="broker URL (overrides the app's)"),
        click.option("--result-backend", default=None, help="result backend URL"),
        click.option("--loader", default=None, help="(no meaning here; warned)"),
        click.option("--config", default=None, help="module to load settings from"),
        click.option("--workdir", type=click.Path(exists=True, file_okay=False), default=None),
        click.option("-C", "--no-color", is_flag=True, help="(celeriac prints no colours)"),
        click.option("-q", "--quiet", is_flag=True, help="no banner"),
        click.option("--skip-checks", is_flag=True, help="(no Django checks to skip)"),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def _set_spec(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        options = ctx.find_object(AppOptions)
        if options is not None:
            options.spec = value


def _set_broker(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        options = ctx.find_object(AppOptions)
        if options is not None:
            options.broker = value


def app_options(fn: F) -> F:
    """``-A``/``-b`` after the subcommand, as well as before it."""
    fn = click.option(
        "-b",
        "--broker",
        callback=_set_broker,
        expose_value=False,
        is_eager=True,
        help="broker URL (as the global -b)",
    )(fn)
    fn = click.option(
        "-A",
        "--app",
        callback=_set_spec,
        expose_value=False,
        is_eager=True,
        metavar="MODULE",
        help="the app (as the global -A)",
    )(fn)
    return fn


__all__ = ["AppOptions", "app_options", "find_app", "global_options"]
