"""``app.autodiscover_tasks()``: import the ``tasks`` module of each listed package.

As Celery's, the call is lazy by default: the packages are looked at when the worker
imports its task modules (``app.import_modules()``), not when the call is made, so a
Django project's ``proj/celery.py`` can call it before Django's apps are loaded. With no
packages, the app's fix-ups supply them (the Django fix-up: every installed app).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celeriac.app import Celeriac

Packages = Iterable[str] | Callable[[], Iterable[str]] | None

_discovering = False  # a tasks module that calls autodiscover_tasks() must not recurse


def find_related_module(package: str, related_name: str | None) -> ModuleType | None:
    """``package.related_name`` imported, or None when the package has no such module.

    ``package`` may name a class inside a module (Django's ``INSTALLED_APPS`` accepts
    ``"app.apps.AppConfig"``): then its parent is searched. An import error raised
    *inside* the related module is not hidden."""
    try:
        module = importlib.import_module(package)
        if not related_name:
            return module
    except ModuleNotFoundError:
        parent = package.rpartition(".")[0]
        if not parent:
            raise
        package = parent
    target = f"{package}.{related_name}"
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name == target:
            return None
        raise


def discover(app: Celeriac, packages: Packages, related_name: str | None) -> list[ModuleType]:
    """Import the related modules now; returns those found."""
    global _discovering
    if _discovering:
        return []
    _discovering = True
    try:
        if callable(packages):
            packages = packages()
        names = list(packages or ())
        if not names:  # no list given: the fix-ups' (Django's installed apps)
            names = [pkg for fixup in app._fixups for pkg in fixup.autodiscover_packages()]
        found = [find_related_module(name, related_name) for name in names]
        return [module for module in found if module is not None]
    finally:
        _discovering = False


def autodiscover_tasks(
    self: Celeriac,
    packages: Packages = None,
    related_name: str | None = "tasks",
    force: bool = False,
) -> None:
    """``app.autodiscover_tasks()``: import ``<package>.<related_name>`` of each package
    (of each installed Django app when none are given), when the worker imports its task
    modules (``app.import_modules()``), or now with ``force``. ``packages`` may be a
    callable returning the list, called at that time. A package without the module is
    skipped; an import error inside one is raised."""
    if force:
        discover(self, packages, related_name)
        return

    def later() -> None:
        discover(self, packages, related_name)

    self._on_import_modules.append(later)


def install_fixups(app: Celeriac, config: object = None) -> None:
    """Install the Django fix-up when ``DJANGO_SETTINGS_MODULE`` is set (as Celery), or
    when ``config`` (given to ``config_from_object``) names Django's settings."""
    import os  # noqa: PLC0415

    django_config = isinstance(config, str) and config.startswith("django.conf")
    if (config is None and os.environ.get("DJANGO_SETTINGS_MODULE")) or django_config:
        from celeriac.contrib.django.fixup import install  # noqa: PLC0415

        install(app)
