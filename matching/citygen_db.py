"""Write a generated city (``matching.citygen``) to PostgreSQL with COPY, in one transaction.

What becomes what (``prefix`` names the run; ``i`` is a row index of the generated arrays):

* person ``i`` -> ``users.User`` "{prefix}{i:07d}" with an unusable password, and a discoverable
  (95 %) ``users.Profile`` at their home;
* one ``activities.Category`` per interest (source "citygen", external id the interest slug),
  shared by every run: a later run reuses them, and keeps whatever staff changed;
* venue ``j`` -> ``activities.Venue`` (``external_ref`` "citygen:{prefix}:venue:{j}") and its
  categories;
* friendships -> accepted ``users.Connection`` rows; visits -> ``matching.Interaction`` of kind
  "visit"; pings, availability, activities (published) and participations as they are.

The ground-truth communities are not written anywhere: regenerate the city from its seed and join
on the username's number. These writes bypass ``save()`` and its signals, like the LBSN import.

Speed comes from three choices (measured at 1,000,000 people, see docs/BENCHMARKS.md):

* ids of people, venues and activities are reserved up front as one contiguous range each, so
  every foreign key is ``first_id + index`` and no row waits for a returned id;
* fixed-width tables (4 of every 5 rows) are encoded as COPY BINARY straight from numpy record
  arrays, with no per-row Python; the rest is COPY text built from whole columns;
* a big city drops the secondary indexes, unique constraints and foreign keys of the tables it
  writes and rebuilds them once at the end: maintaining them row by row and checking every
  deferred foreign key took 84 s for 4 million connections, rebuilding took 18 s. Everything
  dropped is recreated from its own definition (``pg_get_indexdef``, ``pg_get_constraintdef``)
  in the same transaction, so the schema after commit is the schema before.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.db import connection, models, transaction

from activities.models import Activity, Category, Participation, Venue
from matching import citygen
from matching.citygen import City
from matching.models import Interaction
from matching.people_map import people_reload
from users.models import Availability, Connection, LocationPing, Profile, User
from users.taxonomy import ACTIVITY_TYPES, INTERESTS, PLACE_TYPES, TIME_PREFERENCES

# A prefix must make valid usernames, and must not end with a digit: "demo1" followed by
# "0000001" would otherwise read as prefix "demo" followed by "10000001".
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.@+-]{0,39}[A-Za-z_.@+-]")
PREFIX_INVALID = (
    "the prefix {prefix!r} must be 1 to 40 letters, digits or . @ + - _ and must not end with a "
    "digit (usernames are the prefix followed by a number)"
)
PREFIX_TAKEN = (
    "people named {prefix}<number> already exist (for example {example}): generate_city never "
    "adds to an existing city; choose another --prefix or delete those people first"
)
BAD_COORDINATES = "generated {what} coordinates are not finite longitudes and latitudes"

CATEGORY_SOURCE = "citygen"
# Not a hash of anything: Django reads any password starting with "!" as unusable, and a
# constant keeps the output deterministic.
UNUSABLE_PASSWORD = UNUSABLE_PASSWORD_PREFIX + "citygen".ljust(40, "0")
# Below this many people, dropping and rebuilding indexes saves nothing (measured: 10,000 people
# load in 3.2 s with a rebuild, 3.7 s without; 50,000 in 10.7 s against 19.9 s).
REBUILD_MIN_USERS = 10_000
# Rows per COPY write: bounds the memory of one encoded chunk (~50 MB of text at most).
COPY_CHUNK = 200_000
# Serialises generator runs, so that two runs cannot both pass the prefix check.
ADVISORY_LOCK_KEY = 0x63697479  # "city"
# Index builds after the load may use this much memory each (PostgreSQL's default is 64 MB).
INDEX_BUILD_MEMORY = "512MB"

# COPY BINARY framing: a signature, flags and header-extension length, and a -1 field count.
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_BINARY_TRAILER = b"\xff\xff"
# Binary timestamps count microseconds from 2000-01-01T00:00:00Z.
_PG_EPOCH = 946_684_800
# Hex EWKB of a little-endian point with SRID 4326, up to its coordinates.
_EWKB_POINT_HEAD = bytes.fromhex("0101000020E6100000")


class CityWriteError(Exception):
    """The city cannot be written as asked; the message says why."""


@dataclass
class CityWriteReport:
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows written
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> wall seconds
    rebuilt_indexes: bool = False
    first_user_id: int = 0
    committed: bool = False


def prefix_validate(prefix: str) -> None:
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise CityWriteError(PREFIX_INVALID.format(prefix=prefix))


def prefix_example(prefix: str) -> str | None:
    """A username the prefix already generated, if any (the index serves ``startswith``)."""
    pattern = rf"^{re.escape(prefix)}[0-9]{{{citygen.USERNAME_DIGITS},}}$"
    return (
        User.objects.filter(username__startswith=prefix, username__regex=pattern)
        .values_list("username", flat=True)
        .first()
    )


def city_write(
    city: City, *, prefix: str, rebuild_indexes: bool | None = None, rollback: bool = False
) -> CityWriteReport:
    """Write every row of ``city`` under ``prefix`` in one transaction; return counts and times.

    1. Take the generator's advisory lock, then refuse a prefix that already has people; nothing
       has been written yet, so a refusal leaves the database as it was.
    2. Lock the tables whose ids are reserved and reserve one contiguous range each for people,
       venues and activities (``setval`` under the lock: no concurrent insert can take an id
       inside a range).
    3. Get or create the shared "citygen" categories, one per interest.
    4. For a big city (``rebuild_indexes``; by default when it has at least ``REBUILD_MIN_USERS``
       people and no fewer than the users already there), drop the secondary indexes, unique
       constraints and foreign keys of the tables about to be written.
    5. COPY users, profiles, venues and their categories, pings, availability, connections,
       visits, activities and participations.
    6. Rebuild what step 4 dropped: indexes and unique constraints (which re-check uniqueness),
       then foreign keys (each validated by one join over the table).
    7. Check deferred constraints now rather than at commit, so that a violation fails here,
       and is also caught when ``rollback`` never commits.
    8. ANALYZE the written tables, so that the planner knows their new sizes.
    With ``rollback`` the transaction is rolled back at the end (benchmarks, dry runs).
    """
    prefix_validate(prefix)
    _coordinates_validate(city)
    report = CityWriteReport()
    with transaction.atomic(), connection.cursor() as cursor:
        writer = _Writer(cursor.cursor, city, prefix, report)
        writer.run(rebuild_indexes)
        if rollback:
            transaction.set_rollback(True)
        else:
            people_reload()  # COPY sends no signals: web processes load their people maps again
    report.committed = not rollback
    return report


def _coordinates_validate(city: City) -> None:
    # PostGIS would silently wrap an out-of-range geography point (users.fields explains);
    # COPY bypasses the field's check, so check the arrays here.
    for what, lon, lat in (
        ("home", city.people.lon, city.people.lat),
        ("venue", city.venues.lon, city.venues.lat),
        ("ping", city.pings.lon, city.pings.lat),
        ("activity", city.activities.lon, city.activities.lat),
    ):
        ok = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180.0) & (np.abs(lat) <= 90.0)
        if not ok.all():
            raise CityWriteError(BAD_COORDINATES.format(what=what))


# -- encoding ---------------------------------------------------------------------------------

_FIXED_WIDTH = {
    "int2": ">i2",
    "int4": ">i4",
    "int8": ">i8",
    "float8": ">f8",
    "bool": "u1",
    "timestamptz": ">i8",
    "time": ">i8",
}
_POINT_DTYPE = np.dtype(
    [("order", "u1"), ("type", ">u4"), ("srid", ">u4"), ("x", ">f8"), ("y", ">f8")]
)

BinaryColumn = tuple[str, Any]  # (kind, values): see _binary_rows


def _binary_rows(n: int, columns: Sequence[BinaryColumn]) -> bytes:
    """``n`` COPY BINARY tuples, encoded as one numpy record array of big-endian fields.

    Kinds: ``int2``/``int4``/``int8``/``float8``/``bool`` (array or scalar), ``timestamptz``
    (Unix seconds), ``time`` (minutes after midnight), ``text`` (one string for every row),
    ``point`` (a (lon, lat) pair of arrays, as EWKB with SRID 4326) and ``null``. Every value
    has a fixed width, which is what lets one record dtype describe a whole tuple.
    """
    fields: list[tuple[str, Any]] = [("count", ">i2")]
    values: list[tuple[str, Any]] = [("count", len(columns))]
    for i, (kind, value) in enumerate(columns):
        length, name = f"length{i}", f"value{i}"
        fields.append((length, ">i4"))
        if kind == "null":
            values.append((length, -1))
        elif kind == "text":
            raw = str(value).encode()
            values.append((length, len(raw)))
            if raw:
                fields.append((name, f"S{len(raw)}"))
                values.append((name, raw))
        elif kind == "point":
            fields.append((name, _POINT_DTYPE))
            values.append((length, _POINT_DTYPE.itemsize))
            values.append((name, value))
        else:
            fields.append((name, _FIXED_WIDTH[kind]))
            values.append((length, np.dtype(_FIXED_WIDTH[kind]).itemsize))
            if kind == "timestamptz":
                value = (np.asarray(value, dtype=np.int64) - _PG_EPOCH) * 1_000_000
            elif kind == "time":
                value = np.asarray(value, dtype=np.int64) * 60_000_000
            values.append((name, value))
    rows = np.zeros(n, dtype=np.dtype(fields))
    for name, value in values:
        if isinstance(value, tuple):  # a point
            point = rows[name]
            point["order"] = 0  # big-endian ("XDR")
            point["type"] = 0x20000001  # a point, with an SRID
            point["srid"] = 4326
            point["x"], point["y"] = value
        else:
            rows[name] = value
    return rows.tobytes()


def _timestamps(seconds: np.ndarray) -> list[str]:
    """Unix seconds as COPY text timestamps in UTC."""
    text = np.datetime_as_string(np.asarray(seconds, dtype="datetime64[s]"), unit="s")
    return [t + "+00" for t in text.tolist()]


def _points(lon: np.ndarray, lat: np.ndarray) -> list[str]:
    """Points as hex EWKB, which geography accepts as text: exact, and no float formatting."""
    rows = np.empty(len(lon), dtype=[("head", "S9"), ("x", "<f8"), ("y", "<f8")])
    rows["head"], rows["x"], rows["y"] = _EWKB_POINT_HEAD, lon, lat
    text = rows.tobytes().hex()
    width = 2 * rows.dtype.itemsize
    return [text[i : i + width] for i in range(0, len(text), width)]


def _escape(text: str) -> str:
    """COPY text escaping; generated names have nothing to escape, but templates may change."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        for char, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
            text = text.replace(char, escaped)
    return text


def _by_mask(mask: np.ndarray, render: Any) -> list[str]:
    """``render(indices)`` for each row of a boolean matrix, computed once per distinct row."""
    bits = mask.astype(np.int64) @ (np.int64(1) << np.arange(mask.shape[1], dtype=np.int64))
    distinct, inverse = np.unique(bits, return_inverse=True)
    rendered = np.array(
        [render([j for j in range(mask.shape[1]) if (b >> j) & 1]) for b in distinct.tolist()],
        dtype=object,
    )
    return rendered[inverse].tolist()  # type: ignore[no-any-return]


def _array_literal(labels: Sequence[str]) -> Any:
    return lambda idx: "{" + ",".join(labels[j] for j in idx) + "}"


def _bio(idx: list[int]) -> str:
    names = [INTERESTS[j] for j in idx]
    if len(names) < 2:
        return f"Into {''.join(names)}." if names else ""
    return f"Into {', '.join(names[:-1])} and {names[-1]}."


# -- the writer -------------------------------------------------------------------------------


class _Writer:
    def __init__(self, cursor: Any, city: City, prefix: str, report: CityWriteReport) -> None:
        self.cursor = cursor  # the psycopg cursor under Django's wrapper: it has .copy()
        self.city = city
        self.prefix = prefix
        self.report = report
        self.clock = time.perf_counter()
        self.user_id = self.venue_id = self.activity_id = 0
        self.category_ids = np.zeros(len(INTERESTS), dtype=np.int64)

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.report.seconds[phase] = round(now - self.clock, 3)
        self.clock = now

    def run(self, rebuild_indexes: bool | None) -> None:
        c = self.cursor
        c.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
        example = prefix_example(self.prefix)
        if example is not None:
            raise CityWriteError(PREFIX_TAKEN.format(prefix=self.prefix, example=example))
        city = self.city
        n_users = len(city.people)
        tables = [m._meta.db_table for m in WRITTEN_MODELS]
        if rebuild_indexes is None:
            c.execute(f"SELECT count(*) FROM {User._meta.db_table}")
            existing = int(c.fetchone()[0])
            rebuild_indexes = n_users >= REBUILD_MIN_USERS and n_users >= existing
        self.report.rebuilt_indexes = rebuild_indexes

        self.user_id = self._reserve(User, n_users)
        self.venue_id = self._reserve(Venue, len(city.venues))
        self.activity_id = self._reserve(Activity, len(city.activities))
        self.report.first_user_id = self.user_id
        self._categories()
        self.lap("reserve")

        dropped = _Dropped.take(c, tables) if rebuild_indexes else None
        self.lap("drop_indexes")

        for model, write in (
            (User, self._users),
            (Profile, self._profiles),
            (Venue, self._venues),
            (Venue.categories.through, self._venue_categories),
            (LocationPing, self._pings),
            (Availability, self._availability),
            (Connection, self._connections),
            (Interaction, self._visits),
            (Activity, self._activities),
            (Participation, self._participations),
        ):
            self.report.rows[model._meta.db_table] = write(model._meta.db_table)
            self.lap(model._meta.db_table)

        if dropped is not None:
            c.execute(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
            dropped.restore_indexes(c)
            self.lap("rebuild_indexes")
            dropped.restore_foreign_keys(c)
            self.lap("validate_foreign_keys")
        # Fires the deferred foreign-key checks queued by the COPYs (none after a rebuild), then
        # puts Django's initially-deferred constraints back as they were.
        c.execute("SET CONSTRAINTS ALL IMMEDIATE")
        c.execute("SET CONSTRAINTS ALL DEFERRED")
        self.lap("check_constraints")
        c.execute("ANALYZE " + ", ".join(tables))
        self.lap("analyze")

    # -- ids and categories -------------------------------------------------------------------

    def _reserve(self, model: type[models.Model], count: int) -> int:
        """The first of ``count`` fresh ids of ``model``; the sequence moves past them all."""
        table = model._meta.db_table
        # EXCLUSIVE blocks concurrent writes (not reads) until commit, so nobody inserts a row
        # between reading the sequence and moving it.
        self.cursor.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        self.cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
        sequence = self.cursor.fetchone()[0]
        # Past the largest id too, in case rows were inserted with explicit ids.
        self.cursor.execute(
            f"SELECT GREATEST(nextval(%s), (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}))",
            [sequence],
        )
        first = int(self.cursor.fetchone()[0])
        self.cursor.execute("SELECT setval(%s, %s)", [sequence, first + count - 1])
        return first

    def _categories(self) -> None:
        table = Category._meta.db_table
        self.cursor.execute(
            f"INSERT INTO {table} (source, external_id, name, interest) "
            "SELECT %s, slug, initcap(slug), slug FROM unnest(%s::text[]) AS slug "
            "ON CONFLICT (source, external_id) DO NOTHING",
            [CATEGORY_SOURCE, list(INTERESTS)],
        )
        self.cursor.execute(
            f"SELECT external_id, id FROM {table} WHERE source = %s", [CATEGORY_SOURCE]
        )
        found = dict(self.cursor.fetchall())
        self.category_ids = np.array([found[slug] for slug in INTERESTS], dtype=np.int64)

    # -- COPY ---------------------------------------------------------------------------------

    def _copy_text(self, table: str, columns: Sequence[str], chunks: Iterable[str]) -> None:
        with self.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for chunk in chunks:
                copy.write(chunk)

    def _copy_binary(
        self,
        table: str,
        columns: Sequence[str],
        chunks: Iterable[tuple[int, Sequence[BinaryColumn]]],
    ) -> int:
        total = 0
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        with self.cursor.copy(sql) as copy:
            copy.write(_BINARY_HEADER)
            for n, values in chunks:
                copy.write(_binary_rows(n, values))
                total += n
            copy.write(_BINARY_TRAILER)
        return total

    def _ranges(self, n: int) -> Iterator[slice]:
        for lo in range(0, n, COPY_CHUNK):
            yield slice(lo, min(n, lo + COPY_CHUNK))

    def _users(self, table: str) -> int:
        people, first_id, prefix = self.city.people, self.user_id, self.prefix
        digits = citygen.USERNAME_DIGITS
        first_names = np.array(citygen.FIRST_NAMES, dtype=object)
        last_names = np.array(citygen.LAST_NAMES, dtype=object)
        # Columns without a database default must be given; last_login and external_ref stay NULL.
        columns = (
            "id", "username", "first_name", "last_name", "date_joined", "password",
            "email", "is_superuser", "is_staff", "is_active", "is_featured", "is_hidden",
            "is_suspended",
        )
        constant = f"\t{UNUSABLE_PASSWORD}\t\tf\tf\tt\tf\tf\tf\n"

        def chunks() -> Iterator[str]:
            for part in self._ranges(len(people)):
                rows = zip(
                    range(part.start, part.stop),
                    first_names[people.first_name[part]].tolist(),
                    last_names[people.last_name[part]].tolist(),
                    _timestamps(people.date_joined[part]),
                    strict=True,
                )
                yield "".join(
                    f"{first_id + i}\t{prefix}{i:0{digits}d}\t{first}\t{last}\t{joined}{constant}"
                    for i, first, last, joined in rows
                )

        self._copy_text(table, columns, chunks())
        return len(people)

    def _profiles(self, table: str) -> int:
        people, first_id = self.city.people, self.user_id
        columns = (
            "user_id", "display_name", "bio", "birth_year", "gender", "education", "income_band",
            "occupation", "marital_status", "city_tier", "years_in_city", "languages",
            "interests", "activity_types", "place_types", "time_preferences", "discoverable",
            "location", "location_updated_at", "last_active_at", "created_at", "updated_at",
        )
        languages = np.array(
            ["{en," + code + "}" for code in citygen.SECOND_LANGUAGES] + ["{en}"], dtype=object
        )
        genders = np.array(citygen.GENDERS, dtype=object)
        occupations = np.array(citygen.OCCUPATIONS, dtype=object)
        first_names = np.array(citygen.FIRST_NAMES, dtype=object)
        initials = np.array([name[0] for name in citygen.LAST_NAMES], dtype=object)
        constant_tier = str(citygen.CITY_TIER)

        def chunks() -> Iterator[str]:
            for part in self._ranges(len(people)):
                active = _timestamps(people.last_active_at[part])
                rows = zip(
                    range(part.start, part.stop),
                    first_names[people.first_name[part]].tolist(),
                    initials[people.last_name[part]].tolist(),
                    _by_mask(people.interests[part], _bio),
                    people.birth_year[part].tolist(),
                    genders[people.gender[part]].tolist(),
                    people.education[part].tolist(),
                    people.income_band[part].tolist(),
                    occupations[people.occupation[part]].tolist(),
                    people.marital_status[part].tolist(),
                    people.years_in_city[part].tolist(),
                    languages[people.second_language[part]].tolist(),  # -1 is "{en}"
                    _by_mask(people.interests[part], _array_literal(INTERESTS)),
                    _by_mask(people.activity_types[part], _array_literal(ACTIVITY_TYPES)),
                    _by_mask(people.place_types[part], _array_literal(PLACE_TYPES)),
                    _by_mask(people.time_preferences[part], _array_literal(TIME_PREFERENCES)),
                    np.where(people.discoverable[part], "t", "f").tolist(),
                    _points(people.lon[part], people.lat[part]),
                    active,
                    _timestamps(people.date_joined[part]),
                    strict=True,
                )
                yield "".join(
                    f"{first_id + i}\t{first} {initial}.\t{bio}\t{born}\t{gender}\t{education}\t"
                    f"{income}\t{occupation}\t{marital}\t{constant_tier}\t{years}\t{langs}\t"
                    f"{interests}\t{kinds}\t{places}\t{times}\t{shown}\t{point}\t{at}\t{at}\t"
                    f"{joined}\t{at}\n"
                    for (
                        i, first, initial, bio, born, gender, education, income, occupation,
                        marital, years, langs, interests, kinds, places, times, shown, point, at,
                        joined,
                    ) in rows
                )

        self._copy_text(table, columns, chunks())
        return len(people)

    def _venues(self, table: str) -> int:
        venues, first_id = self.city.venues, self.venue_id
        created = _timestamps(np.array([self.city.config.now]))[0]
        rows = zip(
            range(len(venues)),
            venues.name.tolist(),
            _points(venues.lon, venues.lat),
            [PLACE_TYPES[t] for t in venues.place_type.tolist()],
            strict=True,
        )
        text = "".join(
            f"{first_id + j}\t{_escape(name)}\t{point}\t{place}\t"
            f"citygen:{self.prefix}:venue:{j}\t{created}\n"
            for j, name, point, place in rows
        )
        columns = ("id", "name", "location", "place_type", "external_ref", "created_at")
        self._copy_text(table, columns, [text])
        return len(venues)

    def _venue_categories(self, table: str) -> int:
        venues = self.city.venues
        return self._copy_binary(
            table,
            ("venue_id", "category_id"),
            [
                (
                    len(venues.category_venue),
                    [
                        ("int8", self.venue_id + venues.category_venue),
                        ("int8", self.category_ids[venues.category_interest]),
                    ],
                )
            ],
        )

    def _pings(self, table: str) -> int:
        pings, first_id = self.city.pings, self.user_id

        def chunks() -> Iterator[tuple[int, Sequence[BinaryColumn]]]:
            # The two sources differ in length, and a record dtype needs one width per column.
            for source, rows in (
                (LocationPing.Source.DEVICE, np.flatnonzero(~pings.from_visit)),
                (LocationPing.Source.VISIT, np.flatnonzero(pings.from_visit)),
            ):
                for part in self._ranges(len(rows)):
                    r = rows[part]
                    yield len(r), [
                        ("point", (pings.lon[r], pings.lat[r])),
                        ("timestamptz", pings.recorded_at[r]),
                        ("text", source.value),
                        ("text", ""),
                        ("int8", first_id + pings.person[r]),
                    ]

        return self._copy_binary(
            table, ("point", "recorded_at", "source", "source_ref", "user_id"), chunks()
        )

    def _availability(self, table: str) -> int:
        slots = self.city.slots
        return self._copy_binary(
            table,
            ("weekday", "start_time", "end_time", "user_id"),
            (
                (
                    part.stop - part.start,
                    [
                        ("int2", slots.weekday[part]),
                        ("time", slots.start_minute[part]),
                        ("time", slots.end_minute[part]),
                        ("int8", self.user_id + slots.person[part]),
                    ],
                )
                for part in self._ranges(len(slots.person))
            ),
        )

    def _connections(self, table: str) -> int:
        friends = self.city.friendships
        return self._copy_binary(
            table,
            ("status", "created_at", "responded_at", "from_user_id", "to_user_id"),
            (
                (
                    part.stop - part.start,
                    [
                        ("text", Connection.Status.ACCEPTED.value),
                        ("timestamptz", friends.created_at[part]),
                        ("timestamptz", friends.responded_at[part]),
                        ("int8", self.user_id + friends.a[part]),
                        ("int8", self.user_id + friends.b[part]),
                    ],
                )
                for part in self._ranges(len(friends))
            ),
        )

    def _visits(self, table: str) -> int:
        visits = self.city.visits
        return self._copy_binary(
            table,
            (
                "kind", "weight", "surface", "model_version", "variant", "occurred_at",
                "actor_id", "target_venue_id",
            ),
            (
                (
                    part.stop - part.start,
                    [
                        ("text", Interaction.Kind.VISIT.value),
                        ("float8", 1.0),
                        ("text", ""),
                        ("text", ""),
                        ("text", ""),
                        ("timestamptz", visits.occurred_at[part]),
                        ("int8", self.user_id + visits.person[part]),
                        ("int8", self.venue_id + visits.venue[part]),
                    ],
                )
                for part in self._ranges(len(visits))
            ),
        )

    def _activities(self, table: str) -> int:
        acts = self.city.activities
        created = _timestamps(acts.created_at)
        rows = zip(
            range(len(acts)),
            acts.title.tolist(),
            acts.description.tolist(),
            [ACTIVITY_TYPES[k] for k in acts.category.tolist()],
            ["" if s < 0 else INTERESTS[s] for s in acts.subtype.tolist()],
            acts.skill_level.tolist(),
            _points(acts.lon, acts.lat),
            _timestamps(acts.starts_at),
            _timestamps(acts.ends_at),
            acts.capacity.tolist(),
            acts.recruit_radius_km.tolist(),
            created,
            (self.user_id + acts.organiser).tolist(),
            (self.venue_id + acts.venue).tolist(),
            strict=True,
        )
        published = Activity.Status.PUBLISHED.value
        text = "".join(
            f"{self.activity_id + m}\t{_escape(title[:140])}\t{_escape(description)}\t{category}\t"
            f"{subtype}\t{skill}\t{point}\t{starts}\t{ends}\t{capacity}\t{radius!r}\t{published}\t"
            f"f\t{made}\t{made}\t{organiser}\t{venue}\n"
            for (
                m, title, description, category, subtype, skill, point, starts, ends, capacity,
                radius, made, organiser, venue,
            ) in rows
        )
        columns = (
            "id", "title", "description", "category", "subtype", "skill_level", "location",
            "starts_at", "ends_at", "capacity", "recruit_radius_km", "status", "is_featured",
            "created_at", "updated_at", "organiser_id", "venue_id",
        )
        self._copy_text(table, columns, [text])
        return len(acts)

    def _participations(self, table: str) -> int:
        parts = self.city.participations
        return self._copy_binary(
            table,
            ("joined_at", "activity_id", "user_id"),
            [
                (
                    len(parts),
                    [
                        ("timestamptz", parts.joined_at),
                        ("int8", self.activity_id + parts.activity),
                        ("int8", self.user_id + parts.person),
                    ],
                )
            ],
        )


# The models whose tables a run writes (categories excepted: a few shared rows).
WRITTEN_MODELS: tuple[type[models.Model], ...] = (
    User,
    Profile,
    Venue,
    Venue.categories.through,
    LocationPing,
    Availability,
    Connection,
    Interaction,
    Activity,
    Participation,
)


@dataclass
class _Dropped:
    """Secondary indexes, unique constraints and foreign keys taken off tables for a bulk load."""

    indexes: list[str]  # CREATE INDEX statements
    constraints: list[tuple[str, str, str]]  # (table, name, definition): unique and exclusion
    foreign_keys: list[tuple[str, str, str]]

    @classmethod
    def take(cls, cursor: Any, tables: Sequence[str]) -> _Dropped:
        """Record each definition, then drop it. Primary keys stay: other tables reference them.

        An index that backs a constraint is dropped with its constraint; one that a foreign key
        of any table depends on stays.
        """
        indexes: list[tuple[str, str]] = []
        constraints: list[tuple[str, str, str]] = []
        foreign_keys: list[tuple[str, str, str]] = []
        for table in tables:
            cursor.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype = 'f' ORDER BY conname",
                [table],
            )
            foreign_keys += [(table, name, d) for name, d in cursor.fetchall()]
            cursor.execute(
                "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
                "WHERE c.conrelid = %s::regclass AND c.contype IN ('u', 'x') AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = c.conindid) "
                "ORDER BY c.conname",
                [table],
            )
            constraints += [(table, name, d) for name, d in cursor.fetchall()]
            cursor.execute(
                "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) "
                "FROM pg_index i "
                "WHERE i.indrelid = %s::regclass AND NOT i.indisprimary AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) "
                "ORDER BY 1",
                [table],
            )
            indexes += cursor.fetchall()
        quote = connection.ops.quote_name
        for table, name, _ in foreign_keys + constraints:
            cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {quote(name)}")
        for name, _ in indexes:
            cursor.execute(f"DROP INDEX {name}")
        return cls(
            indexes=[d for _, d in indexes], constraints=constraints, foreign_keys=foreign_keys
        )

    def restore_indexes(self, cursor: Any) -> None:
        quote = connection.ops.quote_name
        for definition in self.indexes:
            cursor.execute(definition)
        for table, name, definition in self.constraints:
            cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {quote(name)} {definition}")

    def restore_foreign_keys(self, cursor: Any) -> None:
        quote = connection.ops.quote_name
        for table, name, definition in self.foreign_keys:
            cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {quote(name)} {definition}")
