"""People nearby, ranked: who is close and who is like you, without revealing where anyone is.

``nearby_matches`` follows these steps:

1. Candidates: discoverable, active, unhidden, unsuspended people within the radius, nearest
   first up to ``CANDIDATE_CAP`` (in a dense city "everyone within 5 km" is tens of thousands),
   minus the asker, anyone blocked either way and, by default, existing connections. They come
   from the process's in-memory map of everyone who may be shown (``matching.people_map``, kept
   current from a change log); who the asker never sees is read with the asker's own row, and
   the people an answer finally shows are read once more, eligibility checked, with their names.
2. Privacy: every candidate's position is snapped to a grid of ``NEARBY_GRID_METRES`` (100 m by
   default, ``matching.grid``) before any distance is computed, and the radius applies to the
   snapped distance, so neither the distance, the order of results nor who is within the radius
   carries more than the cell (exact distances, rounded or noised per query, were trilaterated
   to metres in other products). Distances leave as buckets ("1-2 km").
3. Similarity: with a published embedding set, the cosine of the asker's seed embedding with the
   candidates' target embeddings, one matrix product for all of them; then the ranking head
   re-ranks the best ``RERANK_POOL`` of them by that cosine and distance (step 4) with the pair
   features (``PAIR_NAMES``: mutual friends, common venues, co-location, interest overlap ...)
   in one vectorised pass, and its scores, scaled to [0, 1] within the pool, are the
   similarity; the answer comes from the pool. What the pair features read comes from one SQL
   statement per request (``pair_context_load``: the friendships of the asker, of their friends
   and of the candidates, and the asker's own visits, activities, weekly availability and
   pings) and, for candidates the embedding set holds unchanged, their visits, activities,
   availability and pinged spots as of the set (``matching.ml.person_rows``); preference
   vectors and venue visitor counts were computed with the set too (``matching.serving``). Without a model (none trained yet), rules: shared interests (Jaccard)
   and closeness in age. The response says which (``ranker``: "model" or "rules").
4. Fusion: ``w_distance * distance_score + w_similarity * similarity`` (0.6 and 0.4 by default,
   seed 000 section 5.1), with ``distance_score = 1 - distance / radius``.
5. Every returned person is logged as an impression with position, surface and model version
   (buffered in Redis and written in batches: ``matching.services.impressions``).

A person who moves their query point around quickly (a new place far away within seconds, or
many places within a minute) is refused with ``QueryPointMoving`` (HTTP 429): distance buckets
from many query points would otherwise trilaterate someone's grid cell.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from matching.ml.arrays import member, unique, unique_counts
from matching.ml.features import log_cap
from matching.ml.fusion import fuse
from matching.ml.pairs import (
    PAIR_NAMES,
    SLOT_MINUTES,
    WEEK_MINUTES,
    adamic_adar_weights,
    haversine_km,
)
from matching.ml.person_rows import PersonRows, spot_keys, spot_unpack
from matching.people_map import SHOWN_WHERE, Nearest, people_map
from matching.services.experiments import serving_arm
from matching.services.impressions import impressions_record
from matching.serving import ServingSet, store
from socialmatch.db import fetch_prepared as _fetch_prepared
from users.models import Profile, User

CANDIDATE_CAP = 500
# Freshness (a fusion objective) falls from 1 for someone active now to 0 at this many days.
FRESHNESS_DAYS = 30
# The ranking head scores this many of the candidates (and at least this many per result asked
# for), the best by distance and cosine: the pair features' rows are read per scored person.
RERANK_POOL = 100
RERANK_PER_RESULT = 4
# People served from an embedding set's rows also have what they did since the rows were read
# taken from the database, from this long before (clocks of the machines may differ a little;
# rows read twice are removed).
SET_ROWS_MARGIN = dt.timedelta(minutes=5)
MAX_RADIUS_KM = 50.0
MAX_LIMIT = 100
BUCKETS_KM = (1, 2, 5, 10, 20, 50)
NO_LOCATION = "Set your location first, or pass lat and lon."
MOVING_TOO_FAST = (
    "Your search location moved {km:.0f} km in {seconds:.0f} s. Searches from far-apart places "
    "in quick succession are paused for a moment to protect everyone's location; try again in "
    "{retry} s."
)
TOO_MANY_PLACES = (
    "You searched from {cells} different places within {window} s. To protect everyone's location, "
    "searching from new places is paused; try again in {retry} s."
)


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


class QueryPointMoving(NearbyError):
    """The asker's query point moves too fast or too widely; ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def distance_bucket(km: float) -> str:
    low = 0
    for high in BUCKETS_KM:
        if km < high:
            return f"< {high} km" if low == 0 else f"{low}-{high} km"
        low = high
    return f"> {BUCKETS_KM[-1]} km"


# Who the asker never sees, whoever is near: blocked either way, connected or asked (unless
# ``include_connected``), passed on lately. Read with the asker's own row, in the same statement.
_EXCLUDED_SQL = """
ARRAY(SELECT blocked_id FROM users_block WHERE blocker_id = %(me)s
      UNION ALL SELECT blocker_id FROM users_block WHERE blocked_id = %(me)s
      UNION ALL SELECT to_user_id FROM users_connection
      WHERE from_user_id = %(me)s AND status IN ('accepted', 'pending') AND NOT %(include_connected)s
      UNION ALL SELECT from_user_id FROM users_connection
      WHERE to_user_id = %(me)s AND status IN ('accepted', 'pending') AND NOT %(include_connected)s
      UNION ALL SELECT target_user_id FROM matching_interaction
      WHERE actor_id = %(me)s AND kind = 'pass' AND target_user_id IS NOT NULL
        AND occurred_at > now() - make_interval(days => %(pass_days)s))
"""

def _mutual_friends(me: int, others: list[int]) -> dict[int, int]:
    """Friends each of ``others`` has in common with ``me`` (the rules' reason; the model's comes
    from its pair context), from the people map's friendships."""
    if not others:
        return {}
    users, friends = people_map.friendships(np.array(others, dtype=np.int64))
    mine = unique(people_map.friendships(np.array([me], dtype=np.int64))[1])
    common = member(friends, mine)
    counted, counts = unique_counts(users[common])
    return dict(zip(counted.tolist(), counts.tolist(), strict=True))


# The asker's own position, interests and birth year, and who they never see (one row even
# for someone without a profile); and the names and interests of the people an answer shows (or
# the rules compare), read only for those who may still be shown: the people map (step 1) can be
# a moment behind a change, this read never is. Prepared statements as the others: through the
# ORM each cost about a millisecond more, most of it building the query.
_ASKER_SQL = f"""
SELECT ST_X(p.location::geometry), ST_Y(p.location::geometry), p.interests, p.birth_year, {_EXCLUDED_SQL}
FROM (SELECT 1) AS one LEFT JOIN users_profile p ON p.user_id = %(me)s
"""
_SHOWN_SQL = f"""
SELECT p.user_id, p.display_name, p.interests FROM users_profile p JOIN users_user u ON u.id = p.user_id
WHERE p.user_id = ANY(%(ids)s) AND {SHOWN_WHERE}
"""
# People read for an answer beyond ``limit``, so that one who may no longer be shown leaves a
# place the next one takes.
SHOWN_SPARE = 5


@dataclass
class Asker:
    lon: float | None
    lat: float | None
    interests: list[str]
    birth_year: int | None
    excluded: np.ndarray  # ids never shown to them (blocked, connected, passed on)


def _asker(me: int, *, include_connected: bool) -> Asker:
    rows = _fetch_prepared(_ASKER_SQL, {
        "me": me, "include_connected": include_connected, "pass_days": int(settings.NEARBY_PASS_DAYS),
    }, binary=True)
    lon, lat, interests, year, excluded = rows[0]
    return Asker(lon=lon, lat=lat, interests=list(interests or []), birth_year=year,
                 excluded=np.array([me, *excluded], dtype=np.int64))


def nearby_candidates(
    *, me: int, lon: float, lat: float, radius_km: float, cap: int = CANDIDATE_CAP,
    include_connected: bool = False, excluded: np.ndarray | None = None,
) -> Nearest:
    """The ``cap`` people nearest by snapped distance who may be shown to ``me``, within the
    radius, from the people map; ``excluded`` (the asker included), when the caller has read it."""
    if excluded is None:
        excluded = _asker(me, include_connected=include_connected).excluded
    return people_map.nearest(
        lon=float(lon), lat=float(lat), radius_m=radius_km * 1000.0, cap=int(cap),
        grid_m=float(settings.NEARBY_GRID_METRES), excluded=excluded,
    )


def _shown(ids: list[int]) -> dict[int, tuple[str, list[str]]]:
    """Display name and interests of each of ``ids`` who may be shown: one indexed read."""
    if not ids:
        return {}
    rows = _fetch_prepared(_SHOWN_SQL, {"ids": ids}, binary=True)
    return {user_id: (name, list(interests or [])) for user_id, name, interests in rows}


def nearby_matches(
    *, user: User, radius_km: float = 5.0, limit: int = 20, lon: float | None = None, lat: float | None = None,
    include_connected: bool = False,
) -> NearbyResult:
    if not 0 < radius_km <= MAX_RADIUS_KM or not 1 <= limit <= MAX_LIMIT:
        raise NearbyError("radius or limit out of range")  # the API validates first; services check too
    asker = _asker(user.pk, include_connected=include_connected)
    my_interest_list, my_year = asker.interests, asker.birth_year
    if lon is None or lat is None:
        if asker.lon is None:
            raise NearbyError(NO_LOCATION)
        lon, lat = asker.lon, asker.lat
    query_point_check(user_id=user.pk, lon=lon, lat=lat)
    found_nearby = nearby_candidates(
        me=user.pk, lon=lon, lat=lat, radius_km=radius_km, excluded=asker.excluded,
    )
    if not len(found_nearby):
        return NearbyResult(ranker="rules", model_version="", matches=[])
    ids = found_nearby.ids
    distance_km = found_nearby.distance_m / 1000.0
    distance_score = np.clip(1.0 - distance_km / radius_km, 0.0, 1.0)
    my_interests = set(my_interest_list or [])
    years = found_nearby.birth_years
    shown: dict[int, tuple[str, list[str]]] = {}

    # The arm of any A/B test running on this surface: its ranking configuration, and the model
    # version whose embedding set serves it (the active one by default).
    arm = serving_arm(surface="nearby", user_id=user.pk)
    serving = store.for_version(arm.model_version) if arm.model_version else store.current()
    ranker, version = "rules", ""
    similarity = None
    mutual: dict[int, int] | None = None
    pool: np.ndarray | None = None  # rows the ranking head scored; the answer comes from them
    objectives: dict[str, np.ndarray] = {"distance": distance_score}
    if serving is not None:
        mine, my_found = serving.vectors(np.array([user.pk]), "seed")
        targets, found = serving.vectors(ids, "target")
        if my_found[0] and found.any():
            cosine = targets @ mine[0]
            similarity = np.where(found, (cosine + 1.0) / 2.0, 0.0)
            ranker, version = "model", serving.version
            current = serving.version in (store.active_version, arm.model_version) and serving.pref is not None
            model = serving.ranking_model() if current else None
            if model is not None:
                # A cascade: the head re-ranks the best by distance and cosine only.
                first = fuse({"distance": distance_score, "similarity": similarity}, arm.objectives)
                pool = np.lexsort((ids, -first))[:max(RERANK_POOL, RERANK_PER_RESULT * limit)]
                context = pair_context_load(me=user.pk, candidates=ids[pool], serving=serving)
                pairs = pair_features_served(
                    context, serving, distance_km=distance_km[pool], my_birth_year=my_year,
                    birth_years=years[pool],
                )
                logits = _rank_logits(model, mine[0], targets[pool], pairs)
                similarity[pool] = np.where(found[pool], _scaled(logits), 0.0)
                objectives.update(_head_objectives(
                    arm.objectives, model, serving, user.pk, ids, pool, found, logits, pairs,
                ))
                counts = context.mutual_friends().tolist()
                mutual = dict(zip(ids[pool].tolist(), counts, strict=True))
    if similarity is None:
        shown = _shown(ids.tolist())
        theirs = [set(shown.get(i, ("", []))[1]) for i in ids.tolist()]
        union = np.array([len(my_interests | t) for t in theirs], dtype=np.float64)
        common = [len(my_interests & t) for t in theirs]
        jaccard = np.divide(common, union, out=np.zeros(len(ids)), where=union > 0)
        age = np.where(np.isfinite(years) & (my_year is not None), 1.0 - np.abs(years - (my_year or 0)) / 30.0, 0.5)
        similarity = 0.75 * jaccard + 0.25 * np.clip(age, 0.0, 1.0)
    if pool is None:
        pool = np.arange(len(ids))
    objectives["similarity"] = similarity
    if "freshness" in arm.objectives:
        objectives["freshness"] = _freshness(ids, pool)
    score = fuse(objectives, arm.objectives)
    order = pool[np.lexsort((ids[pool], -score[pool]))][:limit + SHOWN_SPARE]
    if not shown:
        shown = _shown([int(ids[i]) for i in order])
    order = np.array([i for i in order if int(ids[i]) in shown], dtype=np.int64)[:limit]
    if mutual is None:
        mutual = _mutual_friends(user.pk, [int(ids[i]) for i in order])
    matches = []
    for i in order:
        user_id = int(ids[i])
        name, interests = shown[user_id]
        matches.append(Match(
            user_id=user_id, display_name=name, distance_bucket=distance_bucket(float(distance_km[i])),
            similarity=round(float(similarity[i]), 4), score=round(float(score[i]), 4),
            shared_interests=sorted(my_interests & set(interests)),
            mutual_friends=int(mutual.get(user_id, 0)),
        ))
    _impressions_log(user, matches, version, arm.variant)
    return NearbyResult(ranker=ranker, model_version=version, matches=matches)


def _head_objectives(
    wanted: dict[str, object], model: object, serving: object, me: int, ids: np.ndarray, pool: np.ndarray,
    found: np.ndarray, logits: np.ndarray, pairs: np.ndarray,
) -> dict[str, np.ndarray]:
    """The objectives only the ranking head gives: ``acceptance``, its probability that the asker
    connects, and ``reciprocity``, the same question asked the other way round (their seed
    embedding against the asker's target embedding); computed only when the arm weighs them."""
    out: dict[str, np.ndarray] = {}
    if "acceptance" in wanted:
        acceptance = np.zeros(len(ids))
        acceptance[pool] = np.where(found[pool], 1.0 / (1.0 + np.exp(-logits)), 0.0)
        out["acceptance"] = acceptance
    if "reciprocity" in wanted:
        import torch

        mine_target, my_found = serving.vectors(np.array([me]), "target")  # type: ignore[attr-defined]
        theirs, their_found = serving.vectors(ids[pool], "seed")  # type: ignore[attr-defined]
        back = np.zeros(len(ids))
        if my_found[0]:
            with torch.inference_mode():
                logits_back = model.rank(  # type: ignore[attr-defined]
                    torch.from_numpy(np.ascontiguousarray(theirs, dtype=np.float32)),
                    torch.from_numpy(np.repeat(mine_target.astype(np.float32), len(pool), axis=0)),
                    torch.from_numpy(pairs),
                ).numpy()
            back[pool] = np.where(their_found, 1.0 / (1.0 + np.exp(-logits_back)), 0.0)
        out["reciprocity"] = back
    return out


def _freshness(ids: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """1 for someone active now, falling to 0 at FRESHNESS_DAYS or more (or never)."""
    seen = dict(Profile.objects.filter(user_id__in=ids[pool].tolist()).values_list("user_id", "last_active_at"))
    now = timezone.now()
    fresh = np.zeros(len(ids))
    for i in pool:
        when = seen.get(int(ids[i]))
        if when is not None:
            fresh[i] = max(0.0, 1.0 - (now - when).total_seconds() / (FRESHNESS_DAYS * 86_400.0))
    return fresh


def _impressions_log(user: User, matches: list[Match], version: str, variant: str = "") -> None:
    """Buffered (``matching.services.impressions``): the answer does not wait for the database."""
    impressions_record(actor_id=user.pk, targets=[m.user_id for m in matches], surface="nearby",
                       model_version=version, variant=variant)


# ----------------------------------------------------------------------------------------------
# Query points that move too fast


def _moves_key(user_id: int) -> str:
    return f"matching:nearby-moves:{user_id}"


def query_point_check(*, user_id: int, lon: float, lat: float, now: float | None = None) -> None:
    """Refuse (``QueryPointMoving``) a query point that moves too fast or visits too many places.

    1. Read the person's recent query points from Redis: (time, lon, lat, cell), one entry per
       accepted request within ``NEARBY_MOVE_WINDOW_SECONDS``; a cell is a square of
       ``NEARBY_MOVE_CELL_KM``.
    2. Too fast: more than ``NEARBY_MOVE_MAX_KM`` from the previous point within
       ``NEARBY_MOVE_JUMP_SECONDS``.
    3. Too many places: the new point's cell would make more than ``NEARBY_MOVE_MAX_CELLS``
       distinct cells within the window.
    4. Otherwise record the point. A refused point is not recorded, so the person's real position
       stays the reference and waiting is enough to be let through again.
    """
    now = time.time() if now is None else now
    window = float(settings.NEARBY_MOVE_WINDOW_SECONDS)
    cell_km = float(settings.NEARBY_MOVE_CELL_KM)
    km_east = lon * 111.32 * math.cos(math.radians(lat))
    cell = f"{math.floor(lat * 111.32 / cell_km)}:{math.floor(km_east / cell_km)}"
    key = _moves_key(user_id)
    points = [p for p in (cache.get(key) or []) if now - p[0] < window]
    if points:
        last_time, last_lon, last_lat, _ = points[-1]
        km = float(haversine_km(last_lon, last_lat, lon, lat))
        elapsed = max(now - last_time, 0.0)
        if km > settings.NEARBY_MOVE_MAX_KM and elapsed < settings.NEARBY_MOVE_JUMP_SECONDS:
            retry = max(1, math.ceil(settings.NEARBY_MOVE_JUMP_SECONDS - elapsed))
            message = MOVING_TOO_FAST.format(km=km, seconds=elapsed, retry=retry)
            raise QueryPointMoving(message, retry)
        cells = {p[3] for p in points}
        if cell not in cells and len(cells) >= settings.NEARBY_MOVE_MAX_CELLS:
            retry = max(1, math.ceil(window - (now - points[0][0])))  # when the oldest leaves
            message = TOO_MANY_PLACES.format(cells=len(cells) + 1, window=int(window), retry=retry)
            raise QueryPointMoving(message, retry)
    points.append((now, lon, lat, cell))
    cache.set(key, points[-64:], timeout=int(window) + 1)


# ----------------------------------------------------------------------------------------------
# Pair features for the ranking head: friendships from the people map, the rest from one
# statement


# Only rows that can matter for a pair with the asker travel: visits of venues the asker visited
# (and counts), availability overlapping the asker's, pings in the asker's spots on the asker's
# days. Sending every row of the candidates instead took more time in transfer and Python than in
# the server (7,800 rows against about 900 at 10,000 people). Friendships were read here too,
# as a join over the candidates, their friends and the asker's friends' friends: 2.1 ms of the
# statement's 2.1 at 1,000,000 people, against 0.8 without them.
_CONTEXT_SQL = """
WITH visits AS (
    SELECT DISTINCT actor_id AS u, target_venue_id AS v FROM matching_interaction
    WHERE actor_id = ANY(%(live)s) AND kind = 'visit' AND target_venue_id IS NOT NULL
),
my_spots AS (
    SELECT DISTINCT floor(extract(epoch FROM recorded_at) / 86400)::int8 AS day,
           round(ST_X(point::geometry) * 1e4) AS x, round(ST_Y(point::geometry) * 1e4) AS y
    FROM users_locationping WHERE user_id = %(me)s
)
SELECT 2, u, v, 0.0::float8, 0.0::float8 FROM visits
WHERE u = %(me)s OR v IN (SELECT v FROM visits WHERE u = %(me)s)
UNION ALL SELECT 6, u, count(*), 0, 0 FROM visits GROUP BY u
UNION ALL
SELECT 3, user_id, activity_id, 0, 0 FROM activities_participation
WHERE user_id = ANY(%(live)s) OR (user_id = ANY(%(from_set)s) AND joined_at >= %(since)s)
UNION ALL
SELECT 8, actor_id, target_venue_id, 0, 0 FROM matching_interaction
WHERE actor_id = ANY(%(from_set)s) AND kind = 'visit' AND target_venue_id IS NOT NULL
  AND occurred_at >= %(since)s
UNION ALL
SELECT 4, a.user_id, a.weekday, extract(epoch FROM a.start_time)::float8 / 60,
       extract(epoch FROM a.end_time)::float8 / 60
FROM users_availability a WHERE a.user_id = ANY(%(live)s) AND (a.user_id = %(me)s OR EXISTS (
    SELECT 1 FROM users_availability m WHERE m.user_id = %(me)s AND m.weekday = a.weekday
      AND m.start_time < a.end_time AND a.start_time < m.end_time))
UNION ALL
SELECT 5, p.user_id, s.day, ST_X(p.point::geometry), ST_Y(p.point::geometry)
FROM users_locationping p JOIN my_spots s
  ON s.day = floor(extract(epoch FROM p.recorded_at) / 86400)::int8
 AND s.x = round(ST_X(p.point::geometry) * 1e4) AND s.y = round(ST_Y(p.point::geometry) * 1e4)
WHERE p.user_id = ANY(%(live)s) OR (p.user_id = ANY(%(from_set)s) AND p.recorded_at >= %(since)s)
"""


# Everyone who joined an activity, visited a venue or sent a ping from a time on (an embedding
# set's build, less the margin): a handful of rows a minute, read through the time indexes.
_ACTIVE_SINCE_SQL = """
SELECT now(), ARRAY(
    SELECT user_id FROM activities_participation WHERE joined_at >= %(since)s
    UNION SELECT actor_id FROM matching_interaction
    WHERE kind = 'visit' AND target_venue_id IS NOT NULL AND occurred_at >= %(since)s
    UNION SELECT user_id FROM users_locationping WHERE recorded_at >= %(since)s)
"""


class RecentlyActive:
    """Who did anything since an embedding set was built, per process, so that a request asks
    the database what they did only of those few, not of every candidate the set serves.

    Probing the hundred candidates in three tables for rows since the set (rows that nearly
    always do not exist) was about a third of the pair context's time in PostgreSQL at 1,000,000
    people. Here the people active since then are read once, then every ``REFRESH_SECONDS``
    only the rows of the last ``SET_ROWS_MARGIN`` are read again (a transaction that commits a
    row later than that after its time is not seen until the set is rebuilt). A process sees its
    own writes at once: saving a join, a visit or a ping calls ``touch`` (``matching.signals``);
    other processes see them within ``REFRESH_SECONDS``.
    """

    REFRESH_SECONDS = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dt.datetime | None = None
        self._read_at: dt.datetime | None = None  # the database's clock at the last read
        self._checked = 0.0
        self._ids = np.zeros(0, dtype=np.int64)

    def ids(self, since: dt.datetime) -> np.ndarray:
        """Sorted ids of everyone active at or after ``since``."""
        with self._lock:
            if since != self._since:
                self._since, self._read_at, self._ids = since, None, np.zeros(0, dtype=np.int64)
            if self._read_at is not None and time.monotonic() - self._checked < self.REFRESH_SECONDS:
                return self._ids
            start = since if self._read_at is None else max(since, self._read_at - SET_ROWS_MARGIN)
            (read_at, ids), = _fetch_prepared(_ACTIVE_SINCE_SQL, {"since": start}, binary=True)
            self._ids = np.union1d(self._ids, np.asarray(ids, dtype=np.int64))
            self._read_at, self._checked = read_at, time.monotonic()
            return self._ids

    def touch(self) -> None:
        """This process wrote a join, a visit or a ping: read again on the next request."""
        self._checked = 0.0

    def reset(self) -> None:
        with self._lock:
            self._since, self._read_at, self._checked = None, None, 0.0
            self._ids = np.zeros(0, dtype=np.int64)


recently_active = RecentlyActive()


@dataclass
class PairContext:
    """What the pair features of one asker against their candidates read, as raw rows.

    ``edges``: accepted friendships (a, b), a the asker or a candidate, b the asker's friend or
    friend of a friend for a candidate; ``degrees``: (user, accepted friendships) of the asker
    and the candidates; ``friend_edges``: every accepted friendship (z, w) of each of the
    asker's friends z; ``visits``: (user, venue), distinct, of venues the asker visited;
    ``venue_counts``: (user, venues visited); ``joins``: (user, activity); ``availability``:
    (user, weekday, start, end minutes) overlapping the asker's; ``pings``: (user, UTC day, lon,
    lat) in the asker's spots and days. Users are database ids.
    """

    me: int
    candidates: np.ndarray  # (k,) database ids, in the caller's order
    edges: np.ndarray  # (e, 2)
    degrees: np.ndarray  # (d, 2)
    friend_edges: np.ndarray  # (f, 2)
    visits: np.ndarray  # (v, 2)
    venue_counts: np.ndarray  # (c, 2)
    joins: np.ndarray  # (j, 2)
    availability: np.ndarray  # (a, 4) float
    pings: np.ndarray  # (p, 4) float
    # The candidates sorted (and where each sorted one stands) and the asker's friends, made on
    # first use: a request asks for positions eight times and for the friends three.
    _order: np.ndarray | None = field(default=None, init=False, repr=False)
    _ranked: np.ndarray | None = field(default=None, init=False, repr=False)
    _my_friends: np.ndarray | None = field(default=None, init=False, repr=False)

    def positions(self, users: np.ndarray) -> np.ndarray:
        """Position of each user among the candidates, -1 for anyone else (the asker)."""
        if self._order is None or self._ranked is None:
            self._order = np.argsort(self.candidates, kind="stable")
            self._ranked = self.candidates[self._order]
        order, ranked = self._order, self._ranked
        if not len(ranked):
            return np.full(len(users), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(ranked, users), len(ranked) - 1)
        return np.where(ranked[at] == users, order[at], -1)

    def my_friends(self) -> np.ndarray:
        if self._my_friends is None:
            self._my_friends = unique(self.edges[self.edges[:, 0] == self.me, 1])
        return self._my_friends

    def mutual_friends(self) -> np.ndarray:
        """(k,) friends each candidate has in common with the asker (whole city)."""
        pos = self.positions(self.edges[:, 0])
        common = (pos >= 0) & member(self.edges[:, 1], self.my_friends())
        return np.bincount(pos[common], minlength=len(self.candidates))

    def per_candidate(self, pairs: np.ndarray) -> np.ndarray:
        """(k,) values of (user, value) rows for each candidate, 0 where there is none."""
        out = np.zeros(len(self.candidates))
        pos = self.positions(pairs[:, 0])
        out[pos[pos >= 0]] = pairs[pos >= 0, 1]
        return out


def pair_context_load(*, me: int, candidates: np.ndarray, serving: ServingSet | None = None) -> PairContext:
    """Every row the pair features of ``me`` against ``candidates`` read: friendships from the
    people map (current, as the database's), the rest from one statement plus the served set's
    ``PersonRows`` when it has them.

    Venues, activities, availability and pinged spots come from the database for people the set
    does not hold and for people whose embeddings were refreshed since it was built (a profile,
    availability or friendship change), and for the asker when any candidate's do; everyone
    else's come from the set, plus the visits, joins and pings they made since it was built (read
    here for those active since). With everyone served from the set and nobody active since, the
    statement is not run at all. Activities left since the build still count until the person is
    refreshed or the set rebuilt (nightly).
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    person_rows = serving.person_rows if serving is not None else None
    from_set = np.zeros(len(candidates), dtype=bool)
    set_rows = np.zeros(0, dtype=np.int64)
    if person_rows is not None:
        set_rows, from_set = serving.rows(candidates)
        if serving.overlay:
            from_set &= np.array([int(c) not in serving.overlay for c in candidates.tolist()], dtype=bool)
        set_rows = set_rows[from_set]
    served = candidates[from_set]
    # The asker's own rows come from the set too when every candidate's do (the statement
    # filters live candidates' visits by the asker's venues, so it needs the asker live too).
    if person_rows is not None and from_set.all() and me not in serving.overlay:
        my_row, my_found = serving.rows(np.array([me], dtype=np.int64))
        if my_found[0]:
            served, set_rows = np.concatenate([[me], served]), np.concatenate([my_row, set_rows])
    live = [] if len(served) and served[0] == me else [me]
    live += candidates[~from_set].tolist()
    # For people served from the set, what they did since it was built (joins, visits, pings;
    # with a margin over the time the set's inputs were read: duplicates are removed below),
    # asked only of those who did anything since (``recently_active``).
    since = None
    active_since: list[int] = []
    if person_rows is not None:
        since = dt.datetime.fromtimestamp(person_rows.taken_at, tz=dt.UTC) - SET_ROWS_MARGIN
        active_since = served[member(served, recently_active.ids(since))].tolist()
    rows: list[tuple[object, ...]] = []
    if live or active_since:  # with everyone served from the set and nobody active since: nothing to ask
        rows = _fetch_prepared(_CONTEXT_SQL, {
            "me": me, "live": live, "from_set": active_since, "since": since or timezone.now(),
        })
    table = np.array(rows, dtype=np.float64).reshape(-1, 5)
    kind = table[:, 0].astype(np.int64)

    def ints(k: int) -> np.ndarray:
        return table[kind == k, 1:3].astype(np.int64)

    edges, degrees, friend_edges = _friendships(me, candidates)
    context = PairContext(
        me=me, candidates=candidates, edges=edges, degrees=degrees, friend_edges=friend_edges,
        visits=ints(2), venue_counts=ints(6), joins=ints(3), availability=table[kind == 4, 1:5],
        pings=table[kind == 5, 1:5],
    )
    if len(set_rows):
        _add_set_rows(context, person_rows, served, set_rows, recent_visits=ints(8))
    return context


def _unique_rows(pairs: np.ndarray) -> np.ndarray:
    """``np.unique(pairs, axis=0)`` of (n, 2) non-negative integers, each row packed into one
    int64 first: the same rows in the same order, without sorting a structured view (which was
    most of the time of each call on a few hundred rows)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if not len(pairs):
        return pairs
    width = int(pairs[:, 1].max()) + 1
    if int(pairs.min()) < 0 or int(pairs[:, 0].max()) >= (1 << 62) // width:
        return np.unique(pairs, axis=0)
    keys = unique(pairs[:, 0] * width + pairs[:, 1])
    return np.column_stack([keys // width, keys % width])


def _friendships(me: int, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``PairContext``'s ``edges``, ``degrees`` and ``friend_edges`` from the people map: the
    friendships of the asker and the candidates that reach the asker's friends or their friends,
    everyone's count of friendships, and every friendship of each of the asker's friends."""
    ids = np.concatenate([[me], candidates]).astype(np.int64)
    a, b = people_map.friendships(ids)
    my_friends = unique(b[a == me])
    z, w = people_map.friendships(my_friends)
    keep = (a == me) | member(b, my_friends) | member(b, unique(w))
    edges = _unique_rows(np.column_stack([a[keep], b[keep]]))
    users, counts = unique_counts(a)
    return edges, np.column_stack([users, counts]), np.column_stack([z, w])


def _add_set_rows(
    context: PairContext, rows: PersonRows, users: np.ndarray, set_rows: np.ndarray, recent_visits: np.ndarray,
) -> None:
    """Add the set's rows of ``users`` (at ``set_rows``) to ``context``, in the shapes the
    statement gives (only visits of the asker's venues, only pings in the asker's spots), merged
    with what they did since the set was built (``recent_visits``: (user, venue); their recent
    joins and pings are in ``context`` already) and without duplicates."""
    me = context.me
    owner, venues = rows.visits_of(set_rows)
    known = np.concatenate([users[owner], recent_visits[:, 0]]), np.concatenate([venues, recent_visits[:, 1]])
    pairs = _unique_rows(np.column_stack(known))  # distinct (user, venue), set and since
    # The asker's venues and spots: from the statement, or from the set when the asker is served
    # from it too (``users`` then holds the asker).
    mine = unique(np.concatenate([context.visits[context.visits[:, 0] == me, 1], pairs[pairs[:, 0] == me, 1]]))
    counts = unique_counts(pairs[:, 0])
    owner_j, activities = rows.joins_of(set_rows)
    owner_a, slots = rows.availability_of(set_rows)
    owner_p, keys = rows.pings_of(set_rows)
    my_pings = context.pings[context.pings[:, 0] == me]
    my_keys = np.concatenate([spot_keys(my_pings[:, 1], my_pings[:, 2], my_pings[:, 3]), keys[users[owner_p] == me]])
    near = member(keys, unique(my_keys))
    day, lon, lat = spot_unpack(keys[near])
    context.visits = np.concatenate([context.visits, pairs[member(pairs[:, 1], mine)]])
    context.venue_counts = np.concatenate([context.venue_counts, np.column_stack(counts)])
    context.joins = _unique_rows(np.concatenate([context.joins, np.column_stack([users[owner_j], activities])]))
    context.availability = np.concatenate([context.availability, np.column_stack([users[owner_a], slots])])
    context.pings = np.concatenate([context.pings, np.column_stack([users[owner_p[near]], day, lon, lat])])


def _shared_with_me(users: np.ndarray, items: np.ndarray, me: int, pos: np.ndarray, k: int,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """Per candidate, the (weighted) count of its items that the asker has too."""
    mine = unique(items[users == me])
    hit = (pos >= 0) & member(items, mine)
    chosen = None if weights is None else weights[hit]
    return np.bincount(pos[hit], weights=chosen, minlength=k).astype(np.float64)


def _slots(availability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(user, half-hour slot of the week) pairs in which each user is free for the whole slot."""
    if not len(availability):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    user = availability[:, 0].astype(np.int64)
    week = availability[:, 1] * 1440
    first = np.ceil((week + availability[:, 2]) / SLOT_MINUTES).astype(np.int64)
    last = np.floor((week + availability[:, 3]) / SLOT_MINUTES).astype(np.int64)
    lengths = np.maximum(last - first, 0)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    slots = np.clip(np.repeat(first, lengths) + offsets, 0, WEEK_MINUTES // SLOT_MINUTES - 1)
    pairs = unique(np.repeat(user, lengths) * WEEK_MINUTES + slots)
    return pairs // WEEK_MINUTES, pairs % WEEK_MINUTES


def pair_features_served(
    context: PairContext, serving: ServingSet, *, distance_km: np.ndarray,
    my_birth_year: int | None, birth_years: np.ndarray,
) -> np.ndarray:
    """``(k, len(PAIR_NAMES))`` float32 pair features, as ``matching.ml.pairs.PairFeaturizer``
    computes them on the whole city, from ``context`` and the serving set's stored vectors.

    Two differences, both for privacy or cost: the distance is the grid-snapped one the request
    already computed (never exact positions), and a co-location spot's visitors are counted
    among the asker and the candidates rather than the whole city.
    """
    me, k = context.me, len(context.candidates)
    out = np.zeros((k, len(PAIR_NAMES)), dtype=np.float64)
    out[:, 0] = distance_km
    out[:, 1] = np.exp(-distance_km / 5.0)
    # Friends: whole-city neighbour lists of the candidates and of the asker's friends.
    edges = context.edges
    pos = context.positions(edges[:, 0])
    friends = context.my_friends()
    degree_c = context.per_candidate(context.degrees)
    # Degrees count accepted rows, as ``requests_accepted`` does; walks count distinct pairs.
    z_ids, z_degree = unique_counts(context.friend_edges[:, 0])
    z_rows = np.searchsorted(z_ids, edges[:, 1]).clip(0, max(len(z_ids) - 1, 0))
    is_common = (pos >= 0) & member(edges[:, 1], friends)
    degree_of_b = np.where(is_common, z_degree[z_rows] if len(z_ids) else 0, 0).astype(np.float64)
    out[:, 2] = log_cap(np.bincount(pos[is_common], minlength=k).astype(np.float64), 100.0)
    aa = adamic_adar_weights(np.maximum(degree_of_b, 1.0))
    friend_aa = np.bincount(pos[is_common], weights=aa[is_common], minlength=k)
    out[:, 3] = np.minimum(friend_aa / 10.0, 1.0)
    ra = np.divide(1.0, degree_of_b, out=np.zeros(len(degree_of_b)), where=degree_of_b > 0)
    out[:, 15] = np.minimum(np.bincount(pos[is_common], weights=ra[is_common], minlength=k), 1.0)
    out[:, 12] = log_cap(degree_c, 1000.0)
    my_degree = context.degrees[context.degrees[:, 0] == me, 1].sum()
    out[:, 13] = log_cap(np.array(float(my_degree)), 1000.0)
    # Walks of length 3 asker - z - b - candidate: two-hop counts of b, summed over b in N(c).
    two_hops = _unique_rows(context.friend_edges)
    two_ids, two_counts = unique_counts(two_hops[:, 1])
    if len(two_ids):
        at = np.searchsorted(two_ids, edges[:, 1]).clip(0, len(two_ids) - 1)
        hit = (pos >= 0) & (two_ids[at] == edges[:, 1])
        walks = np.bincount(pos[hit], weights=two_counts[at][hit].astype(np.float64), minlength=k)
        out[:, 16] = log_cap(walks, 1000.0)
    # Venues, with whole-city visitor counts from the embedding set.
    v_users, v_venues = context.visits[:, 0], context.visits[:, 1]
    v_pos = context.positions(v_users)
    out[:, 4] = log_cap(_shared_with_me(v_users, v_venues, me, v_pos, k), 100.0)
    venue_aa = adamic_adar_weights(serving.visitors(v_venues))
    out[:, 5] = np.minimum(_shared_with_me(v_users, v_venues, me, v_pos, k, venue_aa) / 10.0, 1.0)
    out[:, 14] = log_cap(context.per_candidate(context.venue_counts), 1000.0)
    # Preferences: unit vectors stored with the embedding set.
    pref = serving.prefs(np.concatenate([[me], context.candidates]))
    out[:, 6] = pref[1:] @ pref[0]
    interests = pref[:, :20] > 0
    inter = (interests[1:] & interests[0]).sum(axis=1).astype(np.float64)
    union = interests[0].sum() + interests[1:].sum(axis=1) - inter
    out[:, 7] = np.divide(inter, union, out=np.zeros(k), where=union > 0)
    j_pos = context.positions(context.joins[:, 0])
    joined = _shared_with_me(context.joins[:, 0], context.joins[:, 1], me, j_pos, k)
    out[:, 8] = log_cap(joined, 20.0)
    gap = np.abs(float(my_birth_year if my_birth_year is not None else np.nan) - birth_years)
    out[:, 9] = np.where(np.isfinite(gap), np.minimum(np.nan_to_num(gap) / 50.0, 1.0), 0.5)
    s_users, s_slots = _slots(context.availability)
    s_pos = context.positions(s_users)
    overlap_hours = _shared_with_me(s_users, s_slots, me, s_pos, k) * SLOT_MINUTES / 60.0
    out[:, 10] = np.minimum(overlap_hours / 40.0, 1.0)
    out[:, 11] = 1.0  # the asker's query point and every candidate's snapped position are known
    out[:, 17] = log_cap(_co_located(context, k), 20.0)
    return np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0).astype(np.float32)


def _co_located(context: PairContext, k: int) -> np.ndarray:
    """Adamic-Adar over (~10 m spot, UTC day) cells where the asker and a candidate both pinged."""
    pings = context.pings
    if not len(pings):
        return np.zeros(k)
    users = pings[:, 0].astype(np.int64)
    spots = [np.round(pings[:, 2] * 1e4), np.round(pings[:, 3] * 1e4), pings[:, 1]]
    keys = np.stack(spots, axis=1).astype(np.int64)
    # Each (lon, lat, day) as one int64 (22 + 21 + 20 bits once offset to non-negative: sorting
    # rows of a structured view was most of this function's time); rows outside those ranges
    # keep numpy's row-wise unique.
    shifted = keys + np.array([1 << 21, 1 << 20, 0])
    if len(keys) and shifted.min() >= 0 and (shifted.max(axis=0) < [1 << 22, 1 << 21, 1 << 20]).all():
        cells, cell = np.unique((shifted[:, 0] << 41) | (shifted[:, 1] << 20) | shifted[:, 2], return_inverse=True)
    else:
        cells, cell = np.unique(keys, axis=0, return_inverse=True)
    cell = cell.ravel()
    pairs = unique(users * len(cells) + cell)  # each person once per cell
    p_users, p_cells = pairs // len(cells), pairs % len(cells)
    visitors = np.bincount(p_cells, minlength=len(cells))
    p_pos = context.positions(p_users)
    weights = adamic_adar_weights(visitors)[p_cells]
    return _shared_with_me(p_users, p_cells, context.me, p_pos, k, weights)


def _rank_logits(
    model: object, seed: np.ndarray, targets: np.ndarray, pairs: np.ndarray,
) -> np.ndarray:
    import torch

    seeds = np.repeat(seed[None, :], len(targets), axis=0).astype(np.float32)
    with torch.inference_mode():
        return model.rank(  # type: ignore[attr-defined]
            torch.from_numpy(seeds),
            torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)),
            torch.from_numpy(pairs),
        ).numpy()


def _scaled(logits: np.ndarray) -> np.ndarray:
    # The head is trained listwise: its scores order candidates but carry no absolute scale.
    spread = logits.max() - logits.min()
    return (logits - logits.min()) / spread if spread > 0 else np.full(len(logits), 0.5)


def rank_speed(*, candidates: int = 1000, repeat: int = 20) -> dict[str, float]:
    """Milliseconds to rank ``candidates`` people nearby: one vectorised pass against a loop that
    computes one pair's features and calls the model once per pair (benchmarks).

    The asker is the served person with the most people within 5 km (of a sample of 20);
    both ways read the same loaded context, so only the ranking itself is compared.
    """
    serving = store.current()
    if serving is None or serving.pref is None:
        raise NearbyError("no embedding set with preference vectors is served")
    model = serving.ranking_model()
    if model is None:
        raise NearbyError("the served set's model cannot be loaded")
    rng = np.random.default_rng(0)
    best: tuple[Nearest, Profile] | None = None
    sample = rng.choice(serving.ids, size=min(20, len(serving.ids)), replace=False)
    for profile in Profile.objects.filter(user_id__in=sample.tolist(), location__isnull=False):
        found = nearby_candidates(me=profile.user_id, lon=profile.location.x, lat=profile.location.y,
                                  radius_km=MAX_RADIUS_KM, cap=candidates, include_connected=True)
        if best is None or len(found) > len(best[0]):
            best = (found, profile)
    assert best is not None
    found, profile = best
    me = profile.user_id
    ids, distance_km, years = found.ids, found.distance_m / 1000.0, found.birth_years
    seed = serving.vectors(np.array([me]), "seed")[0][0]
    targets = serving.vectors(ids, "target")[0]
    started = time.perf_counter()
    context = pair_context_load(me=me, candidates=ids, serving=serving)
    load_ms = (time.perf_counter() - started) * 1000

    def vectorised() -> np.ndarray:
        pairs = pair_features_served(context, serving, distance_km=distance_km,
                                     my_birth_year=profile.birth_year, birth_years=years)
        return _rank_logits(model, seed, targets, pairs)

    def loop() -> np.ndarray:
        out = np.empty(len(ids), dtype=np.float32)
        for i in range(len(ids)):
            one = dataclasses.replace(context, candidates=ids[i:i + 1])
            pairs = pair_features_served(one, serving, distance_km=distance_km[i:i + 1],
                                         my_birth_year=profile.birth_year,
                                         birth_years=years[i:i + 1])
            out[i] = _rank_logits(model, seed, targets[i:i + 1], pairs)[0]
        return out

    vectorised()  # warm-up: first calls allocate and load kernels
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fast = vectorised()
        times.append((time.perf_counter() - started) * 1000)
    loop_times = []
    for _ in range(3):
        started = time.perf_counter()
        slow = loop()
        loop_times.append((time.perf_counter() - started) * 1000)
    # The model calls alone, features computed once: how much of the loop is the model.
    pairs = pair_features_served(context, serving, distance_km=distance_km,
                                 my_birth_year=profile.birth_year, birth_years=years)
    started = time.perf_counter()
    for i in range(len(ids)):
        _rank_logits(model, seed, targets[i:i + 1], pairs[i:i + 1])
    model_loop_ms = (time.perf_counter() - started) * 1000
    # The head has dropout and batch-independent layers only: one pass and the loop agree.
    max_diff = float(np.abs(fast - slow).max())
    return {
        "candidates": float(len(ids)), "vectorised_ms": round(float(np.median(times)), 3),
        "loop_ms": round(float(np.median(loop_times)), 1), "context_load_ms": round(load_ms, 2),
        "loop_model_calls_only_ms": round(model_loop_ms, 1),
        "max_abs_difference": max_diff,
    }
