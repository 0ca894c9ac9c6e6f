"""Embeddings of every user for a model version, computed in chunks on Celery, and their index.

1. ``embeddings_rebuild_start`` computes every user's tower inputs once (features and id bags),
   saves them as plain arrays next to the set, and fans out one chunk task per
   ``CHUNK_USERS`` users (a Celery chord), so more workers finish sooner.
2. ``embeddings_chunk`` memory-maps the inputs, runs both towers on its rows and saves them.
   Next to them it saves what serving reads instead of querying per request: everyone's unit
   preference vector (``pref.npy``), each venue's visitors in the whole city
   (``venue_ids.npy``, ``venue_visitors.npy``) and each person's venues, activities,
   availability and pinged spots (``person_rows/``, ``matching.ml.person_rows``).
3. ``embeddings_finish`` (the chord's callback) joins the chunks, builds the FAISS index over the
   target embeddings, saves everything atomically and publishes the set in Redis, where web
   processes notice it without a restart.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from django.core.cache import cache
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from matching.feature_store import load_city
from matching.ml.features import SCHEMA, user_features
from matching.ml.index import build_index, save_array, save_index
from matching.ml.inputs import UserInputs
from matching.ml.model import ModelConfig
from matching.ml.person_rows import PersonRows
from matching.ml.train import embed_users
from matching.models import EmbeddingSet, ModelVersion
from matching.services.registry import model_version_load
from matching.serving import (
    PERSON_ROWS_DIR,
    SERVING_SET_KEY,
    embedding_key,
    refresh_log_key,
    set_dir,
)

CHUNK_USERS = 50_000


def _save_inputs(directory: Path, inputs: UserInputs) -> None:
    arrays = {
        "features": inputs.features, "cells": inputs.cells, "venue_keys": inputs.venue_keys,
        "user_keys": inputs.user_keys,
        "venues_indptr": inputs.venues.indptr, "venues_indices": inputs.venues.indices, "venues_data": inputs.venues.data,
        "friends_indptr": inputs.friends.indptr, "friends_indices": inputs.friends.indices, "friends_data": inputs.friends.data,
    }
    for name, array in arrays.items():
        save_array(array, directory / "inputs" / f"{name}.npy")


def _load_inputs(directory: Path) -> UserInputs:
    def load(name: str) -> np.ndarray:
        return np.load(directory / "inputs" / f"{name}.npy", mmap_mode="r", allow_pickle=False)

    features = load("features")
    n = features.shape[0]
    venue_keys = load("venue_keys")
    venues = sp.csr_matrix((load("venues_data"), load("venues_indices"), load("venues_indptr")), shape=(n, len(venue_keys)))
    friends = sp.csr_matrix((load("friends_data"), load("friends_indices"), load("friends_indptr")), shape=(n, n))
    return UserInputs(features=features, venues=venues, friends=friends, cells=load("cells"),
                      venue_keys=venue_keys, user_keys=load("user_keys"))


def preference_vectors(features: np.ndarray) -> np.ndarray:
    """Unit-length preference group of the features (the pair features' interest cosine and
    Jaccard read it), float32."""
    pref = np.asarray(features[:, SCHEMA.group_slices()["preference"]], dtype=np.float32)
    norms = np.linalg.norm(pref, axis=1, keepdims=True)
    return np.divide(pref, norms, out=np.zeros_like(pref), where=norms > 0)


def embeddings_rebuild_start(*, version: ModelVersion) -> EmbeddingSet:
    """Compute everyone's tower inputs and enqueue the chunk tasks (after this transaction commits)."""
    from celery import chord

    from matching.tasks import embeddings_chunk_task, embeddings_finish_task

    config = ModelConfig.from_dict(version.config["model"])
    taken_at = time.time()  # before reading: a row written meanwhile is in the city or after this
    city = load_city()
    features = user_features(city, timezone.now().timestamp())
    inputs = UserInputs.build(city, features, config)
    person_rows = PersonRows.from_city(city, taken_at=taken_at)
    n = inputs.n_users
    ranges = [(start, min(start + CHUNK_USERS, n)) for start in range(0, n, CHUNK_USERS)]
    with transaction.atomic():
        embedding_set = EmbeddingSet.objects.create(model_version=version, users=n, chunks_total=len(ranges))
        directory = set_dir(embedding_set)
        _save_inputs(directory, inputs)
        save_array(preference_vectors(features), directory / "pref.npy")
        save_array(city.venue_ids.astype(np.int64), directory / "venue_ids.npy")
        save_array(person_rows.visitors_per_venue(city.venue_ids), directory / "venue_visitors.npy")
        person_rows.save(directory / PERSON_ROWS_DIR)
        header = [embeddings_chunk_task.si(embedding_set.pk, start, end) for start, end in ranges]
        transaction.on_commit(lambda: chord(header)(embeddings_finish_task.si(embedding_set.pk)))
    return embedding_set


def embeddings_chunk(*, set_id: int, start: int, end: int) -> None:
    """Both towers over rows ``start:end``; idempotent (a retried chunk rewrites its own files)."""
    embedding_set = EmbeddingSet.objects.select_related("model_version").get(pk=set_id)
    directory = set_dir(embedding_set)
    model = model_version_load(embedding_set.model_version)
    inputs = _load_inputs(directory)
    rows = np.arange(start, end)
    sub = UserInputs(
        features=np.asarray(inputs.features[start:end]), venues=inputs.venues[rows], friends=inputs.friends[rows],
        cells=np.asarray(inputs.cells[start:end]), venue_keys=np.asarray(inputs.venue_keys),
        user_keys=np.asarray(inputs.user_keys),
    )
    seed, target = embed_users(model, sub)
    save_array(seed, directory / "chunks" / f"{start:010d}.seed.npy")
    save_array(target, directory / "chunks" / f"{start:010d}.target.npy")
    # Count the chunk files rather than add one: a chunk run twice (a redelivered task) must not
    # count twice. Concurrent chunks each see at least their own file; the largest count wins.
    done = sum(1 for _ in (directory / "chunks").glob("*.target.npy"))
    EmbeddingSet.objects.filter(pk=set_id).update(chunks_done=Greatest(F("chunks_done"), done))


RETIRE_AFTER = 600  # seconds a replaced set stays on disk: web processes still serving it switch within seconds


def embedding_sets_retire(*, keep: EmbeddingSet) -> list[int]:
    """Delete the files of older sets of ``keep``'s model version, ready or failed, created more
    than ``RETIRE_AFTER`` seconds before it, and mark them retired; returns their ids.

    Each version keeps its newest ready set (rollbacks and A/B arms serve from it). Sets shared
    with a minor version are hard links: deleting one side leaves the other's files intact.
    """
    older = EmbeddingSet.objects.filter(
        model_version=keep.model_version,
        status__in=[EmbeddingSet.Status.READY, EmbeddingSet.Status.FAILED],
        created_at__lt=keep.created_at - dt.timedelta(seconds=RETIRE_AFTER),
    ).exclude(pk=keep.pk)
    retired = []
    for old in older:
        shutil.rmtree(set_dir(old), ignore_errors=True)
        retired.append(old.pk)
    EmbeddingSet.objects.filter(pk__in=retired).update(status=EmbeddingSet.Status.RETIRED)
    return retired


def embeddings_finish(*, set_id: int) -> EmbeddingSet:
    """Join the chunks, build and save the index, and publish the set for serving."""
    embedding_set = EmbeddingSet.objects.select_related("model_version").get(pk=set_id)
    directory = set_dir(embedding_set)
    try:
        chunks = sorted((directory / "chunks").glob("*.seed.npy"))
        seed = np.concatenate([np.load(p, allow_pickle=False) for p in chunks])
        target = np.concatenate([np.load(str(p).replace(".seed.", ".target."), allow_pickle=False) for p in chunks])
        ids = np.load(directory / "inputs" / "user_keys.npy", allow_pickle=False)
        if len(seed) != len(ids):
            raise RuntimeError(f"{len(seed)} embeddings for {len(ids)} users: a chunk is missing")
        save_array(ids, directory / "ids.npy")
        save_array(seed, directory / "seed.npy")
        save_array(target, directory / "target.npy")
        index = build_index(target, ids)
        save_index(index, directory / "index.faiss")
        shutil.rmtree(directory / "chunks", ignore_errors=True)
    except Exception as exc:
        EmbeddingSet.objects.filter(pk=set_id).update(status=EmbeddingSet.Status.FAILED, error=str(exc), finished_at=timezone.now())
        raise
    EmbeddingSet.objects.filter(pk=set_id).update(
        status=EmbeddingSet.Status.READY, index_kind=type(index).__name__, finished_at=timezone.now(),
    )
    shutil.rmtree(directory / "inputs", ignore_errors=True)  # only the chunks read them
    embedding_sets_retire(keep=embedding_set)
    if embedding_set.model_version.is_active:
        cache.set(SERVING_SET_KEY, f"{set_id}:{embedding_set.model_version.name}:{time.time():.0f}", timeout=None)
        from matching.services.activity_recommendations import (
            activity_recommendations_refresh_upcoming,
        )

        with transaction.atomic():  # the queued tasks go out when this commits
            activity_recommendations_refresh_upcoming()
    embedding_set.refresh_from_db()
    return embedding_set


# A change starts a countdown; changes within it ride along (one recomputation per burst).
REFRESH_DEBOUNCE_SECONDS = 30
# Refreshed embeddings live this long in Redis; a full rebuild replaces them well before.
REFRESH_TTL_SECONDS = 7 * 24 * 3600


def _pending_key(user_id: int) -> str:
    return f"matching:refresh-pending:{user_id}"


def user_embedding_refresh_schedule(*, user_id: int) -> bool:
    """Ask for a refresh of one person's embeddings, debounced; True when a task was queued.

    ``cache.add`` is atomic: of many changes within the window, only the first queues a task,
    which runs after the window and sees all of them.
    """
    if not cache.add(_pending_key(user_id), 1, timeout=REFRESH_DEBOUNCE_SECONDS * 2):
        return False
    from matching.tasks import user_embedding_refresh_task

    transaction.on_commit(lambda: user_embedding_refresh_task.apply_async((user_id,), countdown=REFRESH_DEBOUNCE_SECONDS))
    return True


def user_embedding_refresh(*, user_id: int) -> bool:
    """Recompute one person's embeddings with the served model and publish them to web processes.

    1. Clear the pending mark first, so a change arriving during the work queues another run.
    2. Load the person and their circle, compute features and id bags exactly as in batch.
    3. Store both embeddings and the preference vector in Redis (raw float32 bytes, with a TTL)
       and append the person to the set's refresh log; web processes apply the log to their
       arrays' overlay and index.
    Returns False when no set is being served (the next full build includes the person).
    """
    from matching.feature_store import circle_of

    cache.delete(_pending_key(user_id))
    embedding_set = (
        EmbeddingSet.objects.select_related("model_version")
        .filter(model_version__is_active=True, status=EmbeddingSet.Status.READY).order_by("-created_at").first()
    )
    if embedding_set is None:
        return False
    version = embedding_set.model_version
    model = model_version_load(version)
    config = ModelConfig.from_dict(version.config["model"])
    city = load_city(circle_of(user_id))
    row = int(np.searchsorted(city.user_ids, user_id))
    if row >= city.n_users or city.user_ids[row] != user_id:
        return False
    features = user_features(city, timezone.now().timestamp())
    inputs = UserInputs.build(city, features, config)
    import torch

    model.eval()
    with torch.no_grad():
        batch = inputs.batch(np.array([row]), config)
        seed = model.seed_tower(batch).numpy()[0]
        target = model.target_tower(batch).numpy()[0]
    pref = preference_vectors(features[row:row + 1])[0]
    blob = np.concatenate([seed, target, pref]).astype(np.float32).tobytes()
    cache.set(embedding_key(version.name, user_id), blob, timeout=REFRESH_TTL_SECONDS)
    cache.client.get_client().rpush(cache.make_key(refresh_log_key(embedding_set.pk)), user_id)
    return True
