"""Look-alike audiences (seed 000 section 5.3): from a seed list of people, the people most like them.

Seeds are given as user ids, or as a saved filter (interests, an area, a minimum of recent
activity) that ``audience_filter_seeds`` resolves to ids once, when the audience is created: the
audience then describes the people who matched at that moment.

``audience_build`` follows RALM:

1. Embed: the target embeddings of the published set (refreshed ones included) for the seeds.
2. Summarise the seeds by k-means (k = 20): a seed list of 100,000 costs what 20 cost.
3. Candidates: everyone, scanned in chunks; above ``FAISS_ABOVE`` people, the union of each
   centroid's nearest neighbours from the FAISS index instead (``target_size`` per centroid and
   at least ``MIN_PER_CENTROID``), so the job stays proportional to what it returns.
4. Score every candidate with the seed-set attention (0.3 global + 0.7 local, counts as a log
   bias), drop seeds when asked and scores under ``min_score``, keep the best ``target_size``.
5. Store the ranked members in one transaction; progress is saved after every chunk.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from django.contrib.gis.geos import Point
from django.contrib.gis.measure import D
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from matching.models import Audience, AudienceMember, EmbeddingSet
from matching.serving import ServingSet, set_dir
from users.models import User

MAX_SEEDS = 100_000
MAX_TARGET_SIZE = 1_000_000
FAISS_ABOVE = 200_000
MIN_PER_CENTROID = 1_000
CHUNK = 100_000
STAFF_ONLY = "Only staff may build look-alike audiences."
UNKNOWN_SEEDS = "Unknown user ids: {ids}"
NO_EMBEDDINGS = "No embedding set is ready for the active model: train a model and compute embeddings first."
SEEDS_OR_FILTER = "Give either seed_user_ids or a filter, not both and not neither."
EMPTY_FILTER = "The filter needs at least one of interests, area or min_activity."
NOBODY_MATCHES = "Nobody matches the filter."
# Interactions a person makes themself; impressions are logged by the system and do not count.
ACTIVITY_KINDS = (
    "view", "like", "connect_request", "accept", "message", "invite_sent", "invite_accepted",
    "join", "visit",
)


@dataclass(frozen=True)
class SeedFilter:
    """People to use as seeds: any of ``interests``; within ``radius_km`` of (lon, lat); at least
    ``min_activity`` interactions of their own in the last ``activity_days`` days."""

    interests: tuple[str, ...] = ()
    lon: float | None = None
    lat: float | None = None
    radius_km: float | None = None
    min_activity: int = 0
    activity_days: int = 90


def audience_filter_seeds(*, seed_filter: SeedFilter, limit: int = MAX_SEEDS) -> list[int]:
    """Ids of active people matching ``seed_filter``; above ``limit``, the most active first."""
    empty = not seed_filter.interests and seed_filter.radius_km is None
    if empty and seed_filter.min_activity <= 0:
        raise ValueError(EMPTY_FILTER)
    people = User.objects.filter(is_active=True, is_suspended=False, profile__isnull=False)
    if seed_filter.interests:
        people = people.filter(profile__interests__overlap=list(seed_filter.interests))
    if seed_filter.radius_km is not None:
        centre = Point(seed_filter.lon, seed_filter.lat, srid=4326)
        people = people.filter(profile__location__dwithin=(centre, D(km=seed_filter.radius_km)))
    since = timezone.now() - dt.timedelta(days=seed_filter.activity_days)
    recent = Q(interactions__occurred_at__gte=since, interactions__kind__in=ACTIVITY_KINDS)
    people = people.annotate(activity=Count("interactions", filter=recent))
    if seed_filter.min_activity > 0:
        people = people.filter(activity__gte=seed_filter.min_activity)
    ids = list(people.order_by("-activity", "pk").values_list("pk", flat=True)[:limit])
    if not ids:
        raise ValueError(NOBODY_MATCHES)
    return sorted(ids)


def audience_create(
    *, actor: User, seed_user_ids: list[int] | None = None, target_size: int,
    exclude_seeds: bool = True, min_score: float = -1.0, name: str = "",
    seed_filter: SeedFilter | None = None,
) -> Audience:
    """Record an audience request and queue its build (after the transaction commits).

    Seeds are ``seed_user_ids`` or, with ``seed_filter``, the people matching it now.
    """
    if not actor.is_staff:
        raise PermissionDenied(STAFF_ONLY)
    if (seed_user_ids is None) == (seed_filter is None):
        raise ValueError(SEEDS_OR_FILTER)
    if seed_filter is not None:
        seed_user_ids = audience_filter_seeds(seed_filter=seed_filter)
    assert seed_user_ids is not None
    seeds = sorted(set(seed_user_ids))
    known = set(User.objects.filter(pk__in=seeds).values_list("pk", flat=True))
    unknown = [s for s in seeds if s not in known]
    if unknown:
        raise ValueError(UNKNOWN_SEEDS.format(ids=", ".join(map(str, unknown[:10]))))
    with transaction.atomic():
        audience = Audience(
            name=name, created_by=actor, seed_user_ids=seeds, target_size=target_size,
            exclude_seeds=exclude_seeds, min_score=min_score,
        )
        audience.full_clean()
        audience.save()
        from matching.tasks import audience_build_task

        transaction.on_commit(lambda: audience_build_task.delay(audience.pk))
    return audience


def _serving_set() -> ServingSet:
    """The newest ready set of the active version, with refreshed embeddings applied."""
    from matching.ml.index import load_index

    embedding_set = (
        EmbeddingSet.objects.select_related("model_version")
        .filter(model_version__is_active=True, status=EmbeddingSet.Status.READY).order_by("-created_at").first()
    )
    if embedding_set is None:
        raise RuntimeError(NO_EMBEDDINGS)
    directory = set_dir(embedding_set)
    serving = ServingSet(
        set_id=embedding_set.pk, version=embedding_set.model_version.name,
        ids=np.load(directory / "ids.npy", allow_pickle=False),
        seed=np.load(directory / "seed.npy", mmap_mode="r", allow_pickle=False),
        target=np.load(directory / "target.npy", mmap_mode="r", allow_pickle=False),
        index=load_index(directory / "index.faiss"),
    )
    serving.apply_refreshes()
    return serving


def audience_build(*, audience_id: int) -> Audience:
    import torch

    from matching.ml.index import search
    from matching.ml.lookalike import kmeans
    from matching.services.registry import model_version_load

    audience = Audience.objects.get(pk=audience_id)
    Audience.objects.filter(pk=audience_id).update(status=Audience.Status.RUNNING, progress=0.0, error="")
    try:
        serving = _serving_set()
        embedding_set = EmbeddingSet.objects.select_related("model_version").get(pk=serving.set_id)
        model = model_version_load(embedding_set.model_version)
        seeds, found = serving.vectors(np.array(audience.seed_user_ids, dtype=np.int64), "target")
        if not found.any():
            raise RuntimeError("none of the seeds has an embedding yet")
        clusters = kmeans(seeds[found], k=20)
        centroids, counts = torch.from_numpy(clusters.centroids), torch.from_numpy(clusters.counts)
        if len(serving.ids) > FAISS_ABOVE:
            per = max(MIN_PER_CENTROID, audience.target_size)
            _, neighbours = search(serving.index, clusters.centroids, per)
            candidates = np.unique(neighbours[neighbours >= 0])
        else:
            candidates = serving.ids
        scores = np.empty(len(candidates), dtype=np.float32)
        chunks = max(1, int(np.ceil(len(candidates) / CHUNK)))
        with torch.no_grad():
            for i in range(chunks):
                part = candidates[i * CHUNK:(i + 1) * CHUNK]
                vectors, _ = serving.vectors(part, "target")
                scores[i * CHUNK:(i + 1) * CHUNK] = model.lookalike(centroids, torch.from_numpy(vectors), counts).numpy()
                Audience.objects.filter(pk=audience_id).update(progress=0.9 * (i + 1) / chunks)
        keep = scores >= audience.min_score
        if audience.exclude_seeds:
            keep &= ~np.isin(candidates, audience.seed_user_ids)
        candidates, scores = candidates[keep], scores[keep]
        order = np.lexsort((candidates, -scores))[:audience.target_size]
        with transaction.atomic():
            AudienceMember.objects.filter(audience_id=audience_id).delete()
            AudienceMember.objects.bulk_create(
                [AudienceMember(audience_id=audience_id, user_id=int(candidates[j]), rank=r + 1, score=float(scores[j]))
                 for r, j in enumerate(order)],
                batch_size=5_000,
            )
            Audience.objects.filter(pk=audience_id).update(
                status=Audience.Status.READY, progress=1.0, finished_at=timezone.now(),
                model_version=embedding_set.model_version,
            )
    except Exception as exc:
        Audience.objects.filter(pk=audience_id).update(status=Audience.Status.FAILED, error=str(exc), finished_at=timezone.now())
        raise
    audience.refresh_from_db()
    return audience
