import os
import uuid

import psycopg

from celeriac import Celery
from celeriac.testing import TestWorker

server = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
schema = f"example_{uuid.uuid4().hex[:8]}"  # your own: ?schema=celeriac is the default
app = Celery("proj", broker=f"{server}?schema={schema}")  # results in the same database


@app.task
def welcome(user_id: int) -> str:
    return f"welcome, user {user_id}"


with psycopg.connect(server) as conn:
    conn.execute("CREATE TEMP TABLE users (id int)")
    try:
        with app.transaction(conn):  # one transaction: the insert and the task
            conn.execute("INSERT INTO users VALUES (1)")
            welcome.delay(1)
            raise RuntimeError("something failed")
    except RuntimeError:
        pass  # rolled back: no user, and the task never existed
    with app.transaction(conn):
        conn.execute("INSERT INTO users VALUES (2)")
        sent = welcome.delay(2)  # queued when the block commits

with TestWorker(app):
    assert sent.get(timeout=10) == "welcome, user 2"

app.close()
with psycopg.connect(server, autocommit=True) as conn:
    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
