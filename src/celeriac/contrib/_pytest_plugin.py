"""The ``pytest11`` entry point of celeriac: registers :mod:`celeriac.contrib.pytest`
(Celery's fixture names, on celeriac) unless Celery's own plugin is active or the suite
already named celeriac's."""

from __future__ import annotations

import importlib
from typing import Any

#: the module name under which Celery's plugin is registered by -p or pytest_plugins
CELERY_PLUGIN = "celery.contrib.pytest"
FIXTURES = "celeriac.contrib.pytest"


def celery_plugin_active(pluginmanager: Any) -> bool:
    """True when Celery's own pytest plugin is registered (under any name)."""
    if pluginmanager.has_plugin(CELERY_PLUGIN):
        return True
    return any(
        getattr(plugin, "__name__", None) == CELERY_PLUGIN for plugin in pluginmanager.get_plugins()
    )


def pytest_configure(config: Any) -> None:
    manager = config.pluginmanager
    if celery_plugin_active(manager):
        return  # the suite asked for Celery's fixtures: the same names, so not ours
    plugin = importlib.import_module(FIXTURES)
    if not manager.is_registered(plugin):
        manager.register(plugin, FIXTURES)  # (pytest_configure is historic: it runs too)


__all__ = ["celery_plugin_active", "pytest_configure"]
