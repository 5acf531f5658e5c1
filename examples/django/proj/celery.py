"""The project's celeriac app: configured from Django's settings (``CELERY_`` names)."""

import os

from celeriac import Celery

# the settings module of the ``celeriac`` program (and of the worker it starts)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")

# A string, so that a worker child needs no pickled configuration; namespace="CELERY":
# the settings of celeriac are the ones named CELERY_<setting> in settings.py.
app.config_from_object("django.conf:settings", namespace="CELERY")

# The tasks modules of every installed Django app (looked for when the worker starts).
app.autodiscover_tasks()


@app.task(bind=True, ignore_result=True)
def debug_task(self):
    print(f"Request: {self.request!r}")
