"""Utilities under the paths Celery users import from."""
