"""Impressions go through a Redis buffer and reach the database in batches, at least once."""

from __future__ import annotations

import copy
import time

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings

from matching.models import Interaction
from matching.services import impressions
from matching.services.impressions import (
    impressions_flush,
    impressions_pending,
    impressions_record,
    impressions_refused,
)
from tests.conftest import client_for, make_person
from users.models import User

URL = "/api/v1/matches/nearby/"
LON, LAT = -79.9959, 40.4406


@pytest.fixture(autouse=True)
def empty_buffer() -> None:
    cache.clear()


def _logged(actor: User) -> list[tuple[int, int, str, str]]:
    return list(
        Interaction.objects.filter(actor=actor, kind="impression").order_by("occurred_at", "position")
        .values_list("target_user_id", "position", "model_version", "variant")
    )


@pytest.mark.django_db
def test_an_answer_waits_in_the_buffer_and_a_flush_writes_it_in_order() -> None:
    me, a, b = (make_person(name, LON, LAT) for name in ("me", "a", "b"))
    impressions_record(actor_id=me.pk, targets=[b.pk, a.pk], surface="nearby", model_version="v3", variant="e1:b")
    impressions_record(actor_id=me.pk, targets=[a.pk], surface="nearby", model_version="v3")
    assert impressions_pending() == 2 and _logged(me) == []

    assert impressions_flush() == 3
    assert _logged(me) == [(b.pk, 0, "v3", "e1:b"), (a.pk, 1, "v3", "e1:b"), (a.pk, 0, "v3", "")]
    assert impressions_pending() == 0
    assert impressions_flush() == 0  # nothing left: nothing written twice


@pytest.mark.django_db
def test_a_nearby_answer_is_logged_through_the_buffer() -> None:
    me = make_person("me", LON, LAT)
    near = make_person("near", LON + 0.001, LAT)
    client_for(me).get(URL)
    assert impressions_pending() == 1
    impressions_flush()
    assert [(t, p) for t, p, _, _ in _logged(me)] == [(near.pk, 0)]


@pytest.mark.django_db
def test_rows_of_a_deleted_account_are_dropped_and_the_rest_written() -> None:
    me, gone, stays = (make_person(name, LON, LAT) for name in ("me", "gone", "stays"))
    impressions_record(actor_id=me.pk, targets=[gone.pk, stays.pk], surface="nearby", model_version="")
    impressions_record(actor_id=gone.pk, targets=[stays.pk], surface="nearby", model_version="")
    gone.delete()
    assert impressions_flush() == 1
    assert [(t, p) for t, p, _, _ in _logged(me)] == [(stays.pk, 1)]


@pytest.mark.django_db
def test_an_entry_the_database_refuses_is_set_aside_without_blocking_the_others() -> None:
    me, a = make_person("me", LON, LAT), make_person("a", LON, LAT)
    impressions_record(actor_id=me.pk, targets=[a.pk], surface="nearby", model_version="")
    impressions_record(actor_id=me.pk, targets=[a.pk], surface="x" * 200, model_version="")  # too long
    impressions_record(actor_id=me.pk, targets=[a.pk], surface="nearby", model_version="")
    assert impressions_flush() == 2
    assert len(_logged(me)) == 2 and impressions_pending() == 0
    refused = cache.client.get_client().lrange(cache.make_key(impressions.FAILED_KEY), 0, -1)
    assert len(refused) == 1 and b"xxxx" in refused[0] and impressions_refused() == 1


@pytest.mark.django_db
def test_with_redis_down_the_answer_writes_its_own_impressions() -> None:
    me, a = make_person("me", LON, LAT), make_person("a", LON, LAT)
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = "redis://127.0.0.1:1/0"  # nothing listens: refused at once
    with override_settings(CACHES=caches):
        impressions_record(actor_id=me.pk, targets=[a.pk], surface="nearby", model_version="v1")
    assert [(t, p) for t, p, _, _ in _logged(me)] == [(a.pk, 0)]


@pytest.mark.django_db
def test_only_one_flush_runs_at_a_time() -> None:
    me, a = make_person("me", LON, LAT), make_person("a", LON, LAT)
    impressions_record(actor_id=me.pk, targets=[a.pk], surface="nearby", model_version="")
    client = cache.client.get_client()
    client.set(cache.make_key(impressions.LOCK_KEY), "another flush", ex=60)
    assert impressions_flush() == 0 and impressions_pending() == 1
    client.delete(cache.make_key(impressions.LOCK_KEY))
    assert impressions_flush() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_a_worker_writes_an_answers_impressions_within_seconds(celery_worker_process: object, settings) -> None:  # type: ignore[no-untyped-def]
    settings.IMPRESSIONS_FLUSH_SECONDS = 0.5
    me = make_person("me", LON, LAT)
    near = make_person("near", LON + 0.001, LAT)
    assert client_for(me).get(URL).status_code == 200  # the first entry schedules the flush
    deadline = time.monotonic() + 30
    while not _logged(me) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [(t, p) for t, p, _, _ in _logged(me)] == [(near.pk, 0)]
    assert impressions_pending() == 0


@pytest.mark.django_db
def test_a_flush_takes_its_share_of_a_backlog_and_leaves_the_rest_to_the_next_task() -> None:
    me, a = make_person("me", LON, LAT), make_person("a", LON, LAT)
    for _ in range(5):
        impressions_record(actor_id=me.pk, targets=[a.pk], surface="nearby", model_version="")
    assert impressions_flush(batch=2, max_seconds=0.0) == 2  # one batch, then the rest is queued
    assert impressions_pending() == 3
    assert impressions_flush(batch=2) == 3 and impressions_pending() == 0


def test_the_buffer_is_trimmed_only_by_the_flush_holding_the_lock() -> None:
    client = cache.client.get_client()
    key, lock = cache.make_key(impressions.BUFFER_KEY), cache.make_key(impressions.LOCK_KEY)
    client.rpush(key, "one", "two")
    client.set(lock, "the other flush", ex=60)
    # A flush whose lock expired and was taken by another must not drop entries it never wrote.
    assert client.eval(impressions._TRIM, 2, lock, key, "a lapsed flush", 1) == 0
    assert client.lrange(key, 0, -1) == [b"one", b"two"]
    assert client.eval(impressions._TRIM, 2, lock, key, "the other flush", 1) == 1
    assert client.lrange(key, 0, -1) == [b"two"]
    assert client.eval(impressions._RELEASE, 1, lock, "a lapsed flush") == 0 and client.get(lock)
    assert client.eval(impressions._RELEASE, 1, lock, "the other flush") == 1 and not client.get(lock)
