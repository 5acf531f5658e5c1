"""The app's tasks: Celery-style ones (``@shared_task``, found by ``autodiscover_tasks``),
and Django's own (``@task``, run by the same workers through ``TasksBackend``)."""

from celeriac import shared_task
from demoapp.models import Widget

try:
    from django.tasks import task  # Django 6
except ImportError:  # before Django 6: the django-tasks package
    from django_tasks import task


@shared_task
def add(x, y):
    return x + y


@shared_task
def mul(x, y):
    return x * y


@shared_task
def xsum(numbers):
    return sum(numbers)


@shared_task
def count_widgets():
    return Widget.objects.count()


@shared_task
def rename_widget(widget_id, name):
    w = Widget.objects.get(id=widget_id)
    w.name = name
    w.save()


@shared_task
def found_connection_closed():
    """Whether this task found its thread's database connection closed (the worker
    closes it around each task), then uses it."""
    from django.db import connection

    closed = connection.connection is None
    Widget.objects.exists()
    return closed


@shared_task(
    bind=True,
    autoretry_for=(Exception,),
    retry_kwargs={"max_retries": 2, "countdown": 10 * 60},  # two retries, ten minutes apart
)
def error_task(self):
    raise Exception("Test error")


@shared_task(
    bind=True,
    autoretry_for=(Exception,),
    retry_backoff=5,  # first retry after 5 s, then 10 s, 20 s
    retry_jitter=False,
    retry_kwargs={"max_retries": 3},
)
def error_backoff_test(self):
    raise Exception("Test error")


# -- Django's task framework ------------------------------------------------------------
@task()
def widget_report(prefix):
    """How many widgets have names starting with ``prefix`` (runs on a celeriac worker)."""
    return Widget.objects.filter(name__startswith=prefix).count()


@task(takes_context=True)
def attempt_number(context):
    return context.attempt


@task(queue_name="reports", priority=50)
def slow_report(text):
    return text.upper()


@task()
async def async_total(numbers):
    return sum(numbers)


@task()
def broken(message):
    raise ValueError(message)
