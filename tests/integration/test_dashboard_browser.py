"""The dashboard in a real browser (Debian's Chromium, headless, driven by Playwright),
against a real worker and a real ``celeriac dashboard`` process on SQLite: the page lists
the worker, a task appears and reaches SUCCESS without a reload, a failing task shows its
traceback, revoke from the page revokes (the task never runs; the worker's consume
button brings it to the worker, which drops it), and the read-only role
finds every button disabled while the server refuses its POSTs."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import chord
from support import DashboardProcess, WorkerProcess, wait_until, write_module

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOST = "dash1@localhost"
TASKS = """
import pathlib
from celeriac import Celery
HERE = pathlib.Path(__file__).resolve().parent
app = Celery("dashtasks", broker=f"sqlite:///{HERE / 'b.db'}")
app.conf.task_send_sent_event = True

@app.task(name="dash.add")
def add(x, y):
    return x + y

@app.task(name="dash.total")
def total(values):
    return sum(values)

@app.task(name="dash.fail")
def fail(x):
    raise ValueError(f"no good: {x}")

@app.task(name="dash.touch")
def touch(name):
    (HERE / name).write_text("ran")
"""


def browser_or_skip() -> Any:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    return sync_api


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any, str]]:
    cwd = tmp_path_factory.mktemp("dashboard")
    write_module(cwd, "dashtasks", TASKS)
    env = {"PYTHONPATH": str(cwd)}
    sys.path.insert(0, str(cwd))
    try:
        import dashtasks  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(cwd))
    worker = WorkerProcess(cwd, "dashtasks", "-c", "2", "-n", HOST, "-l", "INFO", env=env)
    dashboard = DashboardProcess(
        cwd,
        "dashtasks",
        "--basic-auth",
        "admin:admin-secret",
        "--readonly-basic-auth",
        "viewer:viewer-secret",
        "--refresh",
        "0.2",
        "--poll-interval",
        "0.5",
        env=env,
    )
    try:
        worker.start()
        dashboard.start()
        yield cwd, dashtasks.app, dashboard.url
    finally:
        dashboard.stop()
        worker.stop()
        dashtasks.app.close()


def test_the_dashboard_in_a_browser(site: tuple[Path, Any, str]) -> None:
    sync_api = browser_or_skip()
    cwd, app, url = site
    expect = sync_api.expect
    profiles = [tempfile.mkdtemp(prefix="dash-chromium-") for _ in range(2)]
    try:
        with sync_api.sync_playwright() as playwright:

            def open_as(user: str, password: str, profile: str) -> Any:
                return playwright.chromium.launch_persistent_context(
                    profile,
                    executable_path=CHROMIUM,
                    args=ARGS,
                    headless=True,
                    http_credentials={"username": user, "password": password},
                    viewport={"width": 1280, "height": 720},
                )

            admin = open_as("admin", "admin-secret", profiles[0])
            try:
                page = admin.new_page()
                page.on("dialog", lambda dialog: dialog.accept())
                page.set_default_timeout(20_000)
                admin_checks(page, expect, cwd, app, url)
            finally:
                admin.close()
            viewer = open_as("viewer", "viewer-secret", profiles[1])
            try:
                page = viewer.new_page()
                page.set_default_timeout(20_000)
                read_only_checks(page, expect, url)
            finally:
                viewer.close()
    finally:
        for profile in profiles:
            shutil.rmtree(profile, ignore_errors=True)


def admin_checks(page: Any, expect: Any, cwd: Path, app: Any, url: str) -> None:
    # the worker is listed, online, with its pool
    page.goto(url + "#/workers")
    row = page.locator(f'tr[data-worker="{HOST}"]')
    expect(row).to_contain_text("online")
    expect(row).to_contain_text("prefork")
    expect(page.locator("#role")).to_have_text("admin")

    # a task appears on the open tasks page and reaches SUCCESS by live updates alone
    page.goto(url + "#/tasks")
    expect(page.locator("#tasks")).to_be_visible()
    done = app.send_task("dash.add", (20, 22))
    assert done.get(timeout=20) == 42
    task_row = page.locator(f'tr[data-task="{done.id}"]')
    expect(task_row).to_have_attribute("data-state", "SUCCESS")
    expect(task_row).to_contain_text("42")

    # the queue with its length, consumer, and tasks in and out (task-sent events are on)
    page.goto(url + "#/queues")
    queue = page.locator('tr[data-queue="celery"]')
    expect(queue).to_contain_text(HOST)
    expect(queue).to_contain_text("out: max")
    expect(queue).to_contain_text("in: max")  # counted from task-sent events, not derived
    expect(page.locator("#rates-legend")).to_contain_text("derived")

    # a chord's header is drawn as one group feeding its body
    body = chord([app.signature("dash.add", (n, n)) for n in range(2)])(app.signature("dash.total"))
    assert body.get(timeout=20) == 2
    page.goto(url + f"#/task/{body.id}")
    expect(page.locator("#canvas-graph .group-node")).to_contain_text("group of 2")

    # a failing task shows its traceback on its page
    failed = app.send_task("dash.fail", ("x",))
    with pytest.raises(Exception, match="no good"):
        failed.get(timeout=20)
    page.goto(url + f"#/task/{failed.id}")
    expect(page.locator("#traceback")).to_contain_text("ValueError: no good: x")
    expect(page.locator('button[data-action="retry"]')).to_be_enabled()

    # revoke from the page a task waiting on a queue no worker consumes; then the
    # worker's consume button: the worker takes the task and drops it; it never ran
    marker = "revoked-marker"
    later = app.send_task("dash.touch", (marker,), queue="held")
    page.goto(url + f"#/task/{later.id}")
    expect(page.locator("#task-fields")).to_contain_text("PENDING")
    page.locator('button[data-action="revoke"]').click()
    expect(page.locator("h1 .state")).to_have_text("REVOKED")
    assert wait_until(lambda: later.state == "REVOKED", 10, "the backend to say REVOKED")
    page.goto(url + "#/workers")
    row = page.locator(f'tr[data-worker="{HOST}"]')
    row.locator("input").fill("held")
    row.locator('button[data-action="add-consumer"]').click()
    expect(page.locator(f'tr[data-worker="{HOST}"]')).to_contain_text("held")

    def dropped() -> bool:  # its task-revoked event names the worker
        answer = page.request.get(url + f"api/tasks/{later.id}").json()["task"]
        return bool(answer["worker"] == HOST and answer["state"] == "REVOKED")

    wait_until(dropped, 20, "the worker's task-revoked event")
    assert not (cwd / marker).exists()


def read_only_checks(page: Any, expect: Any, url: str) -> None:
    page.goto(url + "#/workers")
    expect(page.locator("#role")).to_have_text("read-only")
    row = page.locator(f'tr[data-worker="{HOST}"]')
    expect(row).to_contain_text("online")
    for name in ("pool-grow", "pool-shrink", "add-consumer", "cancel-consumer", "shutdown"):
        expect(row.locator(f'button[data-action="{name}"]')).to_be_disabled()
    page.goto(url + "#/tasks")
    first = page.locator("tr[data-task] a").first
    first.click()
    expect(page.locator('button[data-action="revoke"]')).to_be_disabled()
    expect(page.locator('button[data-action="terminate"]')).to_be_disabled()
    # the server refuses it too, header or not
    headers = {"X-Celeriac-Dashboard": "1"}
    refused = page.request.post(url + f"api/workers/{HOST}/shutdown", headers=headers)
    assert refused.status == 403 and "read-only" in refused.text()
    refused = page.request.post(url + "api/queues/celery/purge", headers=headers)
    assert refused.status == 403
