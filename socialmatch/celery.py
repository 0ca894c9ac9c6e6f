"""The Celery application: settings under the ``CELERY_`` namespace, tasks found in every app."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "socialmatch.settings.local")

app = Celery("socialmatch")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
