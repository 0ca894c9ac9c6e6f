"""Everyone people nearby may show, and everyone's friendships, held in memory: a nearby
request's candidates without a scan, and the friends its pair features count without a join.

At 1,000,000 people the nearest-first scan of the GiST index (500 people, their heap rows and
the visibility checks) was about 13 ms of a 35 ms request, most of it in PostgreSQL. Each web
process instead keeps the people who may appear (discoverable, active, unhidden, unsuspended,
with a location): ids, positions and birth years, 28 bytes a person, sorted by a square bucket of
web-mercator space, so that the people of any square of buckets are one slice per bucket row.
Friendships (accepted connections, of everyone, shown or not) are kept as adjacency lists, both
directions of each row, 16 bytes a friendship: the pair features of a request read the friends
of the asker, of their friends and of a hundred candidates, which as a join was about 60% of the
pair-context statement in PostgreSQL at 1,000,000 people.

How it stays current:

1. Loading: one binary COPY of the eligible people, with the position in the change log (below)
   noted first; a process loads on first use (about a second at 1,000,000 people).
2. Changes: whatever can move a person, hide or show them (a profile saved or deleted, a user
   saved or deleted, staff hiding or suspending people in bulk) or change their friendships (a
   connection saved or deleted) announces the user ids in a Redis
   stream (``people_changed``), once when written (the writing connection, and so tests, sees its
   own change at once) and once more when the transaction commits (every other process then reads
   the committed row). Queries read the stream from where this process stopped (at most every
   ``CHANGES_SECONDS``, and at once after this process announced a change) and re-read those
   people's rows and friendships: the dead base rows are masked, the live ones
   and the friend lists go to small overlays, merged into the base when they grow past
   ``OVERLAY_MAX``.
3. Safety nets: bulk loads that send no model signals (``generate_city``, ``import_lbsn``) ask
   every process to load the map again (``people_reload``); so does a stream trimmed past what
   a process has read; and every
   ``RELOAD_SECONDS`` in any case (for writes that bypass the announcements: raw SQL, COPY), a
   fresh copy is loaded in a background thread while the old one keeps serving. And the people a
   response shows are checked against the database once more (``matching.services.nearby``), so
   a stale map can cost a place in a list but never show someone who may not be shown.

Query (``nearest``): squares of buckets around the query point, doubling in size, until the
people they hold include ``cap`` whose grid-snapped distance is within the radius the square
is guaranteed to cover (or the square covers the whole radius); those are sorted by snapped
distance, then id. Snapping is the request's (``matching.grid``), so the order and the cap see
only snapped positions, as the radius does.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from django.core.cache import cache
from django.db import connection, transaction

from matching.feature_store import copy_rows
from matching.grid import MERCATOR_R, mercator_y, snapped_distance_m
from matching.ml.arrays import member, unique

logger = logging.getLogger(__name__)

# Web-mercator units of a bucket's side (about 300 m on the ground at 40 degrees of latitude):
# in a dense city the first square of 3 x 3 buckets holds a few hundred people.
BUCKET = 400.0
OVERLAY_MAX = 20_000  # changed people kept apart before they are merged into the base
# The change log is read at most this often (a request asks the map several times, and a Redis
# round trip each time was a tenth of a request), and at once after this process announced a
# change of its own.
CHANGES_SECONDS = 0.1
RELOAD_SECONDS = 900.0  # a fresh copy from the database at least this often (in the background)
STREAM_KEY = "matching:people-map:changes"
STREAM_MAXLEN = 200_000  # entries kept (approximately); a process further behind reloads
EVERYONE = b"*"  # an entry that asks every process to load the map again (``people_reload``)
_ROW_OFFSET = 1 << 24  # bucket coordinates are shifted positive before they are packed into keys
_KEY_ROW = 1 << 26
_HALF_WORLD = math.pi * MERCATOR_R  # web-mercator x of the antimeridian
_WORLD = 2 * _HALF_WORLD

# Who people nearby may show (``p``: users_profile, ``u``: users_user); the final read of the
# people an answer shows checks the same condition.
SHOWN_WHERE = (
    "p.location IS NOT NULL AND p.discoverable AND u.is_active AND NOT u.is_hidden AND NOT u.is_suspended"
)
_ELIGIBLE = f"""
SELECT p.user_id, coalesce(p.birth_year, -1)::int8, ST_X(p.location::geometry), ST_Y(p.location::geometry)
FROM users_profile p JOIN users_user u ON u.id = p.user_id
WHERE {SHOWN_WHERE}
"""
_COLUMNS = (("id", "i8"), ("year", "i8"), ("lon", "f8"), ("lat", "f8"))
_FRIENDSHIPS = "SELECT from_user_id::int8, to_user_id::int8 FROM users_connection WHERE status = 'accepted'"
_PAIR = (("a", "i8"), ("b", "i8"))


@dataclass(frozen=True)
class Nearest:
    """People nearest a point, nearest (snapped) first, ties by id: ids, birth years (NaN where
    unknown) and snapped distances in metres."""

    ids: np.ndarray
    birth_years: np.ndarray
    distance_m: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class _Base:
    """The bulk of the map, sorted by bucket key; replaced whole, never changed in place."""

    keys: np.ndarray  # (n,) int64 bucket keys, sorted
    ids: np.ndarray  # (n,) int64
    lon: np.ndarray  # (n,) float64 degrees
    lat: np.ndarray
    years: np.ndarray  # (n,) float64, NaN where unknown
    by_id: np.ndarray  # (n,) rows in the order of their ids
    sorted_ids: np.ndarray  # ids[by_id]
    y: np.ndarray  # (n,) web-mercator northing of lat (``grid.mercator_y``): snapping reads it per query

    @classmethod
    def build(cls, ids: np.ndarray, lon: np.ndarray, lat: np.ndarray, years: np.ndarray) -> _Base:
        y = mercator_y(lat)
        keys = _keys(lon, y)
        order = np.lexsort((ids, keys))
        ids, lon, lat, years, keys, y = ids[order], lon[order], lat[order], years[order], keys[order], y[order]
        by_id = np.argsort(ids, kind="stable")
        return cls(keys=keys, ids=ids, lon=lon, lat=lat, years=years, by_id=by_id, sorted_ids=ids[by_id], y=y)

    def rows_of(self, user_ids: np.ndarray) -> np.ndarray:
        """Base rows of ``user_ids`` that are in the base."""
        if not len(self.ids):
            return np.zeros(0, dtype=np.int64)
        at = np.searchsorted(self.sorted_ids, user_ids).clip(0, len(self.ids) - 1)
        return self.by_id[at[self.sorted_ids[at] == user_ids]]


@dataclass(frozen=True)
class _Friends:
    """Adjacency lists: the friends of user ``u`` are ``neighbours[offsets[u]:offsets[u + 1]]``,
    one entry per accepted connection row, as a join of both directions gives them."""

    offsets: np.ndarray  # (max id + 2,) int64
    neighbours: np.ndarray  # (2 * friendships,) int64

    @classmethod
    def build(cls, users: np.ndarray, friends: np.ndarray) -> _Friends:
        """From (user, friend) entries in any order."""
        order = np.argsort(users, kind="stable")
        counts = np.bincount(users, minlength=1) if len(users) else np.zeros(1, dtype=np.int64)
        # One more offset than people: ids past the last are looked up as nobody's.
        offsets = np.concatenate([[0], np.cumsum(counts), [len(users)]]).astype(np.int64)
        return cls(offsets=offsets, neighbours=np.asarray(friends, dtype=np.int64)[order])

    @classmethod
    def of_rows(cls, a: np.ndarray, b: np.ndarray) -> _Friends:
        """From accepted connection rows (a, b): b is a friend of a and a of b."""
        return cls.build(np.concatenate([a, b]), np.concatenate([b, a]))

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (user, friend) entry."""
        counts = np.diff(self.offsets[:-1])
        return np.repeat(np.arange(len(counts), dtype=np.int64), counts), self.neighbours

    def of(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(user, friend) entries of ``user_ids``, in their order."""
        known = np.clip(user_ids, 0, len(self.offsets) - 2)
        starts = np.where(user_ids == known, self.offsets[known], 0)
        lengths = np.where(user_ids == known, self.offsets[known + 1] - starts, 0)
        total = int(lengths.sum())
        offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return np.repeat(user_ids, lengths), self.neighbours[np.repeat(starts, lengths) + offsets]


@dataclass(frozen=True)
class _State:
    """One consistent view: queries take it whole, changes replace it whole."""

    base: _Base
    dead: np.ndarray  # (n,) bool: base rows that changed since (their current row is in the overlay, if any)
    overlay: dict[int, tuple[float, float, float]] = field(default_factory=dict)  # id -> lon, lat, year
    overlay_arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    friends: _Friends = field(default_factory=lambda: _Friends.build(np.zeros(0, np.int64), np.zeros(0, np.int64)))
    friends_overlay: dict[int, np.ndarray] = field(default_factory=dict)  # id -> current friends


def _mercator(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Web-mercator metres of the bucket keys (latitude clipped to +-85 degrees)."""
    return np.radians(lon) * MERCATOR_R, mercator_y(np.clip(lat, -85.0, 85.0))


# The northing of +-85 degrees: clipping a northing to these is clipping its latitude first
# (``mercator_y`` increases with latitude).
_Y_MIN, _Y_MAX = (float(v) for v in mercator_y(np.array([-85.0, 85.0])))


def _keys(lon: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bucket keys of points from their longitudes and northings (``grid.mercator_y``, which the
    base keeps for snapping too): the keys of ``_mercator``'s clipped coordinates."""
    x = np.radians(np.asarray(lon, dtype=np.float64)) * MERCATOR_R
    y = np.clip(y, _Y_MIN, _Y_MAX)
    bx = np.floor(x / BUCKET).astype(np.int64) + _ROW_OFFSET
    by = np.floor(y / BUCKET).astype(np.int64) + _ROW_OFFSET
    return by * _KEY_ROW + bx


def _overlay_arrays(overlay: dict[int, tuple[float, float, float]]) -> tuple[np.ndarray, ...]:
    ids = np.fromiter(overlay.keys(), dtype=np.int64, count=len(overlay))
    values = np.array(list(overlay.values()), dtype=np.float64).reshape(-1, 3)
    return ids, values[:, 0], values[:, 1], values[:, 2]


def _years(raw: np.ndarray) -> np.ndarray:
    years = np.asarray(raw, dtype=np.float64)
    return np.where(years < 0, np.nan, years)


class PeopleMap:
    """One process's map of the people nearby may show (see the module's docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changes_lock = threading.Lock()
        self._state: _State | None = None
        self._stream_at = "0-0"  # the last change-log entry taken in
        self._stream_seen = 0  # the log's count of entries ever added, as of ``_stream_at``
        self._loaded_at = 0.0
        self._reloading = False
        self._changes_read = 0.0  # when the change log was last read
        self._announced = 0  # ``_announced`` as of then
        self._warned_at = -math.inf  # when Redis trouble was last logged

    # -- reading ------------------------------------------------------------------------------

    def nearest(
        self, *, lon: float, lat: float, radius_m: float, cap: int, grid_m: float,
        excluded: np.ndarray | None = None,
    ) -> Nearest:
        """The ``cap`` people nearest (``lon``, ``lat``) by snapped distance, within ``radius_m``
        of it, minus ``excluded`` ids."""
        state = self.current()
        base = state.base
        excluded = np.zeros(0, dtype=np.int64) if excluded is None else unique(np.asarray(excluded, dtype=np.int64))
        x0, y0 = _mercator(np.array([lon], dtype=np.float64), np.array([lat], dtype=np.float64))
        bx0 = int(math.floor(x0[0] / BUCKET)) + _ROW_OFFSET
        by0 = int(math.floor(y0[0] / BUCKET)) + _ROW_OFFSET
        # Ground metres per mercator unit, at worst, anywhere within the radius (50 km at most:
        # under half a degree of latitude), and how far snapping can move a person.
        scale = math.cos(math.radians(min(abs(lat) + radius_m / 100_000.0, 89.0)))
        snap_slack = grid_m * 0.75
        reach = int(math.ceil((radius_m + snap_slack) / (BUCKET * scale))) + 1
        if state.overlay_arrays is not None:
            o_ids, o_lon, o_lat, o_years = state.overlay_arrays
            keep = ~member(o_ids, excluded)
            o_ids, o_lon, o_lat, o_years = o_ids[keep], o_lon[keep], o_lat[keep], o_years[keep]
            o_dist = snapped_distance_m(o_lon, o_lat, lon, lat, grid_m)
        else:
            o_ids = np.zeros(0, dtype=np.int64)
            o_lon = o_lat = o_years = o_dist = np.zeros(0)
        # Near the antimeridian a square also reaches round the other side of the world: the
        # same square around the query point's image there.
        centres = [bx0]
        for shift in (-_WORLD, _WORLD):
            image = x0[0] + shift
            if abs(image) - reach * BUCKET < _HALF_WORLD:
                centres.append(int(math.floor(image / BUCKET)) + _ROW_OFFSET)
        r = 1
        while True:
            r = min(r, reach)
            rows = np.concatenate([self._square(base, bx, by0, r) for bx in centres])
            rows = rows[~state.dead[rows]]
            if len(excluded):
                rows = rows[~member(base.ids[rows], excluded)]
            covered = r * BUCKET * scale - snap_slack
            enough = len(rows) + len(o_ids) >= cap
            if enough or r >= reach:
                dist = snapped_distance_m(base.lon[rows], base.lat[rows], lon, lat, grid_m, y=base.y[rows])
                limit = min(covered, radius_m) if r < reach else radius_m
                inside = dist <= limit
                o_inside = o_dist <= limit
                if r >= reach or inside.sum() + o_inside.sum() >= cap:
                    ids = np.concatenate([base.ids[rows[inside]], o_ids[o_inside]])
                    years = np.concatenate([base.years[rows[inside]], o_years[o_inside]])
                    metres = np.concatenate([dist[inside], o_dist[o_inside]])
                    order = np.lexsort((ids, metres))[:cap]
                    return Nearest(ids=ids[order], birth_years=years[order], distance_m=metres[order])
            r *= 2

    @staticmethod
    def _square(base: _Base, bx0: int, by0: int, r: int) -> np.ndarray:
        """Base rows in the buckets within ``r`` of (``bx0``, ``by0``): one slice per bucket row."""
        rows_y = np.arange(by0 - r, by0 + r + 1, dtype=np.int64) * _KEY_ROW
        starts = np.searchsorted(base.keys, rows_y + (bx0 - r), side="left")
        ends = np.searchsorted(base.keys, rows_y + (bx0 + r), side="right")
        lengths = ends - starts
        total = int(lengths.sum())
        if not total:
            return np.zeros(0, dtype=np.int64)
        offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return np.repeat(starts, lengths) + offsets

    def __len__(self) -> int:
        state = self.current()
        return int((~state.dead).sum()) + len(state.overlay)

    def friendships(self, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(user, friend) for every accepted connection of each of ``user_ids`` (both
        directions, one entry per connection row, as ``users_connection`` holds them)."""
        state = self.current()
        user_ids = np.asarray(user_ids, dtype=np.int64)
        if not state.friends_overlay:
            return state.friends.of(user_ids)
        changed = np.array([int(u) in state.friends_overlay for u in user_ids.tolist()], dtype=bool)
        users, friends = state.friends.of(user_ids[~changed])
        extra = [state.friends_overlay[int(u)] for u in user_ids[changed].tolist()]
        lengths = [len(x) for x in extra]
        return (np.concatenate([users, np.repeat(user_ids[changed], lengths)]),
                np.concatenate([friends, *extra]).astype(np.int64))

    # -- keeping current ----------------------------------------------------------------------

    def current(self) -> _State:
        """The map as of now: loaded on first use, then brought up to date with the change log."""
        if self._state is None:
            with self._lock:
                if self._state is None:
                    self._state, (self._stream_at, self._stream_seen) = self._load()
                    self._loaded_at = time.monotonic()
        else:
            now = time.monotonic()
            if now - self._changes_read >= CHANGES_SECONDS or self._announced != _announced[0]:
                self._changes_read, self._announced = now, _announced[0]
                self._take_changes()
            if now - self._loaded_at > RELOAD_SECONDS:
                self._reload_in_background()
        assert self._state is not None
        return self._state

    def _load(self) -> tuple[_State, tuple[str, int]]:
        at = _stream_position()  # before the copy: a change made during it is read again after
        rows = copy_rows(_ELIGIBLE, [], _COLUMNS)
        base = _Base.build(rows["id"], rows["lon"], rows["lat"], _years(rows["year"]))
        pairs = copy_rows(_FRIENDSHIPS, [], _PAIR)
        friends = _Friends.of_rows(pairs["a"], pairs["b"])
        return _State(base=base, dead=np.zeros(len(base.ids), dtype=bool), friends=friends), at

    def _reload_in_background(self) -> None:
        with self._lock:
            if self._reloading:
                return
            self._reloading = True
            self._loaded_at = time.monotonic()  # no second reload while this one runs

        def run() -> None:
            from django.db import close_old_connections

            try:
                state, at = self._load()
                with self._changes_lock, self._lock:
                    self._state, (self._stream_at, self._stream_seen) = state, at
            except Exception:  # noqa: BLE001 - the old map keeps serving
                logger.exception("people map: reload failed; serving the old one")
            finally:
                self._reloading = False
                close_old_connections()
                connection.close()  # this thread's own connection

        threading.Thread(target=run, name="people-map-reload", daemon=True).start()

    def _take_changes(self) -> None:
        with self._changes_lock:  # one reader at a time, so the position moves only forward
            try:
                entries, added, missed = _stream_since(self._stream_at, self._stream_seen)
            except Exception:  # noqa: BLE001 - Redis trouble: serve what we have
                now = time.monotonic()
                if now - self._warned_at > 60.0:  # once a minute, not at every read
                    self._warned_at = now
                    logger.warning("people map: cannot read the change log; serving the map as it is",
                                   exc_info=True)
                return
            reload_all = any(user_id == EVERYONE for _, user_id in entries)
            ids = [int(user_id) for _, user_id in entries if user_id != EVERYONE]
            if ids:
                self.apply(np.unique(np.array(ids, dtype=np.int64)))
            if entries:
                self._stream_at = entries[-1][0]
            self._stream_seen = added
        if missed or reload_all:
            self._reload_in_background()

    def apply(self, user_ids: np.ndarray) -> None:
        """Re-read ``user_ids`` from the database and take their current rows in."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        as_list = user_ids.tolist()
        rows = copy_rows(_ELIGIBLE + " AND p.user_id = ANY(%s)", [as_list], _COLUMNS)
        pairs = copy_rows(_FRIENDSHIPS + " AND (from_user_id = ANY(%s) OR to_user_id = ANY(%s))",
                          [as_list, as_list], _PAIR)
        source = np.concatenate([pairs["a"], pairs["b"]])
        target = np.concatenate([pairs["b"], pairs["a"]])
        with self._lock:
            state = self._state
            if state is None:
                return
            dead = state.dead.copy()
            dead[state.base.rows_of(user_ids)] = True
            overlay = {k: v for k, v in state.overlay.items() if k not in set(as_list)}
            for uid, year, lon, lat in zip(rows["id"].tolist(), _years(rows["year"]).tolist(),
                                           rows["lon"].tolist(), rows["lat"].tolist(), strict=True):
                overlay[uid] = (lon, lat, year)
            friends_overlay = dict(state.friends_overlay)
            for uid in as_list:
                friends_overlay[uid] = target[source == uid]
            friends = state.friends
            if len(friends_overlay) > OVERLAY_MAX:
                friends, friends_overlay = _friends_merged(friends, friends_overlay), {}
            if len(overlay) > OVERLAY_MAX:
                merged = _merged(state.base, dead, overlay)
                self._state = dataclasses.replace(merged, friends=friends, friends_overlay=friends_overlay)
            else:
                arrays = _overlay_arrays(overlay) if overlay else None
                self._state = _State(base=state.base, dead=dead, overlay=overlay, overlay_arrays=arrays,
                                     friends=friends, friends_overlay=friends_overlay)

    def reset(self) -> None:
        """Forget the map (tests): the next query loads it again."""
        with self._lock:
            self._state, self._stream_at, self._stream_seen, self._loaded_at = None, "0-0", 0, 0.0
            self._changes_read = 0.0


def _merged(base: _Base, dead: np.ndarray, overlay: dict[int, tuple[float, float, float]]) -> _State:
    o_ids, o_lon, o_lat, o_years = _overlay_arrays(overlay)
    live = ~dead
    merged = _Base.build(
        np.concatenate([base.ids[live], o_ids]), np.concatenate([base.lon[live], o_lon]),
        np.concatenate([base.lat[live], o_lat]), np.concatenate([base.years[live], o_years]),
    )
    return _State(base=merged, dead=np.zeros(len(merged.ids), dtype=bool))


def _friends_merged(friends: _Friends, overlay: dict[int, np.ndarray]) -> _Friends:
    """Adjacency lists with the changed people's lists in place of their old ones. Each list
    is kept whole, so both directions of a connection row stay as the rows are."""
    users, neighbours = friends.pairs()
    changed = np.fromiter(overlay.keys(), dtype=np.int64, count=len(overlay))
    keep = ~np.isin(users, changed)
    lengths = [len(x) for x in overlay.values()]
    return _Friends.build(np.concatenate([users[keep], np.repeat(changed, lengths)]),
                          np.concatenate([neighbours[keep], *overlay.values()]))


# ----------------------------------------------------------------------------------------------
# The change log: a Redis stream of user ids


def _redis():  # noqa: ANN202 - redis-py's client
    return cache.client.get_client()


def _stream_key() -> str:
    return cache.make_key(STREAM_KEY)


def _stream_position() -> tuple[str, int]:
    """(last entry id, entries ever added) of the change log, read together."""
    try:
        info = _redis().xinfo_stream(_stream_key())
    except Exception as error:  # noqa: BLE001 - without Redis, the map is read from the database only
        if "no such key" not in str(error).lower():
            logger.warning("people map: cannot read the change log", exc_info=True)
        return "0-0", 0
    return _text(info["last-generated-id"]), int(info["entries-added"])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_since(after: str, seen: int) -> tuple[list[tuple[str, bytes]], int, bool]:
    """Entries after ``after`` as (entry id, user id), the log's count of entries ever added, and
    whether any added since ``seen`` were trimmed unread (or the log was emptied and begun again).

    Both are read in one MULTI, so that no entry can be added between them.
    """
    pipe = _redis().pipeline(transaction=True)
    pipe.xread({_stream_key(): after}, count=100_000)
    pipe.xinfo_stream(_stream_key())
    try:
        read, info = pipe.execute()
    except Exception as error:  # noqa: BLE001 - no log yet: nothing has been announced
        if "no such key" in str(error).lower():
            return [], 0, seen > 0
        raise
    entries = [(_text(entry_id), fields[b"u"]) for entry_id, fields in (read[0][1] if read else [])]
    added = int(info["entries-added"])
    return entries, added, added != seen + len(entries)


def people_changed(user_ids: list[int] | np.ndarray) -> None:
    """Announce that these people may have moved, appeared or gone (see the module's docstring):
    at once, and again when the current transaction commits."""
    ids = [int(u) for u in user_ids]
    if not ids:
        return

    def announce() -> None:
        try:
            pipe = _redis().pipeline(transaction=False)
            for user_id in ids:
                pipe.xadd(_stream_key(), {"u": user_id}, maxlen=STREAM_MAXLEN, approximate=True)
            pipe.execute()
        except Exception:  # noqa: BLE001 - the map's reload catches up; the save must not fail
            logger.warning("people map: could not announce %d changed people", len(ids), exc_info=True)
        _announced[0] += 1

    announce()
    if connection.in_atomic_block:
        transaction.on_commit(announce)


_announced = [0]  # changes this process announced: its maps read the log at once after one


def people_reload() -> None:
    """Ask every process to load its map again, in the background, once the current transaction
    commits: after bulk writes that send no model signals (``generate_city``, ``import_lbsn``)."""

    def announce() -> None:
        try:
            _redis().xadd(_stream_key(), {"u": EVERYONE}, maxlen=STREAM_MAXLEN, approximate=True)
        except Exception:  # noqa: BLE001 - the periodic reload catches up
            logger.warning("people map: could not ask for a reload", exc_info=True)
        _announced[0] += 1

    transaction.on_commit(announce)


people_map = PeopleMap()
