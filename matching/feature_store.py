"""Load ``CityData`` from PostGIS: every user at once (batch) or one person and their circle (online).

The rows come out with ``COPY (SELECT ...) TO STDOUT (FORMAT BINARY)``. Every selected column has
a fixed width (NULLs are replaced in SQL), so each binary row has the same width and a whole
result parses with one ``np.frombuffer`` of a structured dtype: no Python object per row, which
is what keeps a million users inside the time and memory budget.

Measurements at 1,000,000 users (docs/BENCHMARKS.md, "Features") shaped four choices:

1. COPY sends one message per row. psycopg's ``Copy`` iterator adds Python work per message
   (4.3 s against 2.9 s for the 4 million events), so ``_copy_out`` reads the messages with
   libpq's own ``get_copy_data`` into one growing ``bytearray``: no ``bytes`` per row, no join.
2. Timestamps and times travel in their binary form (int8 microseconds) and become seconds here:
   ``extract(epoch ...)`` returns ``numeric``, which doubled the server's time for the column.
3. The taxonomy arrays of profiles (interests, activity types, place and time preferences) come
   as one ``array_agg`` of user ids per taxonomy entry, not as a bitmask made by a correlated
   subquery per profile row (those subqueries were three quarters of the users query, 17 s).
4. Database ids become row indices through a lookup table when ids are dense (they are: they
   come from a sequence), instead of a binary search per row.

The same SQL serves both paths; the online path only adds ``WHERE user_id = ANY(...)`` filters.
All aggregation happens later in ``matching.ml.features`` on the raw rows.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.db import DatabaseError, connection
from psycopg import ClientCursor, pq

from matching.ml.data import EVENT_KINDS, GENDERS, OCCUPATIONS, CityData, Laps
from users.taxonomy import ACTIVITY_TYPES, INTERESTS, PLACE_TYPES, TIME_PREFERENCES

# Binary COPY: 11-byte signature, 4-byte flags, 4-byte header extension length.
_HEADER = 19
_TRAILER = 2
# Binary timestamps count microseconds from 2000-01-01 00:00 UTC.
_EPOCH_2000_US = 946_684_800_000_000

# Wire type of each column kind ``copy_rows`` accepts, and the numpy type it is returned as.
# "ts" is a timestamptz sent as is and returned as unix seconds.
_WIRE = {"i2": ">i2", "i4": ">i4", "i8": ">i8", "f8": ">f8", "ts": ">i8"}
_NATIVE = {"i2": np.int64, "i4": np.int64, "i8": np.int64, "f8": np.float64, "ts": np.float64}


def _copy_out(sql: str, params: Sequence[object]) -> bytearray:
    """The whole binary COPY output of ``sql`` (header, rows and trailer) in one buffer.

    Talks to libpq directly on Django's connection: psycopg's ``Copy`` iterator adds Python work
    per row that, at millions of rows, costs more than the server's side of the COPY.
    Parameters are bound client side, as psycopg's ``Copy`` does (COPY takes no bind parameters).
    """
    with connection.cursor() as cursor:
        conn = cursor.cursor.connection
        statement = f"COPY ({sql}) TO STDOUT (FORMAT BINARY)"
        if params:
            statement = ClientCursor(conn).mogrify(statement, params)
        if not conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
            # Django expects a transaction here; psycopg opens it with its next statement.
            cursor.execute("SELECT 1")
        pgconn = conn.pgconn
        pgconn.send_query(statement.encode())
        result = pgconn.get_result()
        payload = bytearray()
        if result is not None and result.status == pq.ExecStatus.COPY_OUT:
            while True:
                nbytes, data = pgconn.get_copy_data(0)
                if nbytes < 0:
                    break
                payload += data
            result = pgconn.get_result()
        # Drain whatever follows, so that the connection is ready for the next statement.
        while pgconn.get_result() is not None:
            pass
        if result is None or result.status != pq.ExecStatus.COMMAND_OK:
            message = result.error_message if result is not None else pgconn.error_message
            raise DatabaseError(f"binary COPY failed: {message.decode(errors='replace').strip()}")
    return payload


def copy_rows(
    sql: str, params: Sequence[object], columns: Sequence[tuple[str, str]]
) -> dict[str, np.ndarray]:
    """Run ``sql`` through binary COPY and return one numpy array per column.

    ``columns`` names each selected column with its kind: ``"i2"``, ``"i4"``, ``"i8"`` (smallint,
    integer, bigint; returned as int64), ``"f8"`` (float8) or ``"ts"`` (timestamptz, returned as
    float64 unix seconds). The SQL must select exactly those types, none of them NULL.
    """
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for name, kind in columns:
        fields += [(f"{name}_len", ">i4"), (name, _WIRE[kind])]
    dtype = np.dtype(fields)
    payload = _copy_out(sql, params)
    size = len(payload) - _HEADER - _TRAILER
    if size % dtype.itemsize:
        raise RuntimeError("binary COPY returned rows of unexpected width (a NULL or a wrong type)")
    rows = np.frombuffer(payload, dtype=dtype, count=size // dtype.itemsize, offset=_HEADER)
    out: dict[str, np.ndarray] = {}
    for name, kind in columns:
        column = rows[name].astype(_NATIVE[kind])
        if kind == "ts":
            # Microseconds below 2**53 are exact in float64, and so is adding the offset: the one
            # division rounds like extract(epoch ...)::float8. In place: no temporaries.
            column += _EPOCH_2000_US
            column /= 1e6
        out[name] = column
    return out


def _copy_id_lists(sql: str, params: Sequence[object]) -> list[tuple[int, int, np.ndarray]]:
    """Rows of ``(int8, int8, int8[])`` from binary COPY: a few rows, each holding a long array.

    The arrays must be one-dimensional and free of NULLs (``array_agg`` of a NOT NULL column).
    """
    payload = _copy_out(sql, params)
    element = np.dtype([("len", ">i4"), ("value", ">i8")])
    rows: list[tuple[int, int, np.ndarray]] = []
    pos = _HEADER
    while True:
        (count,) = struct.unpack_from(">h", payload, pos)
        if count == -1:
            break
        if count != 3:
            raise RuntimeError(f"binary COPY returned {count} columns, expected 3")
        first, second, length = struct.unpack_from(">4xq4xqi", payload, pos + 2)
        ndim, has_nulls, _, size = struct.unpack_from(">iiIi", payload, pos + 30)
        if ndim != 1 or has_nulls or length != 20 + size * element.itemsize:
            raise RuntimeError("binary COPY returned an array that is not a flat array of int8")
        values = np.frombuffer(payload, dtype=element, count=size, offset=pos + 30 + 20)["value"]
        rows.append((first, second, values.astype(np.int64)))
        pos += 30 + length
    return rows


class _Rows:
    """Database id -> row index among the loaded users (sorted, distinct ids); -1 when not loaded.

    Ids come from a sequence, so they are dense: a lookup table answers in one gather where a
    binary search per row (millions of rows) took seconds. Sparse ids fall back to the search.
    """

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
        self.base = int(ids[0]) if len(ids) else 0
        span = int(ids[-1]) - self.base + 1 if len(ids) else 0
        self.table: np.ndarray | None = None
        if span <= 4 * len(ids) + 1024:
            self.table = np.full(span, -1, dtype=np.int64)
            self.table[ids - self.base] = np.arange(len(ids))

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if not len(self.ids):
            return np.full(len(values), -1, dtype=np.int64)
        if self.table is not None:
            offset = values - self.base
            inside = (offset >= 0) & (offset < len(self.table))
            if inside.all():
                return self.table[offset]
            rows = self.table[np.where(inside, offset, 0)]
            rows[~inside] = -1
            return rows
        rows = np.searchsorted(self.ids, values).clip(0, len(self.ids) - 1)
        return np.where(self.ids[rows] == values, rows, -1)


def _array_literal(values: Sequence[str]) -> str:
    return "ARRAY[" + ",".join(f"'{v}'" for v in values) + "]::text[]"


def _case(column: str, values: Sequence[str]) -> str:
    whens = " ".join(f"WHEN '{v}' THEN {i}" for i, v in enumerate(values))
    return f"(CASE {column} {whens} ELSE -1 END)::int8"


# The profile's taxonomy arrays, in the order of ``_multi_hot``'s groups.
_PROFILE_CHOICES: tuple[tuple[str, Sequence[str]], ...] = (
    ("interests", INTERESTS), ("activity_types", ACTIVITY_TYPES), ("place_types", PLACE_TYPES),
    ("time_preferences", TIME_PREFERENCES),
)


@dataclass(frozen=True)
class _Filter:
    """``user_id = ANY(ids)`` on a column, or nothing for the batch path."""

    ids: list[int] | None

    def where(self, column: str) -> tuple[str, list[object]]:
        if self.ids is None:
            return "TRUE", []
        return f"{column} = ANY(%s)", [self.ids]


def _multi_hot(only: _Filter, rows_of: _Rows, n: int) -> list[np.ndarray]:
    """The profiles' taxonomy arrays as (n, len(taxonomy)) float32 0/1 matrices.

    One query returns, for every (array, taxonomy entry), the ids of the users who chose it; the
    entry's position is looked up once per group, after grouping on the raw value.
    """
    where, params = only.where("user_id")
    parts = []
    for group, (column, taxonomy) in enumerate(_PROFILE_CHOICES):
        position = f"COALESCE(array_position({_array_literal(taxonomy)}, x::text) - 1, -1)::int8"
        parts.append(
            f"""SELECT {group}::int8, {position}, ids
                FROM (SELECT x, array_agg(user_id) AS ids
                      FROM (SELECT user_id, unnest({column}) AS x
                            FROM users_profile WHERE {where}) AS chosen
                      GROUP BY x) AS grouped"""
        )
    matrices = [np.zeros((n, len(taxonomy)), dtype=np.float32) for _, taxonomy in _PROFILE_CHOICES]
    query = " UNION ALL ".join(parts)
    for group, position, user_ids in _copy_id_lists(query, params * len(parts)):
        if position < 0:
            continue  # a value outside the taxonomy (the check constraints keep them out)
        rows = rows_of(user_ids)
        matrices[group][rows[rows >= 0], position] = 1.0
    return matrices


def load_city(
    user_ids: Sequence[int] | None = None, *, history_since: float | None = None,
    timings: dict[str, float] | None = None,
) -> CityData:
    """Every user (``user_ids=None``) or the given ones, with their pings, events and graph.

    Friendships and events are kept only between loaded users; ``history_since`` (unix seconds)
    drops older location pings, which no feature reads. ``timings``, when given, receives the
    seconds spent per query (benchmarks).
    """
    lap = Laps(timings)
    only = _Filter(sorted(set(user_ids)) if user_ids is not None else None)
    where, params = only.where("u.id")
    users = copy_rows(
        f"""
        SELECT u.id::int8,
               COALESCE(ST_X(p.location::geometry), 'NaN')::float8,
               COALESCE(ST_Y(p.location::geometry), 'NaN')::float8,
               (p.id IS NOT NULL)::int::int2,
               COALESCE(p.birth_year::float8, 'NaN')::float8,
               COALESCE({_case("p.gender", GENDERS)}, 0)::int2,
               COALESCE(p.education, 0)::int2, COALESCE(p.income_band, 0)::int2,
               COALESCE({_case("p.occupation", OCCUPATIONS)}, 4)::int2,
               COALESCE(p.marital_status, 0)::int2, COALESCE(p.city_tier, 3)::int2,
               COALESCE(p.years_in_city, 0)::float8,
               COALESCE(cardinality(p.languages), 0)::int4
        FROM users_user u LEFT JOIN users_profile p ON p.user_id = u.id
        WHERE {where}
        ORDER BY u.id
        """,
        params,
        [("id", "i8"), ("lon", "f8"), ("lat", "f8"), ("has_profile", "i2"), ("birth_year", "f8"),
         ("gender", "i2"), ("education", "i2"), ("income", "i2"), ("occupation", "i2"),
         ("marital", "i2"), ("city_tier", "i2"), ("years", "f8"), ("languages", "i4")],
    )
    ids = users["id"]
    n = len(ids)
    rows_of = _Rows(ids)
    lap("users")
    interests, activity_types, place_types, time_prefs = _multi_hot(only, rows_of, n)
    lap("profile_choices")

    where, params = only.where("user_id")
    since = "TRUE" if history_since is None else "recorded_at >= to_timestamp(%s)"
    pings = copy_rows(
        f"""SELECT user_id::int8, ST_X(point::geometry)::float8, ST_Y(point::geometry)::float8, recorded_at
            FROM users_locationping WHERE {where} AND {since}""",
        params + ([] if history_since is None else [history_since]),
        [("user", "i8"), ("lon", "f8"), ("lat", "f8"), ("time", "ts")],
    )
    ping_user = rows_of(pings.pop("user"))
    lap("pings")

    where, params = only.where("i.actor_id")
    events = copy_rows(
        f"""SELECT i.actor_id::int8, {_case("i.kind", EVENT_KINDS)}, i.occurred_at,
                   i.weight::float8, COALESCE(i.target_venue_id, -1)::int8,
                   COALESCE(i.target_user_id, -1)::int8
            FROM matching_interaction i WHERE {where}""",
        params,
        [("user", "i8"), ("kind", "i8"), ("time", "ts"), ("weight", "f8"), ("venue", "i8"), ("target", "i8")],
    )
    event_user = rows_of(events.pop("user"))
    # Targets outside the loaded users are unknown (-1), never a wrong row.
    event_target = rows_of(events.pop("target"))
    event_venue = events.pop("venue")  # database ids until the venues are loaded
    lap("events")

    # Venues: all of them in batch, only the visited ones for a few users.
    venue_ids = np.unique(event_venue[event_venue >= 0]) if only.ids is not None else None
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
    has_venue = event_venue >= 0
    event_venue = np.searchsorted(venues["id"], event_venue)
    event_venue[~has_venue] = -1
    del has_venue
    venue_interests = np.zeros((len(venues["id"]), len(INTERESTS)), dtype=np.float32)
    known = venue_categories["interest"] >= 0
    np.add.at(venue_interests, (venue_rows[known], venue_categories["interest"][known]), 1.0)
    totals = venue_interests.sum(axis=1, keepdims=True)
    np.divide(venue_interests, totals, out=venue_interests, where=totals > 0)
    lap("venues")

    where, params = only.where("p.user_id")
    joins = copy_rows(
        f"""SELECT p.user_id::int8, {_case("a.category", ACTIVITY_TYPES)},
                   {_case("a.subtype", INTERESTS)}, a.id::int8
            FROM activities_participation p JOIN activities_activity a ON a.id = p.activity_id
            WHERE {where}""",
        params,
        [("user", "i8"), ("activity_type", "i8"), ("interest", "i8"), ("activity", "i8")],
    )
    lap("joins")
    where, params = only.where("user_id")
    # Times travel as int8 microseconds since midnight; slots become minutes since Monday 00:00.
    availability = copy_rows(
        f"""SELECT user_id::int8, weekday::int2, start_time, end_time
            FROM users_availability WHERE {where}""",
        params,
        [("user", "i8"), ("weekday", "i2"), ("start", "i8"), ("end", "i8")],
    )
    week_us = availability.pop("weekday") * (1440 * 60_000_000)
    avail_start = (week_us + availability.pop("start")) / 60e6
    avail_end = (week_us + availability.pop("end")) / 60e6
    del week_us
    lap("availability")

    if only.ids is None:
        # Every connection once: the accepted ones are the friendships, and all of them count as
        # requests for both people (one pass over the table instead of two).
        connections = copy_rows(
            """SELECT from_user_id::int8, to_user_id::int8, (status = 'accepted')::int::int2
               FROM users_connection""",
            [],
            [("u", "i8"), ("v", "i8"), ("accepted", "i2")],
        )
        accepted = connections.pop("accepted") > 0
        u, v = rows_of(connections.pop("u")), rows_of(connections.pop("v"))
        requests_total = _per_row(u, n) + _per_row(v, n)
        if not accepted.all():
            u, v = u[accepted], v[accepted]
        requests_accepted = _per_row(u, n) + _per_row(v, n)
        friend_u, friend_v = u, v
        lap("connections")
    else:
        friends = copy_rows(
            """SELECT from_user_id::int8, to_user_id::int8 FROM users_connection
               WHERE status = 'accepted' AND from_user_id = ANY(%s) AND to_user_id = ANY(%s)""",
            [only.ids, only.ids],
            [("u", "i8"), ("v", "i8")],
        )
        friend_u, friend_v = rows_of(friends["u"]), rows_of(friends["v"])
        lap("friends")
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
        lap("requests")

    data = CityData(
        user_ids=ids,
        lon=users["lon"], lat=users["lat"],
        has_profile=users["has_profile"].astype(bool),
        birth_year=users["birth_year"], gender=users["gender"], education=users["education"],
        income=users["income"], occupation=users["occupation"], marital=users["marital"],
        city_tier=users["city_tier"], years_in_city=users["years"], language_count=users["languages"],
        profile_interests=interests, profile_activity_types=activity_types,
        profile_place_types=place_types, profile_time_prefs=time_prefs,
        ping_user=ping_user, ping_lon=pings["lon"], ping_lat=pings["lat"], ping_time=pings["time"],
        event_user=event_user, event_kind=events["kind"], event_time=events["time"],
        event_weight=events["weight"], event_venue=event_venue, event_target=event_target,
        venue_ids=venues["id"], venue_lon=venues["lon"], venue_lat=venues["lat"], venue_place_type=venues["place_type"],
        venue_interests=venue_interests,
        join_user=rows_of(joins["user"]), join_activity_type=joins["activity_type"].clip(0),
        join_interest=joins["interest"], join_activity=joins["activity"],
        avail_user=rows_of(availability["user"]), avail_start=avail_start, avail_end=avail_end,
        friend_u=friend_u, friend_v=friend_v,
        requests_total=requests_total, requests_accepted=requests_accepted,
    )
    data.validate()
    lap("build")
    return data


def _per_row(rows: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(rows, minlength=n).astype(np.float64)


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
