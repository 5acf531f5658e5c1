"""Settings of the example project (as ``django-admin startproject`` makes them, plus
the ``CELERY_`` settings and Django's ``TASKS``).

The broker, the result backend and the database file can be set from the environment
(``DEMO_BROKER_URL``, ``DEMO_RESULT_BACKEND``, ``DEMO_DATABASE``, and the backend of
Django's tasks, ``DEMO_TASKS_BACKEND``), as the tests do.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# -- celeriac (the CELERY_ namespace of proj/celery.py) --------------------------------
CELERY_BROKER_URL = os.environ.get("DEMO_BROKER_URL", "redis://localhost:6379/0")
CELERY_RESULT_BACKEND = os.environ.get("DEMO_RESULT_BACKEND", "redis://localhost:6379/0")
# Only add pickle to this list if your broker is secured from unwanted access.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"

# -- Django's task framework, run by the same workers ----------------------------------
TASKS = {
    "default": {
        "BACKEND": os.environ.get("DEMO_TASKS_BACKEND", "celeriac.contrib.django.TasksBackend"),
        "QUEUES": ["default", "reports"],
        "OPTIONS": {"APP": "proj.celery:app"},
    }
}

# -- Django -----------------------------------------------------------------------------
# SECURITY WARNING: keep the secret key used in production secret!
SECRET_KEY = "example-only-not-a-secret"
DEBUG = True
ALLOWED_HOSTS: list[str] = []

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "demoapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "proj.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "proj.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DATABASE", str(BASE_DIR / "db.sqlite3")),
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
