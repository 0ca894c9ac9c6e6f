"""Per-user features: the six groups of seed 000 section 3.1, as float32 matrices.

``user_features(data, now)`` turns a ``CityData`` into an ``(n, D)`` float32 matrix whose columns
the ``FeatureSchema`` names. Five groups describe a person and are stored; the sixth, context,
describes the moment of a request and is computed then (``context_features``).

Every value is bounded (mostly to [0, 1]) by a fixed cap or a fixed range, never by statistics of
the population, so one person's features do not move when other people sign up, and the batch
path and the one-person path agree exactly. Missing inputs get a documented default (0) plus a
``has_*`` indicator column, and a final guard replaces anything non-finite.

Group layout (dimension in brackets):

geo [25]
    lat_norm, lon_norm          lat / 90, lon / 180 (0 when unknown)
    geohash6                    integer value of the 6-character geohash / 32**6: the ~1 km cell
    geohash7..geohash9          the 7th, 8th, 9th character / 32: the sub-cell inside its parent.
                                (float32 holds 24 bits: the full 45-bit 9-character value would
                                collapse onto the 6-character one, so finer levels are digits.)
    stability                   1 / (1 + RMS distance of the pings from their centre in km)
    activity_radius             log1p(max distance of a ping from the centre, km) / log1p(100)
    place_<type> x15            share of visits (by weight) at venues of each place type
    has_location, has_history   missing-value indicators
behaviour [22]
    for 1, 7 and 30 days:
      events_<w>d               log1p(events in the window) / log1p(100), capped at 1
      diversity_<w>d            distinct event kinds / number of kinds
      morning/afternoon/evening/night_<w>d   share of the window's events in 06-12, 12-18,
                                18-24 and 00-06 UTC
    usage_minutes               minutes per day in sessions over 30 days / 1440 (a session ends
                                after 30 minutes without an event)
    sessions                    sessions per day over 30 days / 50, capped at 1
    recent_decayed              log1p(sum over events of decay ** days_ago) / log1p(100)
    has_events
social [10]
    friends                     log1p(accepted connections) / log1p(1000)
    density                     accepted / all connection requests the person took part in
    influence                   log1p(events aimed at the person in 30 days + friends) / log1p(1000)
    messages, likes, connect_requests   log1p(count in 30 days) / log1p(100): the posting,
                                commenting and sharing analogues this product has
    clustering                  edges among friends / possible edges among friends
    circles                     log1p(friends - edges among friends, at least 1) / log1p(50): a
                                lower bound on the number of separate friend circles (exact when
                                the circles are trees), cheap for a million people
    circle_activity             share of friends with an event in the last 7 days
    has_friends
demographic [16]
    age_group                   index among 18, 25, 35, 45, 55, 65 / 6 (0 when unknown)
    female, male, nonbinary     one-hot (all 0 for "prefer not to say")
    education, income           level / 5
    occ_<type> x5               one-hot occupation
    marital                     status / 4
    city_tier                   tier / 5
    years_in_city               min(years / 20, 1)
    languages                   min(count / 5, 1)
    has_demographics            the profile states at least one of these (else all are 0)
preference [51]
    interest_<slug> x20, activity_<slug> x10, placepref_<slug> x15, time_<slug> x6: the mean of
    the sources present (the profile's choices; behaviour: visits through venue categories,
    activities joined, the weekday/weekend and season of events), each scaled so its largest
    entry is 1.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from matching.ml.data import EVENT_KINDS, KIND_CODE, CityData, Laps
from matching.ml.geohash import encode_int

INTERESTS = (
    "sports", "music", "travel", "food", "reading", "gaming", "art", "technology", "fashion",
    "nature", "film", "photography", "fitness", "dance", "cooking", "pets", "volunteering",
    "languages", "nightlife", "wellness",
)
ACTIVITY_TYPES = INTERESTS[:10]
PLACE_TYPES = (
    "urban", "suburban", "rural", "coastal", "mountain", "park", "mall", "restaurant", "cafe",
    "gym", "bar", "museum", "library", "stadium", "transit",
)
TIME_PREFERENCES = ("weekday", "weekend", "spring", "summer", "autumn", "winter")
WINDOWS_DAYS = (1, 7, 30)
DAY = 86_400.0
SESSION_GAP_S = 30 * 60.0
AGE_GROUPS = (18, 25, 35, 45, 55, 65)
EARTH_RADIUS_KM = 6371.0088

# Event kinds that count as something aimed at a person (for influence).
_RECEIVED_KINDS = np.array([KIND_CODE[k] for k in ("view", "like", "connect_request", "message")])


@dataclass(frozen=True)
class FeatureSchema:
    """Names and group boundaries of a feature matrix; saved with every model."""

    version: str
    groups: tuple[tuple[str, tuple[str, ...]], ...]

    @property
    def names(self) -> list[str]:
        return [name for _, names in self.groups for name in names]

    @property
    def dim(self) -> int:
        return sum(len(names) for _, names in self.groups)

    def group_slices(self) -> dict[str, slice]:
        slices, start = {}, 0
        for group, names in self.groups:
            slices[group] = slice(start, start + len(names))
            start += len(names)
        return slices

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, object]:
        return {"version": self.version, "groups": [[g, list(n)] for g, n in self.groups]}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> FeatureSchema:
        groups = tuple((str(g), tuple(str(x) for x in names)) for g, names in raw["groups"])  # type: ignore[union-attr]
        return cls(version=str(raw["version"]), groups=groups)

    def check_compatible(self, other: FeatureSchema) -> None:
        """Raise FeatureSchemaMismatch unless ``other`` lays features out exactly like this one."""
        if self.to_dict() != other.to_dict():
            raise FeatureSchemaMismatch(
                f"feature schema {other.version} ({other.dim} columns, {other.fingerprint}) does not "
                f"match {self.version} ({self.dim} columns, {self.fingerprint})"
            )


class FeatureSchemaMismatch(ValueError):
    """A model was trained on features of another layout than the ones offered to it."""


def _window_names() -> tuple[str, ...]:
    names: list[str] = []
    for w in WINDOWS_DAYS:
        names += [f"events_{w}d", f"diversity_{w}d", f"morning_{w}d", f"afternoon_{w}d",
                  f"evening_{w}d", f"night_{w}d"]
    return tuple(names)


SCHEMA = FeatureSchema(
    version="user-features-1",
    groups=(
        ("geo", ("lat_norm", "lon_norm", "geohash6", "geohash7", "geohash8", "geohash9",
                 "stability", "activity_radius", *(f"place_{t}" for t in PLACE_TYPES),
                 "has_location", "has_history")),
        ("behaviour", (*_window_names(), "usage_minutes", "sessions", "recent_decayed", "has_events")),
        ("social", ("friends", "density", "influence", "messages", "likes", "connect_requests",
                    "clustering", "circles", "circle_activity", "has_friends")),
        ("demographic", ("age_group", "female", "male", "nonbinary", "education", "income",
                         *(f"occ_{o}" for o in ("student", "professional", "service", "business", "other")),
                         "marital", "city_tier", "years_in_city", "languages", "has_demographics")),
        ("preference", (*(f"interest_{s}" for s in INTERESTS), *(f"activity_{s}" for s in ACTIVITY_TYPES),
                        *(f"placepref_{s}" for s in PLACE_TYPES), *(f"time_{s}" for s in TIME_PREFERENCES))),
    ),
)


@dataclass(frozen=True)
class FeatureConfig:
    decay_per_day: float = 0.95  # weight of an event one day old, relative to one from now
    history_days: float = 90.0  # pings older than this do not count for stability and radius


def user_features(
    data: CityData, now: float, config: FeatureConfig = FeatureConfig(), *,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """The ``(n_users, SCHEMA.dim)`` float32 feature matrix of every user in ``data``.

    ``now`` is the reference time in unix seconds (the request time, or the end of a dataset).
    ``timings``, when given, receives the seconds spent per group (benchmarks).

    Each group computes its columns in float64 and writes them straight into its float32 slice of
    the result: every value is rounded to float32 once, and no (n, width) float64 copy of a group
    is held (at a million users those copies cost more memory than the result itself).
    """
    lap = Laps(timings)
    data.validate()
    n = data.n_users
    slices = SCHEMA.group_slices()
    recent = _recent_activity(data, now)
    lap("validate")
    out = np.empty((n, SCHEMA.dim), dtype=np.float32)
    # Touch every page once, in order: the groups write column by column, and a first touch by
    # a column write would fault the pages in at random.
    out.fill(0.0)
    lap("allocate")
    _geo(data, now, config, out[:, slices["geo"]])
    lap("geo")
    _behaviour(data, now, config, out[:, slices["behaviour"]])
    lap("behaviour")
    _social(data, now, recent, out[:, slices["social"]])
    lap("social")
    _demographic(data, now, out[:, slices["demographic"]])
    lap("demographic")
    _preference(data, out[:, slices["preference"]])
    lap("preference")
    # Nothing non-finite ever reaches a model (in blocks: nan_to_num makes masks of its input).
    for start in range(0, n, _BLOCK_ROWS):
        np.nan_to_num(out[start:start + _BLOCK_ROWS], copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    lap("finite")
    return out


# ----------------------------------------------------------------------------------------------
# helpers on per-row arrays

# Rows per block of the row-wise steps that would otherwise hold several (n, width) temporaries
# at once (blending preferences, replacing non-finite values).
_BLOCK_ROWS = 1 << 16
# Users per block of the sums over visits (``_visit_blocks``), the largest temporaries.
_USER_BLOCK = 1 << 18


def _count(index: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(index, weights=weights, minlength=n).astype(np.float64, copy=False)[:n]


def _count2(
    rows: np.ndarray, cols: np.ndarray, n: int, width: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """(n, width) float64 sums of ``weights`` (or counts) per (row, col) pair.

    Equal to ``np.add.at(zeros, (rows, cols), weights)`` to the bit (both add in input order),
    and several times faster.
    """
    flat = rows * width
    flat += cols
    if weights is None and len(flat) < n * width:
        weights = np.ones(len(flat))  # float64 counts straight away, not int64 then a copy
    sums = np.bincount(flat, weights=weights, minlength=n * width)
    return sums.astype(np.float64, copy=False).reshape(n, width)


def log_cap(x: np.ndarray, cap: float) -> np.ndarray:
    return np.minimum(np.log1p(np.maximum(x, 0.0)) / np.log1p(cap), 1.0)


def _max_normalise(matrix: np.ndarray) -> np.ndarray:
    peak = matrix.max(axis=1, keepdims=True)
    return np.divide(matrix, peak, out=np.zeros_like(matrix, dtype=np.float64), where=peak > 0)


def _local_km(lon: np.ndarray, lat: np.ndarray, lon0: np.ndarray, lat0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets in km on a local equirectangular plane around (lon0, lat0): exact enough in a city."""
    kx = np.radians(1.0) * EARTH_RADIUS_KM * np.cos(np.radians(lat0))
    ky = np.radians(1.0) * EARTH_RADIUS_KM
    return (lon - lon0) * kx, (lat - lat0) * ky


def _recent_activity(data: CityData, now: float) -> np.ndarray:
    """Whether each user has an event in the last 7 days (used by circle activity)."""
    mask = (data.event_time > now - 7 * DAY) & (data.event_time <= now)
    return _count(data.event_user[mask], data.n_users) > 0


def _visits(data: CityData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user row, venue row, weight) of the visits to known venues.

    When every event is one, these are the columns themselves, not copies.
    """
    visits = (data.event_kind == KIND_CODE["visit"]) & (data.event_venue >= 0)
    if visits.all():
        return data.event_user, data.event_venue, data.event_weight
    return data.event_user[visits], data.event_venue[visits], data.event_weight[visits]


def _visit_blocks(data: CityData) -> Iterator[tuple[slice, np.ndarray, np.ndarray, np.ndarray]]:
    """(users, user row - users.start, venue row, weight) of the visits of each block of users.

    Per-user sums over a block's visits see the same visits in the same order as one pass over
    everyone, so they are equal to the bit; the temporaries are a block's, not the population's.
    """
    n = data.n_users
    vu, vv, vw = _visits(data)
    for start in range(0, n, _USER_BLOCK):
        users = slice(start, min(start + _USER_BLOCK, n))
        if users.start == 0 and users.stop == n:
            yield users, vu, vv, vw
            return
        mine = (vu >= users.start) & (vu < users.stop)
        yield users, vu[mine] - users.start, vv[mine], vw[mine]


def _visited_place_types(
    data: CityData, users: slice, vu: np.ndarray, vv: np.ndarray, vw: np.ndarray
) -> np.ndarray:
    """(users, 15) visit weight per place type of the visited venue (visits from _visit_blocks)."""
    ptype = data.venue_place_type[vv] if len(vv) else np.zeros(0, dtype=np.int64)
    typed = ptype >= 0
    if not typed.all():
        vu, ptype, vw = vu[typed], ptype[typed], vw[typed]
    return _count2(vu, ptype, users.stop - users.start, len(PLACE_TYPES), vw)


def _ping_spread(
    data: CityData, now: float, config: FeatureConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(has history, RMS distance, max distance in km) of each user's recent pings from their
    mean centre."""
    n = data.n_users
    recent = (data.ping_time > now - config.history_days * DAY) & (data.ping_time <= now)
    pu, plon, plat = data.ping_user[recent], data.ping_lon[recent], data.ping_lat[recent]
    count = _count(pu, n)
    safe = np.maximum(count, 1.0)
    clon = _count(pu, n, plon) / safe
    clat = _count(pu, n, plat) / safe
    dx, dy = _local_km(plon, plat, clon[pu], clat[pu])
    dist = np.hypot(dx, dy)
    rms = np.sqrt(_count(pu, n, dist**2) / safe)
    radius = np.zeros(n)
    np.maximum.at(radius, pu, dist)
    return count > 0, rms, radius


# ----------------------------------------------------------------------------------------------
# the groups: each fills ``cols``, its (n, width) float32 slice of the result (zeros on entry)


def _geo(data: CityData, now: float, config: FeatureConfig, cols: np.ndarray) -> None:
    known = np.isfinite(data.lon) & np.isfinite(data.lat)
    lat = np.where(known, data.lat, 0.0)
    lon = np.where(known, data.lon, 0.0)
    cols[:, 0] = lat / 90.0
    cols[:, 1] = lon / 180.0
    code9 = encode_int(lat, lon, 9)
    cols[:, 2] = (code9 >> 15).astype(np.float64) / 32.0**6
    cols[:, 3] = ((code9 >> 10) & 31) / 32.0
    cols[:, 4] = ((code9 >> 5) & 31) / 32.0
    cols[:, 5] = (code9 & 31) / 32.0
    cols[~known, 2:6] = 0.0
    del lat, lon, code9

    # Stability and radius from the recent location history around its mean centre.
    has_history, rms, radius = _ping_spread(data, now, config)
    cols[:, 6] = np.where(has_history, 1.0 / (1.0 + rms), 0.0)
    cols[:, 7] = np.where(has_history, log_cap(radius, 100.0), 0.0)

    # Where people go: shares of visit weight by the venue's place type.
    for users, vu, vv, vw in _visit_blocks(data):
        shares = _visited_place_types(data, users, vu, vv, vw)
        total = shares.sum(axis=1, keepdims=True)
        np.divide(shares, total, out=shares, where=total > 0)
        shares[~(total[:, 0] > 0)] = 0.0
        cols[users, 8:8 + len(PLACE_TYPES)] = shares
    cols[:, -2] = known
    cols[:, -1] = has_history


def _behaviour(data: CityData, now: float, config: FeatureConfig, cols: np.ndarray) -> None:
    n = data.n_users
    past = data.event_time <= now
    eu, ek, et = data.event_user, data.event_kind, data.event_time
    if not past.all():
        eu, ek, et = eu[past], ek[past], et[past]
    hour = np.mod(et, DAY)
    hour /= 3600.0
    np.floor(hour, out=hour)
    # 0 morning 06-12, 1 afternoon 12-18, 2 evening 18-24, 3 night 00-06
    part = np.select([hour < 6, hour < 12, hour < 18], [np.int8(3), np.int8(0), np.int8(1)],
                     default=np.int8(2))
    del hour
    n_kinds = len(EVENT_KINDS)
    for i, w in enumerate(WINDOWS_DAYS):
        m = et > now - w * DAY
        u, k, p = eu[m], ek[m], part[m]
        count = _count(u, n)
        # Distinct kinds per user: count distinct (user, kind) pairs.
        pairs = np.unique(u * n_kinds + k)
        distinct = _count(pairs // n_kinds, n)
        tod = _count2(u, p, n, 4)
        base = 6 * i
        cols[:, base] = log_cap(count, 100.0)
        cols[:, base + 1] = distinct / n_kinds
        cols[:, base + 2:base + 6] = np.divide(tod, count[:, None], out=np.zeros_like(tod), where=count[:, None] > 0)

    # Sessions over 30 days: a new session starts after a 30-minute gap.
    m = et > now - 30 * DAY
    u, t = eu[m], et[m]
    order = np.lexsort((t, u))
    u, t = u[order], t[order]
    new_session = np.ones(len(u), dtype=bool)
    if len(u) > 1:
        new_session[1:] = (u[1:] != u[:-1]) | (t[1:] - t[:-1] > SESSION_GAP_S)
    # Events are sorted by user, then time: a session starts at its first event, ends at its last.
    first = np.flatnonzero(new_session)
    last = np.append(first[1:] - 1, len(u) - 1) if len(first) else first
    session_user = u[first]
    # A session of one event still took a minute of someone's time.
    minutes = np.maximum((t[last] - t[first]) / 60.0, 1.0)
    cols[:, 18] = np.minimum(_count(session_user, n, minutes) / 30.0 / 1440.0, 1.0)
    cols[:, 19] = np.minimum(_count(session_user, n) / 30.0 / 50.0, 1.0)

    decay = now - et  # days ago, then the decay weight, in place
    np.maximum(decay, 0.0, out=decay)
    decay /= DAY
    np.power(config.decay_per_day, decay, out=decay)
    decayed = _count(eu, n, decay)
    del decay
    cols[:, 20] = log_cap(decayed, 100.0)
    cols[:, 21] = _count(eu, n) > 0


def friend_matrix(data: CityData) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency of accepted connections, (n, n) CSR."""
    return adjacency(data.friend_u, data.friend_v, data.n_users)


def adjacency(u: np.ndarray, v: np.ndarray, n: int) -> sp.csr_matrix:
    """Symmetric 0/1 (n, n) CSR adjacency of the pairs (u[i], v[i]); self-pairs dropped."""
    index = np.int32 if n < 2**31 else np.int64  # what scipy would convert the indices to
    rows = np.concatenate([u, v]).astype(index, copy=False)
    cols = np.concatenate([v, u]).astype(index, copy=False)
    keep = rows != cols
    if not keep.all():
        rows, cols = rows[keep], cols[keep]
    adj = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))
    adj.data[:] = 1.0  # a pair listed twice is still one edge
    return adj


def _triangles(adj: sp.csr_matrix, chunk: int = 250_000) -> np.ndarray:
    """Edges among each user's friends (= triangles through the user), in edge chunks.

    For every edge (u, v) the common neighbours are the triangles on that edge; each triangle
    through u is seen on two of u's edges, hence the final halving. Chunks keep memory at
    O(chunk * degree) instead of the O(n * degree^2) of squaring the adjacency matrix.
    """
    n = adj.shape[0]
    # The upper triangle's edges in storage order (what sp.triu(adj, k=1) keeps, without a copy
    # of the whole matrix in COO form).
    row = np.repeat(np.arange(n, dtype=adj.indices.dtype), np.diff(adj.indptr))
    upper = adj.indices > row
    rows, cols = row[upper], adj.indices[upper]
    del row, upper
    per_user = np.zeros(n)
    for start in range(0, len(rows), chunk):
        r, c = rows[start:start + chunk], cols[start:start + chunk]
        common = np.asarray(adj[r].multiply(adj[c]).sum(axis=1)).ravel()
        per_user += np.bincount(r, weights=common, minlength=n) + np.bincount(c, weights=common, minlength=n)
    return per_user / 2.0


def _social(data: CityData, now: float, recent: np.ndarray, cols: np.ndarray) -> None:
    n = data.n_users
    adj = friend_matrix(data)
    degree = np.asarray(adj.sum(axis=1)).ravel().astype(np.float64)
    cols[:, 0] = log_cap(degree, 1000.0)
    cols[:, 1] = np.divide(data.requests_accepted, data.requests_total,
                           out=np.zeros(n), where=data.requests_total > 0)
    window = (data.event_time > now - 30 * DAY) & (data.event_time <= now)
    aimed = window & np.isin(data.event_kind, _RECEIVED_KINDS) & (data.event_target >= 0)
    received = _count(data.event_target[aimed], n)
    cols[:, 2] = log_cap(received + degree, 1000.0)
    for j, kind in enumerate(("message", "like", "connect_request")):
        m = window & (data.event_kind == KIND_CODE[kind])
        cols[:, 3 + j] = log_cap(_count(data.event_user[m], n), 100.0)
    tri = _triangles(adj)
    possible = degree * (degree - 1) / 2.0
    cols[:, 6] = np.divide(tri, possible, out=np.zeros(n), where=possible > 0)
    cols[:, 7] = np.where(degree > 0, log_cap(np.maximum(degree - tri, 1.0), 50.0), 0.0)
    active_friends = adj @ recent.astype(np.float64)
    cols[:, 8] = np.divide(active_friends, degree, out=np.zeros(n), where=degree > 0)
    cols[:, 9] = degree > 0


def _demographic(data: CityData, now: float, cols: np.ndarray) -> None:
    n = data.n_users
    year = dt.datetime.fromtimestamp(now, tz=dt.UTC).year
    known_age = np.isfinite(data.birth_year)
    age = np.where(known_age, year - np.nan_to_num(data.birth_year), 0.0)
    group = np.searchsorted(np.array(AGE_GROUPS), age, side="right")  # 0 = under 18
    cols[:, 0] = np.where(known_age, group / len(AGE_GROUPS), 0.0)
    for j in range(3):  # female, male, nonbinary: GENDERS[1..3]
        cols[:, 1 + j] = data.gender == j + 1
    cols[:, 4] = np.clip(data.education, 0, 5) / 5.0
    cols[:, 5] = np.clip(data.income, 0, 5) / 5.0
    occ = np.clip(data.occupation, 0, 4)
    cols[np.arange(n), 6 + occ] = 1.0
    cols[:, 11] = np.clip(data.marital, 0, 4) / 4.0
    cols[:, 12] = np.clip(data.city_tier, 0, 5) / 5.0
    cols[:, 13] = np.minimum(np.maximum(np.nan_to_num(data.years_in_city), 0.0) / 20.0, 1.0)
    cols[:, 14] = np.minimum(data.language_count / 5.0, 1.0)
    # A profile row with nothing stated (an imported person) is as good as no profile.
    has = data.has_profile & (
        known_age | (data.gender > 0) | (data.education > 0) | (data.income > 0)
        | (data.marital > 0) | (data.language_count > 0) | (np.nan_to_num(data.years_in_city) > 0)
    )
    cols[~has, :15] = 0.0
    cols[:, 15] = has


def _blend(out: np.ndarray, *sources: np.ndarray) -> None:
    """Mean of the sources a person has (a row of zeros is an absent source), max-normalised.

    Row-wise, so it runs in blocks of rows: its float64 temporaries stay a few MB.
    """
    for start in range(0, len(out), _BLOCK_ROWS):
        rows = slice(start, start + _BLOCK_ROWS)
        scaled = [_max_normalise(s[rows].astype(np.float64)) for s in sources]
        present = sum((s.max(axis=1) > 0).astype(np.float64) for s in scaled)
        total = sum(scaled)
        out[rows] = np.divide(total, present[:, None], out=np.zeros_like(total), where=present[:, None] > 0)


def _visited_interests(
    data: CityData, users: slice, vu: np.ndarray, vv: np.ndarray, vw: np.ndarray
) -> np.ndarray:
    """(users, 20) visit weight spread over each visited venue's interests, plus activities joined.

    Visits as from ``_visit_blocks``. Only the venue's nonzero interests are expanded (one or two
    per venue, not 20), and the sums run in event order, so the result equals adding
    ``venue_interests[venue] * weight`` per visit, to the bit.
    """
    n, width = users.stop - users.start, len(INTERESTS)
    per_venue = sp.csr_matrix(data.venue_interests)
    starts = per_venue.indptr[vv]
    per_visit = per_venue.indptr[vv + 1] - starts
    # Entry j of visit i is nonzero number starts[i] + j of the venue matrix.
    offsets = np.cumsum(per_visit) - per_visit
    entry = np.arange(int(per_visit.sum())) - np.repeat(offsets - starts, per_visit)
    del starts, offsets
    weight = per_venue.data[entry].astype(np.float64)
    weight *= np.repeat(vw, per_visit)
    flat = np.repeat(vu * width, per_visit)
    flat += per_venue.indices[entry]
    del entry
    # (bincount of nothing is int64 even with weights: hence the no-copy cast.)
    visited = np.bincount(flat, weights=weight, minlength=n * width).astype(np.float64, copy=False)
    visited = visited.reshape(n, width)
    del flat, weight
    # + joined activities' interests: a count per (user, interest), added once per pair.
    mine = (data.join_user >= users.start) & (data.join_user < users.stop)
    has_interest = mine & (data.join_interest >= 0)
    joined = sp.coo_matrix(
        (np.ones(int(has_interest.sum())),
         (data.join_user[has_interest] - users.start, data.join_interest[has_interest])),
        shape=(n, width),
    )
    joined.sum_duplicates()
    visited[joined.row, joined.col] += joined.data
    return visited


def _event_times(data: CityData) -> np.ndarray:
    """(n, 6) events per weekday/weekend and season, in the order of TIME_PREFERENCES."""
    n = data.n_users
    if not len(data.event_time):
        return np.zeros((n, len(TIME_PREFERENCES)))
    # Counts, so the columns can be filled one by one; the arithmetic runs in place.
    users = data.event_user
    when = np.zeros((n, len(TIME_PREFERENCES)))
    weekday = np.floor(data.event_time / DAY).astype(np.int64)  # days since 1970-01-01 ...
    weekday += 3  # ... a Thursday (3 with Monday = 0)
    weekday %= 7
    weekend = weekday >= 5
    del weekday
    when[:, 0] = _count(users[~weekend], n)
    when[:, 1] = _count(users[weekend], n)
    del weekend
    season = np.array(data.event_time, dtype="datetime64[s]").astype("datetime64[M]").view(np.int64)
    season %= 12  # the month, 0 = January
    season += 1
    season //= 3
    season %= 4  # 0 winter (Dec-Feb), 1 spring, 2 summer, 3 autumn
    season += 3
    season %= 4  # columns 2..5: spring, summer, autumn, winter
    for j in range(4):
        when[:, 2 + j] = _count(users[season == j], n)
    return when


def _preference(data: CityData, cols: np.ndarray) -> None:
    """Blend each profile choice with its behaviour source, one source at a time (memory).

    Sources of visits, the largest, go in blocks of users (``_visit_blocks``).
    """
    n = data.n_users
    for users, vu, vv, vw in _visit_blocks(data):
        _blend(cols[users, 0:20], data.profile_interests[users],
               _visited_interests(data, users, vu, vv, vw))
        _blend(cols[users, 30:45], data.profile_place_types[users],
               _visited_place_types(data, users, vu, vv, vw))
    _blend(cols[:, 20:30], data.profile_activity_types,
           _count2(data.join_user, data.join_activity_type, n, len(ACTIVITY_TYPES)))
    # Time preferences from behaviour: weekday/weekend and season of each event (northern
    # hemisphere seasons: spring = Mar-May ...).
    when = _event_times(data)
    _blend(cols[:, 45:47], data.profile_time_prefs[:, :2], when[:, :2])
    _blend(cols[:, 47:51], data.profile_time_prefs[:, 2:], when[:, 2:])


# ----------------------------------------------------------------------------------------------
# context: computed per request, never stored


@dataclass(frozen=True)
class Conditions:
    temperature_c: float  # air temperature
    weather_code: int  # 0 clear .. 5 severe
    congestion: int  # 0 free-flowing .. 5 gridlock


class ConditionsProvider(Protocol):
    def conditions(self, lon: float, lat: float, when: dt.datetime) -> Conditions: ...


class NeutralConditions:
    """The default provider: this deployment has no weather or traffic source.

    It answers the same mild, clear, free-flowing conditions everywhere, so the context features
    carry no weather or traffic signal until a real provider is plugged in through
    ``MATCHING_CONDITIONS_PROVIDER``; documented as such rather than invented.
    """

    def conditions(self, lon: float, lat: float, when: dt.datetime) -> Conditions:
        return Conditions(temperature_c=15.0, weather_code=0, congestion=0)


CONTEXT_NAMES = ("hour", "weekday", "month", "temperature", "weather", "events_nearby",
                 "event_diversity", "congestion")


def context_features(
    when: dt.datetime, conditions: Conditions, nearby_event_types: list[int]
) -> np.ndarray:
    """The request's context (8 values in [0, 1]); ``nearby_event_types`` are activity type codes."""
    kinds = len(set(nearby_event_types))
    return np.array([
        when.hour / 24.0,
        when.weekday() / 7.0,
        (when.month - 1) / 12.0,
        min(max((conditions.temperature_c + 20.0) / 60.0, 0.0), 1.0),
        min(max(conditions.weather_code, 0), 5) / 5.0,
        min(len(nearby_event_types) / 10.0, 1.0),
        kinds / len(ACTIVITY_TYPES),
        min(max(conditions.congestion, 0), 5) / 5.0,
    ], dtype=np.float32)
