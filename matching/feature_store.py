"""Load ``CityData`` from PostGIS: every user at once (batch) or one person and their circle (online).

The rows come out with ``COPY (SELECT ...) TO STDOUT (FORMAT BINARY)``. Every selected column is
cast to ``int8`` or ``float8`` and NULLs are replaced in SQL, so each binary row has the same
width and a whole result parses with one ``np.frombuffer`` of a structured dtype: no Python
object per row, which is what keeps a million users inside the time and memory budget.

The same SQL serves both paths; the online path only adds ``WHERE user_id = ANY(...)`` filters.
All aggregation happens later in ``matching.ml.features`` on the raw rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.db import connection

from matching.ml.data import EVENT_KINDS, GENDERS, OCCUPATIONS, CityData
from users.taxonomy import ACTIVITY_TYPES, INTERESTS, PLACE_TYPES, TIME_PREFERENCES

# Binary COPY: 11-byte signature, 4-byte flags, 4-byte header extension length.
_HEADER = 19
_TRAILER = 2


def copy_rows(sql: str, params: Sequence[object], columns: Sequence[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Run ``sql`` through binary COPY and return one numpy array per column.

    ``columns`` names each selected column with its type, ``"i8"`` (int8) or ``"f8"`` (float8);
    the SQL must select exactly those, none of them NULL.
    """
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for name, kind in columns:
        fields += [(f"{name}_len", ">i4"), (name, ">" + kind)]
    dtype = np.dtype(fields)
    with connection.cursor() as cursor:
        raw = cursor.cursor
        chunks: list[bytes] = []
        with raw.copy(f"COPY ({sql}) TO STDOUT (FORMAT BINARY)", params) as copy:
            for chunk in copy:
                chunks.append(bytes(chunk))
    payload = b"".join(chunks)
    body = payload[_HEADER:len(payload) - _TRAILER]
    if len(body) % dtype.itemsize:
        raise RuntimeError("binary COPY returned rows of unexpected width (a NULL or a wrong type)")
    rows = np.frombuffer(body, dtype=dtype)
    return {name: rows[name].astype(np.int64 if kind == "i8" else np.float64) for name, kind in columns}


def _array_literal(values: Sequence[str]) -> str:
    return "ARRAY[" + ",".join(f"'{v}'" for v in values) + "]::text[]"


def _bitmask_sql(column: str, taxonomy: Sequence[str]) -> str:
    """An int8 with bit i set when the array column holds taxonomy[i]."""
    return (
        f"COALESCE((SELECT bit_or((1::int8) << (array_position({_array_literal(taxonomy)}, x::text) - 1))"
        f" FROM unnest({column}) AS x), 0)::int8"
    )


def _bits_to_matrix(bits: np.ndarray, width: int) -> np.ndarray:
    return ((bits[:, None] >> np.arange(width)) & 1).astype(np.float32)


def _case(column: str, values: Sequence[str]) -> str:
    whens = " ".join(f"WHEN '{v}' THEN {i}" for i, v in enumerate(values))
    return f"(CASE {column} {whens} ELSE -1 END)::int8"


@dataclass(frozen=True)
class _Filter:
    """``user_id = ANY(ids)`` on a column, or nothing for the batch path."""

    ids: list[int] | None

    def where(self, column: str) -> tuple[str, list[object]]:
        if self.ids is None:
            return "TRUE", []
        return f"{column} = ANY(%s)", [self.ids]


def load_city(user_ids: Sequence[int] | None = None, *, history_since: float | None = None) -> CityData:
    """Every user (``user_ids=None``) or the given ones, with their pings, events and graph.

    Friendships and events are kept only between loaded users; ``history_since`` (unix seconds)
    drops older location pings, which no feature reads.
    """
    only = _Filter(sorted(set(user_ids)) if user_ids is not None else None)
    where, params = only.where("u.id")
    users = copy_rows(
        f"""
        SELECT u.id::int8,
               COALESCE(ST_X(p.location::geometry), 'NaN')::float8,
               COALESCE(ST_Y(p.location::geometry), 'NaN')::float8,
               (p.id IS NOT NULL)::int::int8,
               COALESCE(p.birth_year::float8, 'NaN')::float8,
               COALESCE({_case("p.gender", GENDERS)}, 0)::int8,
               COALESCE(p.education, 0)::int8, COALESCE(p.income_band, 0)::int8,
               COALESCE({_case("p.occupation", OCCUPATIONS)}, 4)::int8,
               COALESCE(p.marital_status, 0)::int8, COALESCE(p.city_tier, 3)::int8,
               COALESCE(p.years_in_city, 0)::float8,
               COALESCE(cardinality(p.languages), 0)::int8,
               {_bitmask_sql("p.interests", INTERESTS)},
               {_bitmask_sql("p.activity_types", ACTIVITY_TYPES)},
               {_bitmask_sql("p.place_types", PLACE_TYPES)},
               {_bitmask_sql("p.time_preferences", TIME_PREFERENCES)}
        FROM users_user u LEFT JOIN users_profile p ON p.user_id = u.id
        WHERE {where}
        ORDER BY u.id
        """,
        params,
        [("id", "i8"), ("lon", "f8"), ("lat", "f8"), ("has_profile", "i8"), ("birth_year", "f8"),
         ("gender", "i8"), ("education", "i8"), ("income", "i8"), ("occupation", "i8"),
         ("marital", "i8"), ("city_tier", "i8"), ("years", "f8"), ("languages", "i8"),
         ("interests", "i8"), ("activity_types", "i8"), ("place_types", "i8"), ("time_prefs", "i8")],
    )
    ids = users["id"]
    n = len(ids)

    def rows_of(user_column: np.ndarray) -> np.ndarray:
        return np.searchsorted(ids, user_column)

    where, params = only.where("user_id")
    since = "TRUE" if history_since is None else "recorded_at >= to_timestamp(%s)"
    pings = copy_rows(
        f"""SELECT user_id::int8, ST_X(point::geometry)::float8, ST_Y(point::geometry)::float8,
                   extract(epoch FROM recorded_at)::float8
            FROM users_locationping WHERE {where} AND {since}""",
        params + ([] if history_since is None else [history_since]),
        [("user", "i8"), ("lon", "f8"), ("lat", "f8"), ("time", "f8")],
    )

    where, params = only.where("i.actor_id")
    kinds = _case("i.kind", EVENT_KINDS)
    events = copy_rows(
        f"""SELECT i.actor_id::int8, {kinds}, extract(epoch FROM i.occurred_at)::float8,
                   i.weight::float8, COALESCE(i.target_venue_id, -1)::int8,
                   COALESCE(i.target_user_id, -1)::int8
            FROM matching_interaction i WHERE {where}""",
        params,
        [("user", "i8"), ("kind", "i8"), ("time", "f8"), ("weight", "f8"), ("venue", "i8"), ("target", "i8")],
    )
    # Targets outside the loaded users are unknown (-1), never a wrong row.
    target_rows = rows_of(events["target"]).clip(0, max(n - 1, 0))
    target_known = (events["target"] >= 0) & (n > 0) & (ids[target_rows] == events["target"]) if n else np.zeros(0, bool)
    event_target = np.where(target_known, target_rows, -1)

    # Venues: all of them in batch, only the visited ones for a few users.
    venue_ids = np.unique(events["venue"][events["venue"] >= 0]) if only.ids is not None else None
    vwhere, vparams = ("TRUE", []) if venue_ids is None else ("v.id = ANY(%s)", [venue_ids.tolist()])
    venues = copy_rows(
        f"""SELECT v.id::int8, ST_X(v.location::geometry)::float8, ST_Y(v.location::geometry)::float8,
                   {_case("v.place_type", PLACE_TYPES)}
            FROM activities_venue v WHERE {vwhere} ORDER BY v.id""",
        vparams,
        [("id", "i8"), ("lon", "f8"), ("lat", "f8"), ("place_type", "i8")],
    )
    venue_categories = copy_rows(
        f"""SELECT vc.venue_id::int8, {_case("c.interest", INTERESTS)}
            FROM activities_venue_categories vc JOIN activities_category c ON c.id = vc.category_id
            JOIN activities_venue v ON v.id = vc.venue_id WHERE {vwhere}""",
        vparams,
        [("venue", "i8"), ("interest", "i8")],
    )
    venue_rows = np.searchsorted(venues["id"], venue_categories["venue"])
    event_venue = np.where(events["venue"] >= 0, np.searchsorted(venues["id"], events["venue"]), -1)

    where, params = only.where("p.user_id")
    joins = copy_rows(
        f"""SELECT p.user_id::int8, {_case("a.category", ACTIVITY_TYPES)},
                   {_case("a.subtype", INTERESTS)}, a.id::int8
            FROM activities_participation p JOIN activities_activity a ON a.id = p.activity_id
            WHERE {where}""",
        params,
        [("user", "i8"), ("activity_type", "i8"), ("interest", "i8"), ("activity", "i8")],
    )
    where, params = only.where("user_id")
    availability = copy_rows(
        f"""SELECT user_id::int8,
                   (weekday * 1440 + extract(epoch FROM start_time) / 60)::float8,
                   (weekday * 1440 + extract(epoch FROM end_time) / 60)::float8
            FROM users_availability WHERE {where}""",
        params,
        [("user", "i8"), ("start", "f8"), ("end", "f8")],
    )
    fwhere, fparams = ("TRUE", []) if only.ids is None else (
        "from_user_id = ANY(%s) AND to_user_id = ANY(%s)", [only.ids, only.ids])
    friends = copy_rows(
        f"""SELECT from_user_id::int8, to_user_id::int8 FROM users_connection
            WHERE status = 'accepted' AND {fwhere}""",
        fparams,
        [("u", "i8"), ("v", "i8")],
    )
    where, params = only.where("x.user_id")
    requests = copy_rows(
        f"""SELECT x.user_id::int8, count(*)::float8, count(*) FILTER (WHERE x.status = 'accepted')::float8
            FROM (SELECT from_user_id AS user_id, status FROM users_connection
                  UNION ALL SELECT to_user_id, status FROM users_connection) x
            WHERE {where} GROUP BY x.user_id""",
        params,
        [("user", "i8"), ("total", "f8"), ("accepted", "f8")],
    )
    requests_total = np.zeros(n)
    requests_accepted = np.zeros(n)
    request_rows = rows_of(requests["user"])
    requests_total[request_rows] = requests["total"]
    requests_accepted[request_rows] = requests["accepted"]

    venue_interests = np.zeros((len(venues["id"]), len(INTERESTS)), dtype=np.float32)
    known = venue_categories["interest"] >= 0
    np.add.at(venue_interests, (venue_rows[known], venue_categories["interest"][known]), 1.0)
    totals = venue_interests.sum(axis=1, keepdims=True)
    np.divide(venue_interests, totals, out=venue_interests, where=totals > 0)

    data = CityData(
        user_ids=ids,
        lon=users["lon"], lat=users["lat"],
        has_profile=users["has_profile"].astype(bool),
        birth_year=users["birth_year"], gender=users["gender"], education=users["education"],
        income=users["income"], occupation=users["occupation"], marital=users["marital"],
        city_tier=users["city_tier"], years_in_city=users["years"], language_count=users["languages"],
        profile_interests=_bits_to_matrix(users["interests"], len(INTERESTS)),
        profile_activity_types=_bits_to_matrix(users["activity_types"], len(ACTIVITY_TYPES)),
        profile_place_types=_bits_to_matrix(users["place_types"], len(PLACE_TYPES)),
        profile_time_prefs=_bits_to_matrix(users["time_prefs"], len(TIME_PREFERENCES)),
        ping_user=rows_of(pings["user"]), ping_lon=pings["lon"], ping_lat=pings["lat"], ping_time=pings["time"],
        event_user=rows_of(events["user"]), event_kind=events["kind"], event_time=events["time"],
        event_weight=events["weight"], event_venue=event_venue, event_target=event_target,
        venue_ids=venues["id"], venue_lon=venues["lon"], venue_lat=venues["lat"], venue_place_type=venues["place_type"],
        venue_interests=venue_interests,
        join_user=rows_of(joins["user"]), join_activity_type=joins["activity_type"].clip(0),
        join_interest=joins["interest"], join_activity=joins["activity"],
        avail_user=rows_of(availability["user"]), avail_start=availability["start"],
        avail_end=availability["end"],
        friend_u=rows_of(friends["u"]), friend_v=rows_of(friends["v"]),
        requests_total=requests_total, requests_accepted=requests_accepted,
    )
    data.validate()
    return data


def circle_of(user_id: int) -> list[int]:
    """The people whose rows one person's features read: them, their friends, and who engaged them.

    Friends give the friend count, clustering and circle activity; people with an event aimed at
    the person give influence.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT %(u)s
            UNION SELECT CASE WHEN from_user_id = %(u)s THEN to_user_id ELSE from_user_id END
                  FROM users_connection
                  WHERE status = 'accepted' AND (from_user_id = %(u)s OR to_user_id = %(u)s)
            UNION SELECT actor_id FROM matching_interaction WHERE target_user_id = %(u)s
            """,
            {"u": user_id},
        )
        return [row[0] for row in cursor.fetchall()]
