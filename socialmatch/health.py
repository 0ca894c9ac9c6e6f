"""GET /health/: is every part this service needs answering right now?

Each check returns quickly even when its part is down (short socket timeouts), so a load balancer
polling this endpoint is never stuck behind a dead dependency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_redis import get_redis_connection

from socialmatch.celery import app as celery_app


def check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def check_postgis() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT postgis_lib_version()")
        (version,) = cursor.fetchone()
    return {"version": version}


def check_redis() -> dict[str, Any]:
    client = get_redis_connection("default")
    client.ping()
    return {"url": _redact(settings.REDIS_URL)}


def check_celery() -> dict[str, Any]:
    # Ask the broker first with a short timeout: a control ping against a dead broker retries for
    # several seconds before giving up.
    redis.Redis.from_url(
        settings.CELERY_BROKER_URL, socket_connect_timeout=1, socket_timeout=1
    ).ping()
    replies = celery_app.control.ping(timeout=settings.HEALTH_CELERY_TIMEOUT)
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        raise RuntimeError("no Celery worker answered the ping")
    return {"workers": workers}


def check_model() -> dict[str, Any]:
    """The active model version (None before the first training: rules serve meanwhile)."""
    from matching.models import ModelVersion

    version = ModelVersion.objects.filter(is_active=True).values("name", "created_at").first()
    return {"active_version": version["name"] if version else None}


def check_index() -> dict[str, Any]:
    """What this process serves: the published embedding set, its model version and the number
    of vectors in its index (None before the first set is published: rules serve meanwhile)."""
    from matching.serving import store

    serving = store.current()
    if serving is None:
        return {"embedding_set": None, "embedding_version": None, "vectors": None}
    return {
        "embedding_set": serving.set_id, "embedding_version": serving.version,
        "vectors": int(serving.index.ntotal), "index_kind": type(serving.index).__name__,
    }


def check_impressions() -> dict[str, Any]:
    """Answers whose impressions wait in the Redis buffer (a growing number: no worker flushes),
    and entries the database refused (set aside, each logged)."""
    from matching.services.impressions import impressions_pending, impressions_refused

    return {"pending": impressions_pending(), "refused": impressions_refused()}


CHECKS: dict[str, Callable[[], dict[str, Any]]] = {
    "database": check_database,
    "postgis": check_postgis,
    "redis": check_redis,
    "celery": check_celery,
    "model": check_model,
    "index": check_index,
    "impressions": check_impressions,
}


def _redact(url: str) -> str:
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def run_checks() -> tuple[bool, dict[str, dict[str, Any]]]:
    results: dict[str, dict[str, Any]] = {}
    healthy = True
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            result = {"ok": True, **check()}
        except Exception as exc:  # noqa: BLE001 - any failure means "this part is down"
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result["required"] = name in settings.HEALTH_REQUIRED
        result["ms"] = round((time.perf_counter() - started) * 1000, 1)
        results[name] = result
        if result["required"] and not result["ok"]:
            healthy = False
    return healthy, results


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    healthy, results = run_checks()
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": results},
        status=200 if healthy else 503,
    )
