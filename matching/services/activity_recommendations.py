"""Participant recommendation for an activity (seed 000 section 5.2), computed on Celery.

``activity_recommendations_compute`` follows these steps:

1. Seeds: the organiser and the current participants.
2. Candidates, one raw SQL selector (``_CANDIDATES_SQL``): people with a location within the
   activity's recruiting radius (10 km by default) who are interested in its category (an
   interest in the category or subtype, or the category among their activity types), free at
   its time (a weekly ``Availability`` slot covering it, in ``AVAILABILITY_TIME_ZONE``), whose
   skill is within +/-1 of the activity's, and who are not seeds, not invited before, not
   waiting, not blocked either way with a seed, not hidden, suspended, inactive or
   undiscoverable. A person's skill in a category is the mean level of the activities of that
   category they joined; people who never joined one are kept (unknown skill, said in the
   reasons), or newcomers would never be recommended anything. Nearest first, at most
   ``ACTIVITY_RECOMMENDATION_CANDIDATES``; the KNN order and ``ST_DWithin`` use the GiST index.
   Distances are computed from positions snapped to the ``NEARBY_GRID_METRES`` grid and leave
   only as buckets.
3. Likeness. With a served embedding set and its model loaded: RALM's seed-set attention of each
   candidate's target embedding over the seeds' (k-means summaries beyond 20 seeds, as for
   audiences); the best ``ACTIVITY_RECOMMENDATION_RERANK`` by the fused score are re-ranked by
   the ranking head, averaged over the seeds (organiser first, at most ``MAX_HEAD_SEEDS``), with
   the pair features of each seed and candidate; likeness is the mean of the attention score and
   the head's scores scaled to [0, 1] within the list. People without an embedding yet fall back
   to the rules' likeness. Without a model (or with no seed embedded): rules, the Jaccard of the
   candidate's interests with those of the seeds and the activity. The result says which
   (``ranker``: "model" or "rules").
4. Score: ``w_distance * (1 - distance / radius) + w_similarity * likeness``
   (``ACTIVITY_RECOMMENDATION_WEIGHTS``), best ``ACTIVITY_RECOMMENDATION_LIMIT`` kept with their
   reasons (shared interests, distance bucket, skill, friends taking part) and stored through
   ``activities.services.activity_recommendations_store`` in one transaction.

Scheduling is debounced (``activity_recommendations_schedule``): a burst of joins queues one run.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from activities.models import Activity, Participation
from activities.services import RankedCandidate, activity_recommendations_store
from matching.grid import cell_size
from matching.services.nearby import distance_bucket
from matching.serving import ServingSet, store
from users.models import Profile

# Seeds whose pair features feed the ranking head (organiser first, then the earliest joiners).
MAX_HEAD_SEEDS = 10
# Friends of the seeds loaded for the pair features of one computation.
MAX_CONTEXT = 5_000
# The local end of an activity that runs past midnight is taken as the end of its first day.
END_OF_DAY = dt.time(23, 59)


@dataclass
class RecommendationRun:
    activity_id: int
    ranker: str
    model_version: str
    candidates: int  # eligible people scored
    stored: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


_CANDIDATES_SQL = """
WITH q AS (SELECT ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)::geography AS g),
-- Each step is materialised so the cheap, selective filters run before the per-row lookups:
-- the GiST box and the interest arrays first, availability next, and the skill average only
-- for the few left (run on every row in the radius it costs more than all the rest).
near AS MATERIALIZED (
    SELECT p.user_id, p.interests, p.location
    FROM users_profile p, q
    WHERE p.location IS NOT NULL AND p.discoverable
      AND (p.interests && %(interests)s::varchar[] OR p.activity_types @> ARRAY[%(category)s]::varchar[])
      -- On the sphere: within 0.3%% of the spheroid at these distances, and cheaper per row.
      AND ST_DWithin(p.location, q.g, %(radius_m)s, false)
      AND NOT (p.user_id = ANY(%(seeds)s))
),
free AS MATERIALIZED (
    SELECT near.* FROM near
    WHERE EXISTS (SELECT 1 FROM users_availability av
                  WHERE av.user_id = near.user_id AND av.weekday = %(weekday)s
                    AND av.start_time <= %(start)s AND av.end_time >= %(end)s)
),
allowed AS MATERIALIZED (
    SELECT free.*,
           (SELECT avg(a2.skill_level)
            FROM activities_participation pa JOIN activities_activity a2 ON a2.id = pa.activity_id
            WHERE pa.user_id = free.user_id AND a2.category = %(category)s AND a2.id <> %(activity)s) AS skill
    FROM free JOIN users_user u ON u.id = free.user_id
    WHERE u.is_active AND NOT u.is_hidden AND NOT u.is_suspended
      AND NOT EXISTS (SELECT 1 FROM activities_invitation i
                      WHERE i.activity_id = %(activity)s AND i.invitee_id = free.user_id)
      AND NOT EXISTS (SELECT 1 FROM activities_waitlistentry w
                      WHERE w.activity_id = %(activity)s AND w.user_id = free.user_id)
      AND NOT EXISTS (SELECT 1 FROM users_block b
                      WHERE (b.blocker_id = ANY(%(seeds)s) AND b.blocked_id = free.user_id)
                         OR (b.blocked_id = ANY(%(seeds)s) AND b.blocker_id = free.user_id))
)
SELECT allowed.user_id, allowed.interests,
       ST_Distance(
           ST_Transform(ST_SnapToGrid(ST_Transform(allowed.location::geometry, 3857), %(cell)s), 4326)::geography,
           q.g) AS snapped_m,
       round(allowed.skill)::int AS skill
FROM allowed, q
WHERE allowed.skill IS NULL OR abs(allowed.skill - %(skill)s) <= 1
ORDER BY allowed.location <-> q.g, allowed.user_id
LIMIT %(cap)s
"""


def local_slot(activity: Activity) -> tuple[int, dt.time, dt.time]:
    """(weekday, start, end) of an activity in the time zone of availability slots."""
    zone = ZoneInfo(settings.AVAILABILITY_TIME_ZONE)
    start, end = activity.starts_at.astimezone(zone), activity.ends_at.astimezone(zone)
    end_time = end.time() if end.date() == start.date() else END_OF_DAY
    return start.weekday(), start.time().replace(microsecond=0), end_time.replace(microsecond=0)


def _candidates(activity: Activity, seeds: list[int], interests: list[str], cap: int) -> list[tuple]:
    weekday, start, end = local_slot(activity)
    lon, lat = activity.location.x, activity.location.y
    cell = cell_size(float(settings.NEARBY_GRID_METRES), lat)  # nearby's grid: the same snapping
    with connection.cursor() as cursor:
        cursor.execute(_CANDIDATES_SQL, {
            "lon": lon, "lat": lat, "radius_m": activity.recruit_radius_km * 1000.0, "interests": interests,
            "category": activity.category, "seeds": seeds, "activity": activity.pk, "weekday": weekday,
            "start": start, "end": end, "skill": activity.skill_level, "cap": cap, "cell": cell,
        })
        return cursor.fetchall()


def _friends_taking_part(seeds: list[int], candidates: list[int]) -> dict[int, int]:
    """How many seeds each candidate is friends with (accepted connections)."""
    if not candidates:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT CASE WHEN c.from_user_id = ANY(%(cands)s) THEN c.from_user_id ELSE c.to_user_id END AS who,
                   count(*)
            FROM users_connection c
            WHERE c.status = 'accepted'
              AND ((c.from_user_id = ANY(%(cands)s) AND c.to_user_id = ANY(%(seeds)s))
                OR (c.to_user_id = ANY(%(cands)s) AND c.from_user_id = ANY(%(seeds)s)))
            GROUP BY who
            """,
            {"cands": candidates, "seeds": seeds},
        )
        return dict(cursor.fetchall())


def _context_ids(seeds: list[int], candidates: list[int]) -> list[int]:
    """The seeds, their friends (capped) and the candidates: what the pair features read."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT CASE WHEN from_user_id = ANY(%(seeds)s) THEN to_user_id ELSE from_user_id END
            FROM users_connection
            WHERE status = 'accepted' AND (from_user_id = ANY(%(seeds)s) OR to_user_id = ANY(%(seeds)s))
            LIMIT %(cap)s
            """,
            {"seeds": seeds, "cap": MAX_CONTEXT},
        )
        return sorted({*seeds, *candidates, *(row[0] for row in cursor.fetchall())})


def _venue_visitors(venue_ids: np.ndarray) -> np.ndarray:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT target_venue_id, count(DISTINCT actor_id) FROM matching_interaction
               WHERE kind = 'visit' AND target_venue_id = ANY(%s) GROUP BY target_venue_id""",
            [venue_ids.tolist()],
        )
        counts = dict(cursor.fetchall())
    return np.array([counts.get(int(v), 0) for v in venue_ids], dtype=np.float64)


def _scale(values: np.ndarray) -> np.ndarray:
    spread = float(values.max() - values.min()) if len(values) else 0.0
    return (values - values.min()) / spread if spread > 0 else np.full(len(values), 0.5)


def _model_likeness(
    serving: ServingSet, seeds: list[int], ids: np.ndarray, rules: np.ndarray, distance_score: np.ndarray,
    timings: dict[str, float],
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(likeness in [0, 1], tier, model version) by seed-set attention and the ranking head, or
    None without the served model.

    Only the best ``ACTIVITY_RECOMMENDATION_RERANK`` by the fused score with the attention
    likeness are re-ranked by the head (tier 1); the rest keep the attention likeness and rank
    below them (tier 0), since their scores are not on the same scale.
    """
    from matching.services.registry import active_model

    loaded = active_model()
    if loaded is None or loaded.version.name != serving.version:
        return None
    seed_vectors, seed_found = serving.vectors(np.array(seeds, dtype=np.int64), "target")
    if not seed_found.any():
        return None
    import torch

    from matching.feature_store import load_city
    from matching.ml.features import user_features
    from matching.ml.lookalike import kmeans
    from matching.ml.pairs import PairFeaturizer

    lap = time.perf_counter()
    clusters = kmeans(seed_vectors[seed_found], k=20)
    targets, found = serving.vectors(ids, "target")
    with torch.no_grad():
        attention = loaded.model.lookalike(
            torch.from_numpy(clusters.centroids), torch.from_numpy(targets), torch.from_numpy(clusters.counts)
        ).numpy()
    likeness = np.where(found, (attention + 1.0) / 2.0, rules)
    timings["attention"] = time.perf_counter() - lap

    lap = time.perf_counter()
    w_distance, w_similarity = settings.ACTIVITY_RECOMMENDATION_WEIGHTS
    prelim = w_distance * distance_score + w_similarity * likeness
    top = np.lexsort((ids, -prelim))[: int(settings.ACTIVITY_RECOMMENDATION_RERANK)]
    top = top[found[top]]
    head_seeds = [s for s, ok in zip(seeds, seed_found, strict=True) if ok][:MAX_HEAD_SEEDS]
    tier = np.zeros(len(ids), dtype=np.int64)
    if len(top) >= 2:
        city = load_city(_context_ids(head_seeds, ids[top].tolist()))
        features = user_features(city, timezone.now().timestamp())
        featurizer = PairFeaturizer(city, features, venue_visitors=_venue_visitors(city.venue_ids))
        rows = np.searchsorted(city.user_ids, ids[top])
        seed_emb, _ = serving.vectors(np.array(head_seeds, dtype=np.int64), "seed")
        cand = torch.from_numpy(targets[top].astype(np.float32))
        logits = np.zeros(len(top), dtype=np.float64)
        with torch.no_grad():
            for s, seed_id in enumerate(head_seeds):
                pairs = featurizer.pair_features(int(np.searchsorted(city.user_ids, seed_id)), rows)
                seed_rows = torch.from_numpy(np.repeat(seed_emb[s][None, :], len(top), axis=0).astype(np.float32))
                logits += loaded.model.rank(seed_rows, cand, torch.from_numpy(pairs)).numpy()
        # The head is trained listwise: its scores order candidates but carry no absolute scale.
        likeness = likeness.copy()
        likeness[top] = 0.5 * likeness[top] + 0.5 * _scale(logits / len(head_seeds))
        tier[top] = 1
    timings["ranking_head"] = time.perf_counter() - lap
    return likeness, tier, serving.version


def activity_recommendations_compute(*, activity_id: int) -> RecommendationRun | None:
    """Rank and store the recommended participants of a published, upcoming activity.

    Returns None (and stores nothing) for an activity that is gone, not published or started.
    """
    began = time.perf_counter()
    computed_at = timezone.now()
    timings: dict[str, float] = {}
    activity = Activity.objects.filter(pk=activity_id).first()
    if activity is None or activity.status != Activity.Status.PUBLISHED or activity.starts_at <= computed_at:
        return None
    participants = list(
        Participation.objects.filter(activity=activity).order_by("joined_at", "pk").values_list("user_id", flat=True)
    )
    seeds = [activity.organiser_id, *participants]
    seed_interests = set()
    for interests in Profile.objects.filter(user_id__in=seeds).values_list("interests", flat=True):
        seed_interests.update(interests or [])
    wanted = sorted({activity.category, *([activity.subtype] if activity.subtype else [])})
    likeable = seed_interests | set(wanted)

    lap = time.perf_counter()
    rows = _candidates(activity, seeds, wanted, int(settings.ACTIVITY_RECOMMENDATION_CANDIDATES))
    timings["candidates_sql"] = time.perf_counter() - lap

    ranker, version = "rules", ""
    ranked: list[RankedCandidate] = []
    if rows:
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        distance_km = np.array([r[2] for r in rows], dtype=np.float64) / 1000.0
        distance_score = np.clip(1.0 - distance_km / activity.recruit_radius_km, 0.0, 1.0)
        shared = [sorted(likeable & set(r[1] or [])) for r in rows]
        union = np.array([len(likeable | set(r[1] or [])) for r in rows], dtype=np.float64)
        rules = np.divide([len(s) for s in shared], union, out=np.zeros(len(rows)), where=union > 0)
        likeness, tier = rules, np.zeros(len(ids), dtype=np.int64)
        serving = store.current()
        if serving is not None:
            scored = _model_likeness(serving, seeds, ids, rules, distance_score, timings)
            if scored is not None:
                likeness, tier, version = scored
                ranker = "model"
        w_distance, w_similarity = settings.ACTIVITY_RECOMMENDATION_WEIGHTS
        score = w_distance * distance_score + w_similarity * likeness
        order = np.lexsort((ids, -score, -tier))[: int(settings.ACTIVITY_RECOMMENDATION_LIMIT)]
        friends = _friends_taking_part(seeds, [int(ids[i]) for i in order])
        ranked = [
            RankedCandidate(
                user_id=int(ids[i]), score=float(score[i]),
                reasons={
                    "shared_interests": shared[i],
                    "distance": distance_bucket(float(distance_km[i])),
                    "available": True,
                    "skill_level": rows[i][3],
                    "friends_taking_part": int(friends.get(int(ids[i]), 0)),
                    "similarity": round(float(likeness[i]), 4),
                },
            )
            for i in order
        ]
    lap = time.perf_counter()
    stored = activity_recommendations_store(
        activity_id=activity.pk, ranked=ranked, ranker=ranker, model_version=version, computed_at=computed_at,
    )
    timings["store"] = time.perf_counter() - lap
    return RecommendationRun(
        activity_id=activity.pk, ranker=ranker, model_version=version, candidates=len(rows), stored=stored,
        seconds=time.perf_counter() - began, timings=timings,
    )


def _pending_key(activity_id: int) -> str:
    return f"activities:recommend-pending:{activity_id}"


def activity_recommendations_schedule(*, activity_id: int, countdown: int, bulk: bool = False) -> bool:
    """Queue a recomputation in ``countdown`` seconds unless one is already pending; True if queued.
    ``bulk``: on ``CELERY_BULK_QUEUE`` (one of many queued at once), not the default queue.

    ``cache.add`` is atomic: of ten joins within the window only the first queues a task, which
    runs after the window and sees all ten. The task clears the mark when it starts, so a change
    arriving during the computation queues the next one.
    """
    if not cache.add(_pending_key(activity_id), 1, timeout=countdown * 2 + 60):
        return False
    from matching.tasks import activity_recommendations_task

    queue = settings.CELERY_BULK_QUEUE if bulk else None
    transaction.on_commit(
        lambda: activity_recommendations_task.apply_async((activity_id,), countdown=countdown, queue=queue))
    return True


def activity_recommendations_refresh(*, activity_id: int) -> RecommendationRun | None:
    """What the task runs: clear the pending mark, then compute."""
    cache.delete(_pending_key(activity_id))
    return activity_recommendations_compute(activity_id=activity_id)


# When a new model starts serving, the recommendations of activities starting within this many
# days are recomputed with it (soonest first, at most this many activities).
REFRESH_ON_PUBLISH_DAYS = 30
REFRESH_ON_PUBLISH_MAX = 2_000


def activity_recommendations_refresh_upcoming(*, now: dt.datetime | None = None) -> int:
    """Queue a recomputation for every published activity starting soon (after a new embedding
    set of the active model is published: their stored lists were ranked by the previous one, or
    by rules). Debounced per activity like joins; returns how many were queued.

    They go to the bulk queue (``CELERY_BULK_QUEUE``): at 1,000,000 people each takes 1 to 2 s,
    and 2,000 of them on the default queue held the impression flushes behind them for about an
    hour after every new embedding set (found by ``bench_serving``: no impression written during
    its HTTP phases, and the worker's database work took a core from serving)."""
    from activities.models import Activity

    now = now or timezone.now()
    upcoming = (
        Activity.objects.filter(status=Activity.Status.PUBLISHED, starts_at__gt=now,
                                starts_at__lt=now + dt.timedelta(days=REFRESH_ON_PUBLISH_DAYS))
        .order_by("starts_at").values_list("pk", flat=True)[:REFRESH_ON_PUBLISH_MAX]
    )
    return sum(activity_recommendations_schedule(activity_id=pk, countdown=0, bulk=True) for pk in upcoming)
