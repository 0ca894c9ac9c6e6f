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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ServingSet:
    set_id: int
    version: str
    ids: np.ndarray  # (n,) sorted user ids
    seed: np.ndarray  # (n, E) float32, memory-mapped
    target: np.ndarray  # (n, E)
    index: faiss.Index

    def rows(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``user_ids`` and a mask of those that have an embedding."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        rows = np.searchsorted(self.ids, user_ids).clip(0, max(len(self.ids) - 1, 0))
        found = (self.ids[rows] == user_ids) if len(self.ids) else np.zeros(len(user_ids), dtype=bool)
        return rows, found


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
