"""A person's embedding is refreshed (debounced) when their profile changes, and web processes
apply the refresh to their arrays and index without a rebuild."""

from __future__ import annotations


import numpy as np
import pytest
from django.contrib.gis.geos import Point
from django.core.cache import cache
from django.test import Client

from matching.ml.index import search
from matching.models import EmbeddingSet
from matching.serving import SERVING_SET_KEY, store
from matching.services.embeddings import (
    embeddings_chunk,
    embeddings_finish,
    embeddings_rebuild_start,
    user_embedding_refresh,
    user_embedding_refresh_schedule,
)
from matching.services.training import model_train
from tests.matching.test_registry import small_social_city
from users.models import Profile

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_serving")]


def test_changes_within_the_window_queue_one_refresh(alice: object) -> None:
    cache.clear()
    assert user_embedding_refresh_schedule(user_id=alice.pk) is True  # type: ignore[attr-defined]
    assert user_embedding_refresh_schedule(user_id=alice.pk) is False  # type: ignore[attr-defined]


def served_city() -> EmbeddingSet:
    """The small social city with a trained, active model and a ready embedding set (no worker)."""
    small_social_city()
    version = model_train(epochs=1, folds=1, activate=True)
    embedding_set = embeddings_rebuild_start(version=version)
    embeddings_chunk(set_id=embedding_set.pk, start=0, end=embedding_set.users)
    embeddings_finish(set_id=embedding_set.pk)
    embedding_set.refresh_from_db()
    return embedding_set


def test_nearby_is_reranked_by_the_ranking_head_when_a_model_is_served() -> None:
    served_city()
    me = Profile.objects.order_by("user_id").first().user
    client = Client()
    client.force_login(me)
    body = client.get("/api/v1/matches/nearby/", {"radius_km": 20}).json()
    assert body["ranker"] == "model" and body["model_version"] == "v1"
    similarities = [r["similarity"] for r in body["results"]]
    assert len(similarities) >= 2 and max(similarities) == 1.0 and min(similarities) == 0.0
    assert all(0 <= r["score"] <= 1 for r in body["results"])


def test_a_refreshed_embedding_reaches_the_served_arrays_and_index() -> None:
    embedding_set = served_city()
    assert embedding_set.status == "ready"
    serving = store.current()
    assert serving is not None
    person = Profile.objects.order_by("user_id").first()
    before, _ = serving.vectors(np.array([person.user_id]), "target")
    # Move across town and change every interest.
    person.location = Point(-79.70, 40.60, srid=4326)
    person.interests = ["gaming", "nightlife"]
    person.save()
    assert user_embedding_refresh(user_id=person.user_id) is True
    store._checked = 0.0
    serving = store.current()
    after, found = serving.vectors(np.array([person.user_id]), "target")
    assert found[0] and not np.allclose(before, after)
    assert person.user_id in serving.overlay
    _, nearest = search(serving.index, after, 1)
    assert nearest[0, 0] == person.user_id
    assert cache.get(SERVING_SET_KEY).startswith(f"{embedding_set.pk}:")


def test_no_served_set_means_nothing_to_refresh(alice: object) -> None:
    assert user_embedding_refresh(user_id=alice.pk) is False  # type: ignore[attr-defined]


def test_a_newer_set_retires_the_older_ones_of_its_version_and_deletes_their_files() -> None:
    import datetime as dt

    from matching.serving import set_dir

    first = served_city()
    assert set_dir(first).is_dir() and not (set_dir(first) / "inputs").exists()  # only chunks read them
    EmbeddingSet.objects.filter(pk=first.pk).update(created_at=first.created_at - dt.timedelta(hours=1))
    second = embeddings_rebuild_start(version=first.model_version)
    embeddings_chunk(set_id=second.pk, start=0, end=second.users)
    embeddings_finish(set_id=second.pk)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("retired", "ready")
    assert not set_dir(first).exists() and (set_dir(second) / "index.faiss").is_file()
    store._checked = 0.0
    assert store.current().set_id == second.pk
