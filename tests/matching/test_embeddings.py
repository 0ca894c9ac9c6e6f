"""Embeddings of every user through a real Celery worker, their FAISS index, and hot-swapping."""

from __future__ import annotations

import time

import numpy as np
import pytest
from django.core.cache import cache

from matching.ml.index import build_index, remove, search, upsert
from matching.models import EmbeddingSet, ModelVersion
from matching.serving import store
from matching.serving import SERVING_SET_KEY
from matching.services.training import model_train
from matching.tasks import embeddings_rebuild_task
from tests.matching.test_registry import small_social_city
from users.models import User


def wait_for(embedding_set_filter: dict[str, object], timeout: float = 90.0) -> EmbeddingSet:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = EmbeddingSet.objects.filter(**embedding_set_filter).exclude(status="building").first()
        if found is not None:
            return found
        time.sleep(0.5)
    pytest.fail("the embedding set was not finished in time")


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_rebuild_through_a_real_worker_publishes_a_searchable_index(celery_worker_process: object) -> None:
    small_social_city()
    version = model_train(epochs=1, folds=1, activate=True)
    store.reset()
    cache.delete(SERVING_SET_KEY)
    assert store.current() is None  # nothing published yet: callers use rules
    embeddings_rebuild_task.delay(version.pk).get(timeout=60)
    embedding_set = wait_for({"model_version": version})
    assert embedding_set.status == "ready", embedding_set.error
    assert embedding_set.users == 16 and embedding_set.chunks_done == embedding_set.chunks_total == 1
    store.reset()
    serving = store.current()
    assert serving is not None and serving.version == version.name and len(serving.ids) == 16
    assert np.allclose(np.linalg.norm(serving.target, axis=1), 1.0, atol=1e-4)
    scores, ids = search(serving.index, np.asarray(serving.seed[:1]), 5)
    assert set(ids[0]) <= set(serving.ids.tolist()) and len(ids[0]) == 5
    # A second build under a newly activated version is picked up without a restart.
    second = model_train(epochs=1, folds=1, activate=True)
    embeddings_rebuild_task.delay(second.pk).get(timeout=60)
    wait_for({"model_version": second})
    store._checked = 0.0
    assert store.current().version == second.name
    assert ModelVersion.objects.filter(is_active=True).get() == second
    # The APIs answer from the model now.
    staff = User.objects.create(username="staff", is_staff=True)
    first_user, other_user = (int(i) for i in store.current().ids[:2])
    from matching.services.similarity import similar_users, similarity_between

    pair = similarity_between(actor=staff, seed_user_id=first_user, target_user_id=other_user)
    assert pair.ranker == "model" and pair.cosine is not None and pair.model_version == second.name
    version, alike = similar_users(actor=staff, user_id=first_user, limit=5)
    assert version == second.name and len(alike) == 5 and first_user not in [u for u, _ in alike]


def test_exact_index_matches_brute_force_and_supports_updates() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1000, 1500)
    index = build_index(vectors, ids)
    _, found = search(index, vectors[:3], 10)
    exact = ids[np.argsort(-(vectors[:3] @ vectors.T), axis=1)[:, :10]]
    assert (found == exact).all()
    upsert(index, -vectors[0], np.array([1000]))
    _, found = search(index, vectors[:1], 1)
    assert found[0, 0] != 1000
    assert remove(index, np.array([1001])) == 1 and index.ntotal == 499


def test_ivf_index_for_large_sets_keeps_recall() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(200, 32))
    vectors = (centres[rng.integers(0, 200, 60_000)] + rng.normal(scale=0.3, size=(60_000, 32))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(60_000)
    index = build_index(vectors, ids)
    assert type(index).__name__ == "IndexIVFFlat"
    queries = vectors[:50]
    _, approx = search(index, queries, 20)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :20]
    recall = np.mean([len(set(a) & set(e)) / 20 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95


@pytest.mark.django_db
def test_a_chunk_run_twice_counts_once(tmp_path, settings) -> None:  # type: ignore[no-untyped-def]
    from matching.models import EmbeddingSet
    from matching.services.embeddings import embeddings_chunk, embeddings_rebuild_start
    from matching.services.training import model_train
    from tests.matching.test_registry import small_social_city

    settings.MEDIA_ROOT = tmp_path
    small_social_city()
    version = model_train(epochs=1, folds=1)
    embedding_set = embeddings_rebuild_start(version=version)
    embeddings_chunk(set_id=embedding_set.pk, start=0, end=embedding_set.users)
    embeddings_chunk(set_id=embedding_set.pk, start=0, end=embedding_set.users)  # redelivered
    assert EmbeddingSet.objects.get(pk=embedding_set.pk).chunks_done == 1
