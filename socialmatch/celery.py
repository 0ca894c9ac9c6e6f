"""The Celery application: settings under the ``CELERY_`` namespace, tasks found in every app."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "socialmatch.settings.local")

app = Celery("socialmatch")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def queue_purge(queue: str) -> int:
    """Drop the tasks waiting in ``queue``; how many there were."""
    with app.connection_for_write() as conn:
        return int(conn.default_channel.queue_purge(queue) or 0)
