"""GET /health/ tells whether every required part answers: 200 when all do, 503 otherwise."""

from __future__ import annotations

import copy

import pytest
from django.conf import settings
from django.test import Client, override_settings


def broken_cache() -> dict[str, dict[str, object]]:
    caches = copy.deepcopy(settings.CACHES)
    # Nothing listens on port 1: the connection is refused at once.
    caches["default"]["LOCATION"] = "redis://127.0.0.1:1/0"
    return caches


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_health_is_200_when_every_part_answers(celery_worker_process: object) -> None:
    response = Client().get("/health/")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    checks = body["checks"]
    assert checks["database"]["ok"] and checks["redis"]["ok"] and checks["celery"]["ok"]
    assert checks["postgis"]["version"].startswith("3.")
    assert checks["celery"]["workers"]
    assert "active_version" in checks["model"]
    assert isinstance(checks["impressions"]["pending"], int) and isinstance(checks["impressions"]["refused"], int)


@pytest.mark.django_db
def test_health_is_503_when_redis_is_down() -> None:
    with override_settings(CACHES=broken_cache()):
        response = Client().get("/health/")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"]["ok"] is False
    assert "Connection" in body["checks"]["redis"]["error"]
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_health_reports_the_served_index_size_and_embedding_version(
    tmp_path: object, settings: object,
) -> None:
    from django.core.cache import cache

    from matching.serving import store
    from tests.matching.test_refresh import served_city

    settings.MEDIA_ROOT = tmp_path  # type: ignore[attr-defined]
    cache.clear()
    store.reset()
    before = Client().get("/health/").json()["checks"]["index"]
    assert before["ok"] and before["vectors"] is None and before["embedding_version"] is None
    embedding_set = served_city()
    store.reset()
    index = Client().get("/health/").json()["checks"]["index"]
    assert index["ok"] and index["required"] is False
    assert index["vectors"] == 16 and index["embedding_set"] == embedding_set.pk
    assert index["embedding_version"] == "v1" and index["index_kind"] == "IndexIDMap2"
