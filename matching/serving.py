"""What a web process serves from: the published embedding set, loaded lazily and hot-swapped.

The newest published set is named in Redis (``SERVING_SET_KEY``); a process looks at that key at
most every ``CHECK_SECONDS`` and, when it changed, memory-maps the new arrays and loads the new
index, then swaps them in one assignment. No restart, and no request waits for a reload of the
set it is already using. With nothing published (no model yet, or the job has not finished),
``current()`` returns None and callers fall back to rules, never to an error.

Besides the embeddings, a set carries what the nearby ranking would otherwise query per request
(``pref.npy``: everyone's preference vector, unit length; ``venue_visitors.npy``: whole-city
visitors per venue), and the process keeps the set's model loaded, so that ranking people nearby
costs no model lookup. The active version's name is re-read with the serving key, every
``CHECK_SECONDS``, never per request.
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

from matching.ml.index import load_index, mapped
from matching.ml.person_rows import PersonRows
from matching.models import EmbeddingSet, ModelVersion

logger = logging.getLogger(__name__)
CHECK_SECONDS = 2.0
PERSON_ROWS_DIR = "person_rows"  # a set's ``PersonRows`` (absent in sets built before them)
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
    # (n, P) float32 unit preference vectors, the rows of ``ids`` (None: a set built before they
    # were saved; nearby then ranks by cosine only).
    pref: np.ndarray | None = None
    venue_ids: np.ndarray | None = None  # (m,) sorted venue ids
    venue_visitors: np.ndarray | None = None  # (m,) distinct visitors of each venue, whole city
    # What each person did (venues, activities, availability, pinged spots), rows of ``ids``,
    # as of the set's build; None for a set built without them.
    person_rows: PersonRows | None = None
    # Embeddings refreshed since the set was built (profile changes, new people): user id ->
    # (seed, target, preference or None). Consulted before the arrays; applied to the index as
    # they arrive.
    overlay: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = field(
        default_factory=dict)
    applied: int = 0  # entries of the refresh log already applied
    _model: object | None = None  # the set's RALM, loaded on first use (see ``ranking_model``)
    _model_failed: bool = False
    # Row of each user id (-1: none), indexed by the id itself, where ids are dense enough (see
    # ``rows``); empty where they are not. Made with the set (4 MB and a few ms at 1,000,000).
    _row_of: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ids = self.ids
        if not len(ids) or int(ids[0]) < 0 or int(ids[-1]) > 4 * len(ids) + 1_000_000:
            self._row_of = np.zeros(0, dtype=np.int32)
            return
        self._row_of = np.full(int(ids[-1]) + 1, -1, dtype=np.int32)
        self._row_of[ids] = np.arange(len(ids), dtype=np.int32)

    def rows(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``user_ids`` in the arrays and a mask of those that have one.

        A request asks this five times for a few hundred ids. A binary search in 1,000,000 sorted
        ids misses the cache at most of its 20 steps (0.9 ms a request at 1,000,000 people); a
        table indexed by the id (``_row_of``) answers in one read per id. Database ids are dense,
        so the table costs 4 bytes a person; where they are sparse (largest id over 4x the count
        plus a million) the search stays."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        if len(self._row_of):
            inside = (user_ids >= 0) & (user_ids < len(self._row_of))
            rows = np.where(inside, self._row_of[np.where(inside, user_ids, 0)], -1)
            found = rows >= 0
            return np.maximum(rows, 0).astype(np.int64), found
        rows = np.searchsorted(self.ids, user_ids).clip(0, max(len(self.ids) - 1, 0))
        found = (self.ids[rows] == user_ids) if len(self.ids) else np.zeros(len(user_ids), dtype=bool)
        return rows, found

    def vectors(self, user_ids: np.ndarray, which: str) -> tuple[np.ndarray, np.ndarray]:
        """((k, E) embeddings, found mask) of ``user_ids``; refreshed ones win over the arrays."""
        rows, found = self.rows(user_ids)
        source = self.seed if which == "seed" else self.target
        out = np.zeros((len(rows), source.shape[1]), dtype=np.float32)
        out[found] = source[rows[found]]
        for i, uid in enumerate(np.asarray(user_ids).tolist() if self.overlay else ()):
            fresh = self.overlay.get(int(uid))
            if fresh is not None:
                out[i] = fresh[0] if which == "seed" else fresh[1]
                found[i] = True
        return out, found

    def prefs(self, user_ids: np.ndarray) -> np.ndarray:
        """(k, P) unit preference vectors of ``user_ids``; zeros for people without one."""
        assert self.pref is not None
        rows, found = self.rows(user_ids)
        out = np.zeros((len(rows), self.pref.shape[1]), dtype=np.float32)
        out[found] = self.pref[rows[found]]
        if self.overlay:
            for i, uid in enumerate(np.asarray(user_ids).tolist()):
                fresh = self.overlay.get(int(uid))
                if fresh is not None and fresh[2] is not None:
                    out[i] = fresh[2]
        return out

    def visitors(self, venue_ids: np.ndarray) -> np.ndarray:
        """Whole-city distinct visitors of each venue (0 for venues unknown to the set)."""
        assert self.venue_ids is not None and self.venue_visitors is not None
        venue_ids = np.asarray(venue_ids, dtype=np.int64)
        if not len(self.venue_ids):
            return np.zeros(len(venue_ids))
        rows = np.searchsorted(self.venue_ids, venue_ids).clip(0, len(self.venue_ids) - 1)
        known = self.venue_ids[rows] == venue_ids
        return np.where(known, self.venue_visitors[rows], 0).astype(np.float64)

    def ranking_model(self) -> object | None:
        """The set's model version, loaded once per process (None when it cannot be loaded)."""
        if self._model is None and not self._model_failed:
            from matching.services.registry import ModelVersionError, model_version_load

            version = ModelVersion.objects.filter(name=self.version).first()
            try:
                if version is None:
                    raise ModelVersionError(f"model version {self.version} is gone")
                self._model = model_version_load(version)
                import torch

                # A request ranks a few hundred rows: one thread does it in about 1.5 ms, while
                # two threads on a busy machine waited on each other for 175 ms (measured on
                # 1,000 candidates with another process on the second core). Requests run side
                # by side in processes and threads instead.
                torch.set_num_threads(1)
            except ModelVersionError:
                logger.exception("embedding set %s: its model cannot rank", self.set_id)
                self._model_failed = True
        return self._model

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
            # seed, target, then (since preference vectors are served) the preference vector
            values = np.frombuffer(blob, dtype=np.float32)
            e = self.seed.shape[1]
            pref = values[2 * e:].copy() if len(values) > 2 * e else None
            updates[uid] = (values[:e].copy(), values[e:2 * e].copy(), pref)
        if updates:
            from matching.ml.index import upsert

            self.overlay.update(updates)
            targets = np.stack([u[1] for u in updates.values()])
            upsert(self.index, targets, np.array(list(updates), dtype=np.int64))


def embedding_key(version: str, user_id: int) -> str:
    """Redis key of one user's refreshed embeddings: float32 bytes (seed, target, preference)."""
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
        # Name of the active model version, read with the serving key ("" when none is active).
        self.active_version = ""
        # Sets of other versions that an A/B arm serves, by version name, with when they were
        # last looked up.
        self._arms: dict[str, tuple[float, ServingSet | None]] = {}

    def current(self) -> ServingSet | None:
        now = time.monotonic()
        if now - self._checked < CHECK_SECONDS:
            return self._serving
        self._checked = now
        active = ModelVersion.objects.filter(is_active=True).values_list("name", flat=True)
        self.active_version = active.first() or ""
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
        try:
            return serving_set_load(embedding_set)
        except (OSError, RuntimeError, ValueError):
            logger.exception("embedding set %s could not be loaded; keeping the previous one", set_id)
            return None

    def for_version(self, name: str) -> ServingSet | None:
        """The newest ready set of version ``name`` (an A/B arm's), loaded once per set; None when
        that version has no ready set, and the arm then ranks by rules."""
        current = self.current()
        if current is not None and current.version == name:
            return current
        now = time.monotonic()
        checked, cached = self._arms.get(name, (0.0, None))
        if now - checked < CHECK_SECONDS:  # like the served set: look for a newer one every few seconds
            return cached
        embedding_set = (
            EmbeddingSet.objects.select_related("model_version")
            .filter(model_version__name=name, status="ready").order_by("-created_at").first()
        )
        with self._lock:
            if embedding_set is None:
                cached = None
            elif cached is None or cached.set_id != embedding_set.pk:
                try:
                    cached = serving_set_load(embedding_set)
                except (OSError, RuntimeError, ValueError):
                    logger.exception("embedding set %s of arm version %s could not be loaded", embedding_set.pk, name)
                    cached = None
            self._arms[name] = (now, cached)
        return cached

    def reset(self) -> None:
        with self._lock:
            self._serving, self._key, self._checked, self.active_version = None, None, 0.0, ""
            self._arms = {}


def serving_set_load(embedding_set: EmbeddingSet) -> ServingSet:
    """The arrays of a ready set, memory-mapped, and its index (OSError when files are gone)."""
    directory = set_dir(embedding_set)

    def optional(name: str) -> np.ndarray | None:
        path = directory / name
        return mapped(path) if path.is_file() else None

    return ServingSet(
        set_id=embedding_set.pk, version=embedding_set.model_version.name,
        ids=np.load(directory / "ids.npy", allow_pickle=False),
        seed=mapped(directory / "seed.npy"),
        target=mapped(directory / "target.npy"),
        index=load_index(directory / "index.faiss"),
        pref=optional("pref.npy"), venue_ids=optional("venue_ids.npy"),
        venue_visitors=optional("venue_visitors.npy"),
        person_rows=PersonRows.load(directory / PERSON_ROWS_DIR),
    )


store = _Store()
