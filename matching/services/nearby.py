"""People nearby, ranked: who is close and who is like you, without revealing where anyone is.

``nearby_matches`` follows these steps:

1. Candidates: discoverable, active, unhidden, unsuspended people within the radius, nearest
   first up to ``CANDIDATE_CAP`` (in a dense city "everyone within 5 km" is tens of thousands),
   minus the asker, anyone blocked either way and, by default, existing connections. One raw SQL
   selector below; the KNN ``<->`` order and ``ST_DWithin`` both use the GiST index.
2. Privacy: every candidate's position is snapped to a grid of ``NEARBY_GRID_METRES`` (100 m by
   default) before any distance is computed, so neither the distance nor the order of results
   carries more than the cell (exact distances, rounded or noised per query, were trilaterated to
   metres in other products). Distances leave as buckets ("1-2 km").
3. Similarity: with a published embedding set, the cosine of the asker's seed embedding with the
   candidates' target embeddings, one matrix product for all of them; then the ranking head
   re-ranks them with the pair features (mutual friends, common venues, co-location, interest
   overlap ...), computed on the asker's neighbourhood of the graph with whole-city degrees, and
   its scores, scaled to [0, 1] within the request, are the similarity. Without a model (none
   trained yet), rules: shared interests (Jaccard) and closeness in age. The response says which
   (``ranker``: "model" or "rules").
4. Fusion: ``w_distance * distance_score + w_similarity * similarity`` (0.6 and 0.4 by default,
   seed 000 section 5.1), with ``distance_score = 1 - distance / radius``.
5. Every returned person is logged as an impression with position, surface and model version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import connection
from django.utils import timezone

from matching.models import Interaction
from matching.serving import store
from users.models import Profile, User

CANDIDATE_CAP = 500
MAX_RADIUS_KM = 50.0
MAX_LIMIT = 100
BUCKETS_KM = (1, 2, 5, 10, 20, 50)
NO_LOCATION = "Set your location first, or pass lat and lon."


@dataclass
class Match:
    user_id: int
    display_name: str
    distance_bucket: str
    similarity: float
    score: float
    shared_interests: list[str] = field(default_factory=list)
    mutual_friends: int = 0


@dataclass
class NearbyResult:
    ranker: str  # "model" or "rules"
    model_version: str
    matches: list[Match]


class NearbyError(ValueError):
    pass


def distance_bucket(km: float) -> str:
    low = 0
    for high in BUCKETS_KM:
        if km < high:
            return f"< {high} km" if low == 0 else f"{low}-{high} km"
        low = high
    return f"> {BUCKETS_KM[-1]} km"


_CANDIDATES_SQL = """
WITH q AS (SELECT ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)::geography AS g),
near AS (
    SELECT p.user_id, p.display_name, p.interests, p.birth_year, p.location
    FROM users_profile p JOIN users_user u ON u.id = p.user_id, q
    WHERE p.location IS NOT NULL AND p.discoverable
      AND u.is_active AND NOT u.is_hidden AND NOT u.is_suspended
      AND p.user_id <> %(me)s
      AND ST_DWithin(p.location, q.g, %(radius_m)s)
      AND NOT EXISTS (
          SELECT 1 FROM users_block b
          WHERE (b.blocker_id = %(me)s AND b.blocked_id = p.user_id)
             OR (b.blocker_id = p.user_id AND b.blocked_id = %(me)s))
      AND (%(include_connected)s OR NOT EXISTS (
          SELECT 1 FROM users_connection c
          WHERE c.status IN ('accepted', 'pending')
            AND ((c.from_user_id = %(me)s AND c.to_user_id = p.user_id)
              OR (c.from_user_id = p.user_id AND c.to_user_id = %(me)s))))
    ORDER BY p.location <-> q.g
    LIMIT %(cap)s
)
SELECT near.user_id, near.display_name, near.interests, near.birth_year,
       ST_Distance(
           ST_Transform(ST_SnapToGrid(ST_Transform(near.location::geometry, 3857), %(cell)s), 4326)::geography,
           q.g) AS snapped_m
FROM near, q
"""


def _mutual_friends(me: int, others: list[int]) -> dict[int, int]:
    if not others:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH friends AS (
                SELECT CASE WHEN from_user_id = %(me)s THEN to_user_id ELSE from_user_id END AS f
                FROM users_connection WHERE status = 'accepted' AND (from_user_id = %(me)s OR to_user_id = %(me)s))
            SELECT o.id, count(*) FROM unnest(%(others)s::bigint[]) AS o(id)
            JOIN users_connection c ON c.status = 'accepted' AND (c.from_user_id = o.id OR c.to_user_id = o.id)
            JOIN friends ON friends.f = CASE WHEN c.from_user_id = o.id THEN c.to_user_id ELSE c.from_user_id END
            GROUP BY o.id
            """,
            {"me": me, "others": others},
        )
        return dict(cursor.fetchall())


def nearby_matches(
    *, user: User, radius_km: float = 5.0, limit: int = 20, lon: float | None = None, lat: float | None = None,
    include_connected: bool = False,
) -> NearbyResult:
    if not 0 < radius_km <= MAX_RADIUS_KM or not 1 <= limit <= MAX_LIMIT:
        raise NearbyError("radius or limit out of range")  # the API validates first; services check too
    profile = Profile.objects.filter(user=user).first()
    if lon is None or lat is None:
        if profile is None or profile.location is None:
            raise NearbyError(NO_LOCATION)
        lon, lat = profile.location.x, profile.location.y
    grid_m = float(settings.NEARBY_GRID_METRES)
    cell = grid_m / max(math.cos(math.radians(lat)), 0.01)  # mercator units for ~grid_m true metres
    with connection.cursor() as cursor:
        cursor.execute(_CANDIDATES_SQL, {
            "lon": lon, "lat": lat, "me": user.pk, "radius_m": radius_km * 1000.0, "cap": CANDIDATE_CAP,
            "include_connected": include_connected, "cell": cell,
        })
        rows = cursor.fetchall()
    if not rows:
        return NearbyResult(ranker="rules", model_version="", matches=[])
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    distance_km = np.array([r[4] for r in rows], dtype=np.float64) / 1000.0
    distance_score = np.clip(1.0 - distance_km / radius_km, 0.0, 1.0)
    my_interests = set(profile.interests if profile else [])
    shared = [sorted(my_interests & set(r[2] or [])) for r in rows]

    serving = store.current()
    ranker, version = "rules", ""
    similarity = None
    if serving is not None:
        mine, my_found = serving.vectors(np.array([user.pk]), "seed")
        targets, found = serving.vectors(ids, "target")
        if my_found[0] and found.any():
            cosine = targets @ mine[0]
            similarity = np.where(found, (cosine + 1.0) / 2.0, 0.0)
            ranker, version = "model", serving.version
            reranked = _rerank(user.pk, ids, mine[0], targets, serving.version)
            if reranked is not None:
                similarity = np.where(found, reranked, 0.0)
    if similarity is None:
        union = np.array([len(my_interests | set(r[2] or [])) for r in rows], dtype=np.float64)
        jaccard = np.divide([len(s) for s in shared], union, out=np.zeros(len(rows)), where=union > 0)
        my_year = profile.birth_year if profile else None
        years = np.array([r[3] if r[3] is not None else np.nan for r in rows], dtype=np.float64)
        age = np.where(np.isfinite(years) & (my_year is not None), 1.0 - np.abs(years - (my_year or 0)) / 30.0, 0.5)
        similarity = 0.75 * jaccard + 0.25 * np.clip(age, 0.0, 1.0)
    w_distance, w_similarity = settings.NEARBY_FUSION_WEIGHTS
    score = w_distance * distance_score + w_similarity * similarity
    order = np.lexsort((ids, -score))[:limit]
    mutual = _mutual_friends(user.pk, [int(ids[i]) for i in order])
    matches = [
        Match(
            user_id=int(ids[i]), display_name=rows[i][1], distance_bucket=distance_bucket(float(distance_km[i])),
            similarity=round(float(similarity[i]), 4), score=round(float(score[i]), 4),
            shared_interests=shared[i], mutual_friends=int(mutual.get(int(ids[i]), 0)),
        )
        for i in order
    ]
    now = timezone.now()
    Interaction.objects.bulk_create([
        Interaction(actor=user, kind=Interaction.Kind.IMPRESSION, target_user_id=m.user_id, position=position,
                    surface="nearby", model_version=version, occurred_at=now)
        for position, m in enumerate(matches)
    ])
    return NearbyResult(ranker=ranker, model_version=version, matches=matches)


# Friends of friends beyond this many are not loaded for the pair features of one request.
MAX_CONTEXT = 5_000


def _context_ids(me: int, candidates: list[int]) -> list[int]:
    """The asker, their friends and friends of friends (capped), and the candidates."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH f AS (
                SELECT CASE WHEN from_user_id = %(me)s THEN to_user_id ELSE from_user_id END AS id
                FROM users_connection WHERE status = 'accepted' AND (from_user_id = %(me)s OR to_user_id = %(me)s))
            SELECT id FROM f
            UNION
            (SELECT CASE WHEN c.from_user_id = f.id THEN c.to_user_id ELSE c.from_user_id END
             FROM f JOIN users_connection c ON c.status = 'accepted' AND (c.from_user_id = f.id OR c.to_user_id = f.id)
             LIMIT %(cap)s)
            """,
            {"me": me, "cap": MAX_CONTEXT},
        )
        return sorted({me, *candidates, *(row[0] for row in cursor.fetchall())})


def _venue_visitors(venue_ids: np.ndarray) -> np.ndarray:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT target_venue_id, count(DISTINCT actor_id) FROM matching_interaction
               WHERE kind = 'visit' AND target_venue_id = ANY(%s) GROUP BY target_venue_id""",
            [venue_ids.tolist()],
        )
        counts = dict(cursor.fetchall())
    return np.array([counts.get(int(v), 0) for v in venue_ids], dtype=np.float64)


def _rerank(me: int, candidates: np.ndarray, seed: np.ndarray, targets: np.ndarray, version: str) -> np.ndarray | None:
    """Ranking-head scores of the candidates scaled to [0, 1], or None without the served model."""
    from matching.services.registry import active_model

    loaded = active_model()
    if loaded is None or loaded.version.name != version:
        return None
    import torch

    from matching.feature_store import load_city
    from matching.ml.features import user_features
    from matching.ml.pairs import PairFeaturizer

    city = load_city(_context_ids(me, candidates.tolist()))
    features = user_features(city, timezone.now().timestamp())
    featurizer = PairFeaturizer(city, features, venue_visitors=_venue_visitors(city.venue_ids))
    rows = np.searchsorted(city.user_ids, candidates)
    pairs = featurizer.pair_features(int(np.searchsorted(city.user_ids, me)), rows)
    with torch.no_grad():
        logits = loaded.model.rank(
            torch.from_numpy(np.repeat(seed[None, :], len(candidates), axis=0).astype(np.float32)),
            torch.from_numpy(targets.astype(np.float32)), torch.from_numpy(pairs),
        ).numpy()
    # The head is trained listwise: its scores order candidates but carry no absolute scale.
    spread = logits.max() - logits.min()
    return (logits - logits.min()) / spread if spread > 0 else np.full(len(logits), 0.5)
