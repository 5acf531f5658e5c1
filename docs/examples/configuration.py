from celeriac import Celery
from celeriac.exceptions import ImproperlyConfigured


class Config:  # any object or module: its lowercase attributes are settings
    broker_url = "memory://"
    task_default_queue = "default"
    worker_prefetch_multiplier = 1


app = Celery("config")
app.config_from_object(Config)
app.conf.update(task_acks_late=True, result_expires=3600)
assert app.conf.task_default_queue == "default"
assert app.conf["result_expires"] == 3600

# Celery's old uppercase names work too, and Django-style namespaces
app.conf.update(CELERYD_PREFETCH_MULTIPLIER=2)
assert app.conf.worker_prefetch_multiplier == 2

# a misspelt name is an error that names the real one, not a setting silently ignored
try:
    app.conf.update(task_acks_lte=True)
except ImproperlyConfigured as exc:
    message = str(exc)
else:
    raise AssertionError("a misspelt setting was accepted")
print(message)  # unknown setting 'task_acks_lte'; did you mean 'task_acks_late' or ...?
assert "did you mean 'task_acks_late'" in message
