# app.py: a Flask app that sends tasks; the worker runs them in its own processes.
from typing import Any

from flask import Flask, current_app

from celeriac import Celery, Middleware


class FlaskContext(Middleware):
    """Runs every task inside the Flask app's context (current_app, extensions)."""

    def __init__(self, flask_app: Flask) -> None:
        self.flask_app = flask_app
        self.contexts: dict[str, Any] = {}

    def before_task(self, task: Any, request: Any) -> None:
        self.contexts[request.id] = context = self.flask_app.app_context()
        context.push()

    def after_task(self, task: Any, request: Any, outcome: Any) -> None:
        self.contexts.pop(request.id).pop()


def make_celery(flask_app: Flask) -> Celery:
    app = Celery(flask_app.name)
    app.config_from_object(flask_app.config["CELERY"])
    app.add_middleware(FlaskContext(flask_app))
    flask_app.extensions["celery"] = app
    return app


flask_app = Flask(__name__)
flask_app.config["CELERY"] = {"broker_url": "memory://", "task_ignore_result": False}
celery_app = make_celery(flask_app)


@celery_app.task
def add(x: int, y: int) -> int:
    assert current_app.name == flask_app.name  # inside the app context
    return x + y


@flask_app.post("/add/<int:x>/<int:y>")
def start_add(x: int, y: int) -> dict[str, str]:
    return {"task_id": add.delay(x, y).id}


@flask_app.get("/tasks/<task_id>")
def task_status(task_id: str) -> dict[str, object]:
    result = celery_app.AsyncResult(task_id)
    return {"state": result.state, "result": result.result if result.ready() else None}


if __name__ == "__main__":  # what the tests run: the app, a worker, a test client
    from celeriac.testing import TestWorker

    with TestWorker(celery_app) as worker:
        client = flask_app.test_client()
        task_id = client.post("/add/2/3").get_json()["task_id"]
        worker.join()
        assert client.get(f"/tasks/{task_id}").get_json() == {"state": "SUCCESS", "result": 5}
