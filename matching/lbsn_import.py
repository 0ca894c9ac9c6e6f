"""Import an LBSN dataset directory: people, venues, friendships and visits, in one transaction.

What becomes what (``source`` is the dataset label, "yelp-small"; ``i`` a dataset id):

* user ``i``  -> ``users.User`` "{source}-{i}" with ``external_ref`` "{source}:{i}" and an unusable
  password, and a discoverable ``users.Profile`` whose location is the person's home (the
  geometric median of the places they visited in their busiest area, see
  ``matching.lbsn.home_locations``; none
  without visits) and whose interests are the leading interests of those places' categories;
* category ``i`` -> ``activities.Category(source, external_id=i)``. LBSN files only number their
  categories, so the interest of category ``i`` is ``INTERESTS[i % 20]``: arbitrary but stable.
  Staff may correct it in the admin; a re-import keeps their choice and later imported profiles
  use it. A dataset without ``poi_categories.txt`` gets no categories;
* place ``i`` -> ``activities.Venue`` "{source} place {i}" (``external_ref`` "{source}:{i}") with
  its categories;
* a friendship -> one accepted ``users.Connection``, in the direction the file lists first;
* each distinct (user, place) of train, tune and test -> one ``matching.Interaction`` of kind
  "visit", weighted by its summed counts, dated by the pair's latest check-in (or
  ``UNDATED_VISIT_AT`` when there is none);
* each distinct check-in -> one ``users.LocationPing`` (source "visit") at the venue; without a
  check-in file, one per visited (user, place) at ``UNDATED_VISIT_AT``.

Every row is matched on a natural key (``external_ref``, the category's source and id, the
connection's pair, the visit's person, venue and time, the ping's person, time and
``source_ref``) and inserted with ``ON CONFLICT DO NOTHING``: a re-import of the same data adds
nothing and changes nothing, including what staff or people edited since. The rows are written
with ``COPY`` into temporary tables and one ``INSERT ... SELECT`` per table, which keeps a
100,000-person dataset to seconds, not to one ORM round trip per row. These writes bypass
``save()`` and its signals.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.db import connection, models, transaction
from django.utils import timezone

from activities.models import Category, Venue
from matching.lbsn import (
    LbsnDataset,
    category_shares,
    home_locations,
    read_lbsn,
    unique_check_ins,
    unique_friend_pairs,
    visit_totals,
)
from matching.models import Interaction
from matching.people_map import people_reload
from users.models import Connection, LocationPing, Profile, User
from users.taxonomy import INTERESTS

# A label must make valid usernames ("{source}-{id}") and unambiguous references
# ("{source}:{id}"), and fit Category.source (60 characters).
SOURCE_PATTERN = re.compile(r"[A-Za-z0-9_.@+-]{1,60}")
# Visits and pings of a dataset without check-in times: the Unix epoch, plainly not a real time,
# and older than any real event, so "recent behaviour" never mistakes them for recent.
UNDATED_VISIT_AT = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# A profile gets at most this many interests, each with at least this share of the person's
# categorised visits (a 10 % floor keeps one stray visit from becoming an interest).
MAX_INTERESTS = 5
MIN_INTEREST_SHARE = 0.10
# Rows per COPY write: bounds the memory of the text buffer.
COPY_CHUNK = 100_000
# Memory for the sorts and hash joins of the import's statements (for this transaction only).
WORK_MEM = "64MB"

SOURCE_INVALID = (
    "the source label {source!r} must be 1 to 60 letters, digits or . @ + - _ "
    "(it names the imported users and places)"
)
USERNAMES_TAKEN = "these usernames are taken by people who are not from {source}: {names}"


class LbsnImportError(Exception):
    """The dataset is well formed but cannot be imported as asked (a bad label, a name clash)."""


@dataclass(frozen=True)
class ImportCount:
    created: int
    present: int  # in the dataset and already in the database, left as it was

    def __str__(self) -> str:
        return f"{self.created} created, {self.present} already present"


@dataclass(frozen=True)
class ImportReport:
    source: str
    directory: Path
    prefix: str
    users: ImportCount
    profiles: ImportCount
    categories: ImportCount
    venues: ImportCount
    venue_categories: ImportCount
    connections: ImportCount
    visits: ImportCount
    location_pings: ImportCount
    seconds: float

    def counts(self) -> dict[str, ImportCount]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value for name, value in values.items() if isinstance(value, ImportCount)}

    @property
    def created(self) -> int:
        return sum(count.created for count in self.counts().values())

    def lines(self) -> list[str]:
        head = (
            f"Imported {self.directory} ({self.prefix}*) as {self.source!r} "
            f"in {self.seconds:.1f} s:"
        )
        return [head] + [
            f"  {name.replace('_', ' ')}: {count}" for name, count in self.counts().items()
        ]


def lbsn_import(*, directory: Path, source: str) -> ImportReport:
    """Import the dataset in ``directory`` under the label ``source``; idempotent.

    1. Check the label, then read and check every file (``matching.lbsn.read_lbsn``) before
       touching the database: a malformed line raises ``LbsnFormatError`` and writes nothing.
    2. Derive the rows: distinct visits with their weight and latest check-in, distinct
       check-ins, distinct friendships, each person's home.
    3. In one transaction, insert categories, venues and their categories, users, profiles
       (interests from the categories' interests as stored, so staff corrections count),
       connections, visits and pings, each skipping what is already there.
    4. Report, per kind of row, how many were created and how many were already present.
    """
    started = time.monotonic()
    if not SOURCE_PATTERN.fullmatch(source):
        raise LbsnImportError(SOURCE_INVALID.format(source=source))
    dataset = read_lbsn(directory)
    with transaction.atomic(), connection.cursor() as cursor:
        writer = _Writer(cursor, dataset, source)
        counts = writer.run()
        people_reload()  # rows inserted in bulk send no signals: web processes load their maps again
    return ImportReport(
        source=source,
        directory=Path(directory),
        prefix=dataset.prefix,
        seconds=time.monotonic() - started,
        **counts,
    )


def _present(expected: int, created: int) -> ImportCount:
    return ImportCount(created=created, present=expected - created)


def _column_defaults(
    model: type[models.Model], given: Iterable[str], now: dt.datetime
) -> tuple[list[str], list[str], dict[str, Any]]:
    """The columns an import does not set, and the values a new instance of the model would get.

    Taking them from the model keeps raw inserts in step with it: a new field with a default
    needs no change here. Returns the quoted columns, matching typed placeholders for the SELECT
    list, and their parameters.
    """
    given = set(given)
    columns: list[str] = []
    values: list[str] = []
    params: dict[str, Any] = {}
    for field in model._meta.concrete_fields:
        if field.primary_key or field.column in given:
            continue
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            value = now
        else:
            # The model's default, "" for a text field without one, None for a nullable field.
            value = field.get_default()
            if value is None and not field.null:
                raise TypeError(
                    f"{model.__name__}.{field.name} has no default: the LBSN import must set it"
                )
        name = f"default_{field.column}"
        columns.append(connection.ops.quote_name(field.column))
        values.append(f"CAST(%({name})s AS {field.db_type(connection)})")
        params[name] = field.get_db_prep_save(value, connection)
    return columns, values, params


def _text(values: np.ndarray | Sequence[str]) -> list[str]:
    """One column as COPY text: ints and strings as they are, floats round-trip, NaN as NULL."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return [repr(v) if v == v else r"\N" for v in values.tolist()]
    if isinstance(values, np.ndarray):
        return [str(v) for v in values.tolist()]
    return list(values)


class _Writer:
    """The database half of one import: temporary tables, then one INSERT per model."""

    def __init__(self, cursor: Any, dataset: LbsnDataset, source: str) -> None:
        self.cursor = cursor
        self.dataset = dataset
        self.source = source
        self.now = timezone.now()
        self.temporary: list[str] = []

    # -- helpers ---------------------------------------------------------------------------

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> int:
        self.cursor.execute(sql, {"source": self.source, **(params or {})})
        return int(self.cursor.rowcount)

    def create_temporary(self, name: str, definition: str) -> None:
        self.execute(f"DROP TABLE IF EXISTS {name}")
        self.execute(f"CREATE TEMPORARY TABLE {name} ({definition}) ON COMMIT DROP")
        self.temporary.append(name)

    def copy(
        self, table: str, columns: Sequence[str], data: Sequence[np.ndarray | Sequence[str]]
    ) -> None:
        n_rows = len(data[0])
        with self.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for start in range(0, n_rows, COPY_CHUNK):
                chunk = [_text(column[start : start + COPY_CHUNK]) for column in data]
                copy.write("".join("\t".join(row) + "\n" for row in zip(*chunk, strict=True)))

    def id_map(self, name: str, model: type[models.Model], key_sql: str, source_table: str) -> None:
        """``name(idx, id)``: the database id of each dataset id, by the model's natural key."""
        self.execute(f"DROP TABLE IF EXISTS {name}")
        self.execute(
            f"CREATE TEMPORARY TABLE {name} ON COMMIT DROP AS "
            f"SELECT t.idx, m.id FROM {source_table} t JOIN {model._meta.db_table} m ON {key_sql}"
        )
        self.execute(f"ALTER TABLE {name} ADD PRIMARY KEY (idx)")
        self.execute(f"ANALYZE {name}")
        self.temporary.append(name)

    def insert(
        self,
        model: type[models.Model],
        columns: Sequence[str],
        select: str,
        tail: str,
        params: dict[str, Any] | None = None,
    ) -> int:
        """``INSERT INTO model (columns, defaults) SELECT select, defaults tail``; rows inserted."""
        default_columns, default_values, default_params = _column_defaults(model, columns, self.now)
        all_columns = ", ".join([*columns, *default_columns])
        all_values = ", ".join([select, *default_values])
        sql = f"INSERT INTO {model._meta.db_table} ({all_columns}) SELECT {all_values} {tail}"
        return self.execute(sql, {**default_params, **(params or {})})

    # -- the import ------------------------------------------------------------------------

    def run(self) -> dict[str, ImportCount]:
        ds = self.dataset
        totals = visit_totals(ds)
        if ds.has_check_ins:
            ping_pairs, ping_times = unique_check_ins(ds)
        else:
            ping_pairs, ping_times = (
                totals.pairs,
                np.full(len(totals.pairs), UNDATED_VISIT_AT.timestamp()),
            )
        occurred = np.where(
            np.isnan(totals.last_check_in), UNDATED_VISIT_AT.timestamp(), totals.last_check_in
        )
        friends = unique_friend_pairs(ds)
        counts: dict[str, ImportCount] = {}

        # Sorting and hashing a million rows in the default 4 MB would spill to disk.
        self.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")

        counts["categories"], labels = self.categories()
        counts["venues"] = self.venues()
        counts["venue_categories"] = self.venue_categories()
        counts["users"] = self.users()
        counts["profiles"] = self.profiles(
            totals.pairs, totals.weights, labels, ping_pairs, ping_times
        )
        counts["connections"] = self.connections(friends)
        counts["visits"] = self.visits(totals.pairs, totals.weights, occurred)
        counts["location_pings"] = self.pings(ping_pairs, ping_times)
        for name in self.temporary:
            self.execute(f"DROP TABLE IF EXISTS {name}")
        return counts

    def categories(self) -> tuple[ImportCount, np.ndarray]:
        """Categories, and the interest (index into INTERESTS) of each category id as stored."""
        n = self.dataset.n_categories if self.dataset.has_categories else 0
        self.create_temporary("lbsn_categories", "idx bigint")
        self.execute("INSERT INTO lbsn_categories SELECT generate_series(0, %(n)s - 1)", {"n": n})
        created = self.insert(
            Category,
            ["source", "external_id", "name", "interest"],
            "%(source)s, t.idx::text, %(source)s || ' category ' || t.idx, "
            "(%(interests)s::text[])[t.idx %% %(n_interests)s + 1]",
            "FROM lbsn_categories t ORDER BY t.idx ON CONFLICT (source, external_id) DO NOTHING",
            {"interests": list(INTERESTS), "n_interests": len(INTERESTS)},
        )
        self.id_map(
            "lbsn_category_ids",
            Category,
            "m.source = %(source)s AND m.external_id = t.idx::text",
            "lbsn_categories",
        )
        self.execute(
            f"SELECT t.idx, m.interest FROM lbsn_category_ids t "
            f"JOIN {Category._meta.db_table} m ON m.id = t.id"
        )
        position = {slug: index for index, slug in enumerate(INTERESTS)}
        labels = np.zeros(n, dtype=np.int64)
        for idx, interest in self.cursor.fetchall():
            labels[idx] = position[interest]
        return _present(n, created), labels

    def venues(self) -> ImportCount:
        ds = self.dataset
        self.create_temporary("lbsn_venues", "idx bigint, lon float8, lat float8")
        self.copy(
            "lbsn_venues",
            ["idx", "lon", "lat"],
            [np.arange(ds.n_places), ds.place_lonlat[:, 0], ds.place_lonlat[:, 1]],
        )
        created = self.insert(
            Venue,
            ["name", "location", "external_ref"],
            "%(source)s || ' place ' || t.idx, "
            "ST_SetSRID(ST_MakePoint(t.lon, t.lat), 4326)::geography, %(source)s || ':' || t.idx",
            "FROM lbsn_venues t ORDER BY t.idx ON CONFLICT (external_ref) DO NOTHING",
        )
        self.id_map(
            "lbsn_venue_ids", Venue, "m.external_ref = %(source)s || ':' || t.idx", "lbsn_venues"
        )
        return _present(ds.n_places, created)

    def venue_categories(self) -> ImportCount:
        pairs = (
            np.unique(self.dataset.place_categories, axis=0)
            if self.dataset.has_categories
            else np.empty((0, 2), np.int64)
        )
        self.create_temporary("lbsn_place_categories", "place bigint, category bigint")
        self.copy("lbsn_place_categories", ["place", "category"], [pairs[:, 0], pairs[:, 1]])
        through = Venue.categories.through
        created = self.execute(
            f"INSERT INTO {through._meta.db_table} (venue_id, category_id) "
            "SELECT v.id, c.id FROM lbsn_place_categories t "
            "JOIN lbsn_venue_ids v ON v.idx = t.place "
            "JOIN lbsn_category_ids c ON c.idx = t.category "
            "ORDER BY v.id, c.id ON CONFLICT DO NOTHING"
        )
        return _present(len(pairs), created)

    def users(self) -> ImportCount:
        n = self.dataset.n_users
        self.create_temporary("lbsn_users", "idx bigint")
        self.execute("INSERT INTO lbsn_users SELECT generate_series(0, %(n)s - 1)", {"n": n})
        table = User._meta.db_table
        self.execute(
            f"SELECT m.username FROM lbsn_users t "
            f"JOIN {table} m ON m.username = %(source)s || '-' || t.idx "
            "WHERE m.external_ref IS DISTINCT FROM %(source)s || ':' || t.idx "
            "ORDER BY t.idx LIMIT 5"
        )
        taken = [row[0] for row in self.cursor.fetchall()]
        if taken:
            raise LbsnImportError(
                USERNAMES_TAKEN.format(source=self.source, names=", ".join(taken))
            )
        # Django's unusable password: the prefix, then 40 random characters (two random UUIDs).
        created = self.insert(
            User,
            ["username", "external_ref", "password", "date_joined"],
            "%(source)s || '-' || t.idx, %(source)s || ':' || t.idx, "
            "%(unusable)s || replace(gen_random_uuid()::text, '-', '') "
            "|| left(replace(gen_random_uuid()::text, '-', ''), 8), %(now)s",
            "FROM lbsn_users t ORDER BY t.idx ON CONFLICT (external_ref) DO NOTHING",
            {"unusable": UNUSABLE_PASSWORD_PREFIX, "now": self.now},
        )
        self.id_map(
            "lbsn_user_ids", User, "m.external_ref = %(source)s || ':' || t.idx", "lbsn_users"
        )
        return _present(n, created)

    def profiles(
        self,
        pairs: np.ndarray,
        weights: np.ndarray,
        labels: np.ndarray,
        ping_pairs: np.ndarray,
        ping_times: np.ndarray,
    ) -> ImportCount:
        """Profiles: home, the time of the newest ping, and the leading interests.

        The interests of a person are those with at least ``MIN_INTEREST_SHARE`` of their
        categorised visits, the largest first (ties in taxonomy order), at most
        ``MAX_INTERESTS``; none without categories.
        """
        ds = self.dataset
        homes = home_locations(ds.n_users, ds.place_lonlat, pairs, weights)
        located_at = np.full(ds.n_users, np.nan)
        if len(ping_pairs):
            np.fmax.at(located_at, ping_pairs[:, 0], ping_times)
        located_at[np.isnan(homes[:, 0])] = np.nan
        interests = [""] * ds.n_users
        if len(labels):
            shares = category_shares(ds, pairs, weights, labels, len(INTERESTS))
            order = np.argsort(-shares, axis=1, kind="stable")[:, :MAX_INTERESTS]
            top = np.take_along_axis(shares, order, axis=1)
            for user in range(ds.n_users):
                chosen = order[user][top[user] >= MIN_INTEREST_SHARE]
                interests[user] = ",".join(INTERESTS[i] for i in chosen)
        self.create_temporary(
            "lbsn_profiles", "idx bigint, lon float8, lat float8, located_at float8, interests text"
        )
        self.copy(
            "lbsn_profiles",
            ["idx", "lon", "lat", "located_at", "interests"],
            [
                np.arange(ds.n_users),
                homes[:, 0],
                homes[:, 1],
                located_at,
                ["{" + i + "}" for i in interests],
            ],
        )
        title = self.source[:1].upper() + self.source[1:]
        created = self.insert(
            Profile,
            [
                "user_id",
                "display_name",
                "discoverable",
                "location",
                "location_updated_at",
                "interests",
            ],
            "u.id, %(title)s || ' user ' || t.idx, true, "
            "ST_SetSRID(ST_MakePoint(t.lon, t.lat), 4326)::geography, to_timestamp(t.located_at), "
            "t.interests::varchar(24)[]",
            "FROM lbsn_profiles t JOIN lbsn_user_ids u ON u.idx = t.idx ORDER BY u.id "
            "ON CONFLICT (user_id) DO NOTHING",
            {"title": title},
        )
        return _present(ds.n_users, created)

    def connections(self, friends: np.ndarray) -> ImportCount:
        self.create_temporary("lbsn_friends", "a bigint, b bigint")
        self.copy("lbsn_friends", ["a", "b"], [friends[:, 0], friends[:, 1]])
        # No conflict target: the pair's uniqueness is an index on LEAST/GREATEST of the two.
        created = self.insert(
            Connection,
            ["from_user_id", "to_user_id", "status", "created_at", "responded_at"],
            "a.id, b.id, %(accepted)s, %(now)s, %(now)s",
            "FROM lbsn_friends t JOIN lbsn_user_ids a ON a.idx = t.a "
            "JOIN lbsn_user_ids b ON b.idx = t.b "
            "ON CONFLICT DO NOTHING",
            {"accepted": Connection.Status.ACCEPTED.value, "now": self.now},
        )
        return _present(len(friends), created)

    def visits(self, pairs: np.ndarray, weights: np.ndarray, occurred: np.ndarray) -> ImportCount:
        self.create_temporary(
            "lbsn_visits", "user_idx bigint, place bigint, weight float8, at float8"
        )
        self.copy(
            "lbsn_visits",
            ["user_idx", "place", "weight", "at"],
            [pairs[:, 0], pairs[:, 1], weights, occurred],
        )
        # No conflict target: visits are unique through a partial index (kind = 'visit').
        created = self.insert(
            Interaction,
            ["actor_id", "kind", "target_venue_id", "weight", "occurred_at"],
            "u.id, %(visit)s, v.id, t.weight, to_timestamp(t.at)",
            "FROM lbsn_visits t JOIN lbsn_user_ids u ON u.idx = t.user_idx "
            "JOIN lbsn_venue_ids v ON v.idx = t.place "
            "ORDER BY u.id, v.id ON CONFLICT DO NOTHING",
            {"visit": Interaction.Kind.VISIT.value},
        )
        return _present(len(pairs), created)

    def pings(self, pairs: np.ndarray, times: np.ndarray) -> ImportCount:
        self.create_temporary("lbsn_pings", "user_idx bigint, place bigint, at float8")
        self.copy("lbsn_pings", ["user_idx", "place", "at"], [pairs[:, 0], pairs[:, 1], times])
        created = self.insert(
            LocationPing,
            ["user_id", "point", "recorded_at", "source", "source_ref"],
            "u.id, m.location, to_timestamp(t.at), %(visit)s, %(source)s || ':venue:' || t.place",
            f"FROM lbsn_pings t JOIN lbsn_user_ids u ON u.idx = t.user_idx "
            "JOIN lbsn_venue_ids v ON v.idx = t.place "
            f"JOIN {Venue._meta.db_table} m ON m.id = v.id "
            "ORDER BY u.id, t.at ON CONFLICT DO NOTHING",
            {"visit": LocationPing.Source.VISIT.value},
        )
        return _present(len(pairs), created)
