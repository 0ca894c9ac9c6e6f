"""The columnar data every feature is computed from, whatever it was loaded from.

A loader (the database in ``matching.feature_store``, an LBSN directory in
``matching.ml.lbsn_data``) fills a ``CityData``; ``matching.ml.features`` turns it into float32
matrices. Loaders keep rows raw (one row per event, ping, friendship) and leave every aggregate to
the shared numpy code, so two loaders of the same facts give the same features by construction.

Users are addressed by row index ``0..n-1``; ``user_ids`` maps a row to its database id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

import numpy as np

# Event kinds, in the order of their codes. Must list the kinds of ``matching.models.Interaction``
# (a test checks it); appending is safe, reordering changes the meaning of stored codes.
EVENT_KINDS: tuple[str, ...] = (
    "impression", "view", "like", "pass", "connect_request", "accept", "message",
    "invite_sent", "invite_accepted", "invite_declined", "join", "visit",
)
KIND_CODE = {kind: code for code, kind in enumerate(EVENT_KINDS)}

GENDERS: tuple[str, ...] = ("unspecified", "female", "male", "nonbinary")
OCCUPATIONS: tuple[str, ...] = ("student", "professional", "service", "business", "other")


class Laps:
    """Wall-clock seconds per named step, added into ``timings`` when one is given (benchmarks).

    Each call charges the time since the previous call (or since creation) to ``name``.
    """

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = time.perf_counter()

    def __call__(self, name: str) -> None:
        if self.timings is None:
            return
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.last
        self.last = now


def _f64(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=np.float64)


def _i64(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=np.int64)


@dataclass
class CityData:
    """People and what they did, as parallel numpy arrays."""

    # --- one row per user -------------------------------------------------------------------
    user_ids: np.ndarray = field(default_factory=_i64)  # (n,) int64 database or dataset ids
    lon: np.ndarray = field(default_factory=_f64)  # (n,) current location, NaN when unknown
    lat: np.ndarray = field(default_factory=_f64)
    has_profile: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    birth_year: np.ndarray = field(default_factory=_f64)  # NaN when not given
    gender: np.ndarray = field(default_factory=_i64)  # index into GENDERS
    education: np.ndarray = field(default_factory=_i64)  # 0..5, 0 = unknown
    income: np.ndarray = field(default_factory=_i64)  # 0..5, 0 = unknown
    occupation: np.ndarray = field(default_factory=_i64)  # index into OCCUPATIONS
    marital: np.ndarray = field(default_factory=_i64)  # 0..4, 0 = unknown
    city_tier: np.ndarray = field(default_factory=_i64)  # 1..5
    years_in_city: np.ndarray = field(default_factory=_f64)
    language_count: np.ndarray = field(default_factory=_i64)
    # Multi-hot profile choices over the taxonomy: (n, 20), (n, 10), (n, 15), (n, 6) float32.
    profile_interests: np.ndarray = field(default_factory=lambda: np.zeros((0, 20), np.float32))
    profile_activity_types: np.ndarray = field(default_factory=lambda: np.zeros((0, 10), np.float32))
    profile_place_types: np.ndarray = field(default_factory=lambda: np.zeros((0, 15), np.float32))
    profile_time_prefs: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), np.float32))

    # --- location history: one row per ping ------------------------------------------------
    ping_user: np.ndarray = field(default_factory=_i64)
    ping_lon: np.ndarray = field(default_factory=_f64)
    ping_lat: np.ndarray = field(default_factory=_f64)
    ping_time: np.ndarray = field(default_factory=_f64)  # unix seconds

    # --- events: one row per interaction ---------------------------------------------------
    event_user: np.ndarray = field(default_factory=_i64)  # actor row
    event_kind: np.ndarray = field(default_factory=_i64)  # KIND_CODE
    event_time: np.ndarray = field(default_factory=_f64)  # unix seconds
    event_weight: np.ndarray = field(default_factory=_f64)
    event_venue: np.ndarray = field(default_factory=_i64)  # venue row, -1 when none
    event_target: np.ndarray = field(default_factory=_i64)  # target user row, -1 when none or unknown

    # --- venues: one row per venue ----------------------------------------------------------
    venue_ids: np.ndarray = field(default_factory=_i64)  # (m,) database or dataset ids
    venue_lon: np.ndarray = field(default_factory=_f64)
    venue_lat: np.ndarray = field(default_factory=_f64)
    venue_place_type: np.ndarray = field(default_factory=_i64)  # index into PLACE_TYPES, -1 unknown
    # (m, 20) float32: each row sums to 1 over the interests its categories map to (0 if none).
    venue_interests: np.ndarray = field(default_factory=lambda: np.zeros((0, 20), np.float32))

    # --- activities joined: one row per participation ---------------------------------------
    join_user: np.ndarray = field(default_factory=_i64)
    join_activity_type: np.ndarray = field(default_factory=_i64)  # index into ACTIVITY_TYPES
    join_interest: np.ndarray = field(default_factory=_i64)  # index into INTERESTS, -1 none
    join_activity: np.ndarray = field(default_factory=_i64)  # activity id (co-participation)

    # --- weekly availability: one row per slot, minutes since Monday 00:00 --------------------
    avail_user: np.ndarray = field(default_factory=_i64)
    avail_start: np.ndarray = field(default_factory=_f64)  # weekday * 1440 + minute of day
    avail_end: np.ndarray = field(default_factory=_f64)

    # --- social graph -----------------------------------------------------------------------
    friend_u: np.ndarray = field(default_factory=_i64)  # accepted connections, each pair once
    friend_v: np.ndarray = field(default_factory=_i64)
    # Connection requests a user took part in (sent or received), and how many of them were
    # accepted: direction-free, so it does not matter which side a dataset lists first. (n,)
    requests_total: np.ndarray = field(default_factory=_f64)
    requests_accepted: np.ndarray = field(default_factory=_f64)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_venues(self) -> int:
        return len(self.venue_lon)

    def validate(self) -> None:
        """Check shapes and index ranges, so that a loader bug fails here, not as a wrong feature."""
        n, m = self.n_users, self.n_venues
        per_user = ["lon", "lat", "has_profile", "birth_year", "gender", "education", "income",
                    "occupation", "marital", "city_tier", "years_in_city", "language_count",
                    "requests_total", "requests_accepted"]
        for name in per_user:
            if len(getattr(self, name)) != n:
                raise ValueError(f"CityData.{name} has {len(getattr(self, name))} rows, expected {n}")
        for name, width in (("profile_interests", 20), ("profile_activity_types", 10),
                            ("profile_place_types", 15), ("profile_time_prefs", 6)):
            if getattr(self, name).shape != (n, width):
                raise ValueError(f"CityData.{name} has shape {getattr(self, name).shape}, expected {(n, width)}")
        groups = {
            "ping": ("ping_user", "ping_lon", "ping_lat", "ping_time"),
            "event": ("event_user", "event_kind", "event_time", "event_weight", "event_venue", "event_target"),
            "join": ("join_user", "join_activity_type", "join_interest", "join_activity"),
            "friend": ("friend_u", "friend_v"),
            "availability": ("avail_user", "avail_start", "avail_end"),
            "venue": ("venue_ids", "venue_lon", "venue_lat", "venue_place_type"),
        }
        for group, names in groups.items():
            lengths = {len(getattr(self, name)) for name in names}
            if len(lengths) != 1:
                raise ValueError(f"CityData {group} columns have different lengths: {lengths}")
        if self.venue_interests.shape != (m, 20):
            raise ValueError("CityData.venue_interests must have one row of 20 per venue")
        for name, bound in (("ping_user", n), ("event_user", n), ("join_user", n), ("avail_user", n), ("friend_u", n), ("friend_v", n)):
            values = getattr(self, name)
            if len(values) and (values.min() < 0 or values.max() >= bound):
                raise ValueError(f"CityData.{name} refers to a user row outside 0..{bound - 1}")
        if len(self.event_venue) and self.event_venue.max() >= m:
            raise ValueError("CityData.event_venue refers to a venue row that does not exist")

    def column_names(self) -> list[str]:
        return [f.name for f in fields(self)]

    @classmethod
    def blank(cls, n_users: int, n_venues: int = 0) -> CityData:
        """``n_users`` people with no profile, location or history (then fill what a case needs)."""
        return cls(
            user_ids=np.arange(n_users, dtype=np.int64),
            lon=np.full(n_users, np.nan), lat=np.full(n_users, np.nan),
            has_profile=np.zeros(n_users, dtype=bool), birth_year=np.full(n_users, np.nan),
            gender=_i64(n_users), education=_i64(n_users), income=_i64(n_users),
            occupation=np.full(n_users, 4, dtype=np.int64), marital=_i64(n_users),
            city_tier=np.full(n_users, 3, dtype=np.int64), years_in_city=_f64(n_users),
            language_count=_i64(n_users),
            profile_interests=np.zeros((n_users, 20), np.float32),
            profile_activity_types=np.zeros((n_users, 10), np.float32),
            profile_place_types=np.zeros((n_users, 15), np.float32),
            profile_time_prefs=np.zeros((n_users, 6), np.float32),
            venue_ids=np.arange(n_venues, dtype=np.int64),
            venue_lon=np.zeros(n_venues), venue_lat=np.zeros(n_venues),
            venue_place_type=np.full(n_venues, -1, dtype=np.int64),
            venue_interests=np.zeros((n_venues, 20), np.float32),
            requests_total=_f64(n_users), requests_accepted=_f64(n_users),
        )
