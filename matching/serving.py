"""What a web process serves from: the published embedding set, loaded lazily and hot-swapped.

The newest published set is named in Redis (``SERVING_SET_KEY``); a process looks at that key at
most every ``CHECK_SECONDS`` and, when it changed, memory-maps the new arrays and loads the new
index, then swaps them in one assignment. No restart, and no request waits for a reload of the
set it is already using. With nothing published (no model yet, or the job has not finished),
``current()`` returns None and callers fall back to rules, never to an error.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from django.conf import settings
from django.core.cache import cache

from matching.ml.index import load_index
from matching.models import EmbeddingSet

logger = logging.getLogger(__name__)
CHECK_SECONDS = 2.0
# Redis key naming the embedding set web processes should serve ("<set id>:<version>:<time>").
SERVING_SET_KEY = "matching:serving-embedding-set"


def set_dir(embedding_set: EmbeddingSet) -> Path:
    """Where an embedding set's files live: ``MEDIA_ROOT/embeddings/<version>/<set id>/``."""
    return Path(settings.MEDIA_ROOT) / "embeddings" / embedding_set.model_version.name / str(embedding_set.pk)


@dataclass
class ServingSet:
    set_id: int
    version: str
    ids: np.ndarray  # (n,) sorted user ids
    seed: np.ndarray  # (n, E) float32, memory-mapped (shared between processes, read-only)
    target: np.ndarray  # (n, E)
    index: faiss.Index
    # Embeddings refreshed since the set was built (profile changes, new people): user id ->
    # (seed, target). Consulted before the arrays; applied to the index as they arrive.
    overlay: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    applied: int = 0  # entries of the refresh log already applied

    def rows(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``user_ids`` in the arrays and a mask of those that have one."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        rows = np.searchsorted(self.ids, user_ids).clip(0, max(len(self.ids) - 1, 0))
        found = (self.ids[rows] == user_ids) if len(self.ids) else np.zeros(len(user_ids), dtype=bool)
        return rows, found

    def vectors(self, user_ids: np.ndarray, which: str) -> tuple[np.ndarray, np.ndarray]:
        """((k, E) embeddings, found mask) of ``user_ids``; refreshed ones win over the arrays."""
        rows, found = self.rows(user_ids)
        source = self.seed if which == "seed" else self.target
        out = np.zeros((len(rows), source.shape[1]), dtype=np.float32)
        out[found] = source[rows[found]]
        for i, uid in enumerate(np.asarray(user_ids).tolist()):
            fresh = self.overlay.get(int(uid))
            if fresh is not None:
                out[i] = fresh[0] if which == "seed" else fresh[1]
                found[i] = True
        return out, found

    def apply_refreshes(self) -> None:
        """Take in the per-user refreshes logged in Redis since the last call (see
        ``matching.services.embeddings.user_embedding_refresh``)."""
        log_key = refresh_log_key(self.set_id)
        new_ids = cache.client.get_client().lrange(cache.make_key(log_key), self.applied, -1)
        if not new_ids:
            return
        self.applied += len(new_ids)
        ids = sorted({int(x) for x in new_ids})
        blobs = cache.get_many([embedding_key(self.version, uid) for uid in ids])
        updates = {}
        for uid in ids:
            blob = blobs.get(embedding_key(self.version, uid))
            if blob is None:
                continue  # expired: the next full rebuild has it
            both = np.frombuffer(blob, dtype=np.float32).reshape(2, -1)
            updates[uid] = (both[0].copy(), both[1].copy())
        if updates:
            from matching.ml.index import upsert

            self.overlay.update(updates)
            upsert(self.index, np.stack([t for _, t in updates.values()]), np.array(list(updates), dtype=np.int64))


def embedding_key(version: str, user_id: int) -> str:
    """Redis key of one user's refreshed embeddings: raw float32 bytes (seed then target)."""
    return f"matching:emb:{version}:{user_id}"


def refresh_log_key(set_id: int) -> str:
    """Redis list of user ids refreshed on top of an embedding set, in order."""
    return f"matching:emb-log:{set_id}"


class _Store:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._serving: ServingSet | None = None
        self._key: str | None = None
        self._checked = 0.0

    def current(self) -> ServingSet | None:
        now = time.monotonic()
        if now - self._checked < CHECK_SECONDS:
            return self._serving
        self._checked = now
        try:
            key = cache.get(SERVING_SET_KEY)
        except Exception:  # noqa: BLE001 - Redis down: keep serving what we have
            logger.warning("cannot read %s from Redis; serving the loaded set", SERVING_SET_KEY)
            return self._serving
        if key is None or key == self._key:
            if self._serving is not None:
                try:
                    self._serving.apply_refreshes()
                except Exception:  # noqa: BLE001 - Redis trouble must not fail a request
                    logger.warning("could not apply embedding refreshes", exc_info=True)
            return self._serving
        with self._lock:
            if key != self._key:
                self._serving = self._load(key) or self._serving
                self._key = key
        return self._serving

    def _load(self, key: str) -> ServingSet | None:
        set_id = int(key.split(":", 1)[0])
        embedding_set = EmbeddingSet.objects.select_related("model_version").filter(pk=set_id, status="ready").first()
        if embedding_set is None:
            return None
        directory = set_dir(embedding_set)
        try:
            return ServingSet(
                set_id=set_id, version=embedding_set.model_version.name,
                ids=np.load(directory / "ids.npy", allow_pickle=False),
                seed=np.load(directory / "seed.npy", mmap_mode="r", allow_pickle=False),
                target=np.load(directory / "target.npy", mmap_mode="r", allow_pickle=False),
                index=load_index(directory / "index.faiss"),
            )
        except (OSError, RuntimeError, ValueError):
            logger.exception("embedding set %s could not be loaded; keeping the previous one", set_id)
            return None

    def reset(self) -> None:
        with self._lock:
            self._serving, self._key, self._checked = None, None, 0.0


store = _Store()
