"""celeriac: a distributed task queue with Celery's API and wire protocol."""

__version__ = "0.1.0"
