"""What each person did, kept with an embedding set so ranking people nearby need not query it.

The served pair features (``matching.services.nearby``) compare the asker with a hundred
candidates on venues visited, activities joined, weekly availability and places pinged. Reading
those rows of a hundred people from tables of millions was most of a request's time in
PostgreSQL. ``PersonRows`` holds them per person as CSR arrays (one ``indptr`` per kind, rows in
the order of the set's sorted user ids), saved when the set is built and memory-mapped by every
web process. Friendships are not here: they change socially and stay a live query.

Places pinged are packed as one int64 per (UTC day, ~10 m spot): ``day << 44 | x << 22 | y``
with ``x = round(lon * 1e4) + 2**21`` and ``y = round(lat * 1e4) + 2**21`` (22 bits each; the
day needs 19 bits until the year 3400). ``round`` is half-to-even, as PostgreSQL's for double
precision, so a key made here equals one made from the same ping in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from matching.ml.data import KIND_CODE, CityData
from matching.ml.index import mapped, save_array

_OFFSET = 1 << 21
_MASK = (1 << 22) - 1


def spot_keys(day: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Packed (day, spot) keys; ``day`` in whole UTC days since 1970."""
    x = np.round(np.asarray(lon, dtype=np.float64) * 1e4).astype(np.int64) + _OFFSET
    y = np.round(np.asarray(lat, dtype=np.float64) * 1e4).astype(np.int64) + _OFFSET
    return (np.asarray(day, dtype=np.int64) << 44) | (x << 22) | y


def spot_unpack(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(day, lon, lat) of packed keys; lon and lat are the spot's, to 1e-4 degrees."""
    keys = np.asarray(keys, dtype=np.int64)
    x = ((keys >> 22) & _MASK) - _OFFSET
    y = (keys & _MASK) - _OFFSET
    return keys >> 44, x / 1e4, y / 1e4


def gather(indptr: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in ``rows`` of each value, values) of the CSR rows ``rows``, in that order."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = np.asarray(indptr[rows], dtype=np.int64)
    lengths = np.asarray(indptr[rows + 1], dtype=np.int64) - starts
    owner = np.repeat(np.arange(len(rows)), lengths)
    # Index of each value: its row's start plus its offset within the row.
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return owner, np.asarray(values[np.repeat(starts, lengths) + within])


def _csr(owner: np.ndarray, values: np.ndarray, n: int, *, distinct: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by owner -> (indptr, values). 1-d values are sorted within each owner and,
    with ``distinct``, repeated (owner, value) pairs are kept once."""
    owner = np.asarray(owner, dtype=np.int64)
    if values.ndim == 1:
        order = np.lexsort((values, owner))
        owner, values = owner[order], values[order]
        if distinct and len(owner):
            keep = np.ones(len(owner), dtype=bool)
            keep[1:] = (owner[1:] != owner[:-1]) | (values[1:] != values[:-1])
            owner, values = owner[keep], values[keep]
    else:
        order = np.argsort(owner, kind="stable")
        owner, values = owner[order], values[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=n), out=indptr[1:])
    return indptr, values


@dataclass
class PersonRows:
    """Per person (rows of the set's sorted user ids): distinct venues visited (database ids),
    distinct activities joined, availability slots (weekday, start and end minute of the day),
    distinct (day, spot) keys of location pings."""

    visit_indptr: np.ndarray
    visit_venue: np.ndarray
    join_indptr: np.ndarray
    join_activity: np.ndarray
    avail_indptr: np.ndarray
    avail: np.ndarray  # (k, 3) float64
    ping_indptr: np.ndarray
    ping_key: np.ndarray
    taken_at: float = 0.0  # unix seconds when the city was read: rows after it are not here

    @classmethod
    def from_city(cls, city: CityData, *, taken_at: float) -> PersonRows:
        """From a city read at ``taken_at``; its ``user_ids`` must be sorted (``load_city`` sorts them)."""
        n = city.n_users
        visits = (city.event_kind == KIND_CODE["visit"]) & (city.event_venue >= 0)
        visit_indptr, visit_venue = _csr(
            city.event_user[visits], city.venue_ids[city.event_venue[visits]].astype(np.int64), n)
        join_indptr, join_activity = _csr(city.join_user, city.join_activity.astype(np.int64), n)
        weekday = np.floor(city.avail_start / 1440.0)
        slots = np.column_stack([weekday, city.avail_start - weekday * 1440, city.avail_end - weekday * 1440])
        avail_indptr, avail = _csr(city.avail_user, slots.astype(np.float64), n)
        keys = spot_keys(np.floor(city.ping_time / 86_400.0), city.ping_lon, city.ping_lat)
        ping_indptr, ping_key = _csr(city.ping_user, keys, n)
        return cls(visit_indptr, visit_venue, join_indptr, join_activity, avail_indptr, avail,
                   ping_indptr, ping_key, float(taken_at))

    def save(self, directory: Path) -> None:
        for f in fields(self):
            save_array(np.ascontiguousarray(getattr(self, f.name)), directory / f"{f.name}.npy")

    @classmethod
    def load(cls, directory: Path) -> PersonRows | None:
        """Memory-mapped, or None when the set was built without them."""
        paths = {f.name: directory / f"{f.name}.npy" for f in fields(cls)}
        if not all(path.is_file() for path in paths.values()):
            return None
        taken_at = float(np.load(paths.pop("taken_at"), allow_pickle=False).reshape(-1)[0])
        return cls(**{name: mapped(path) for name, path in paths.items()}, taken_at=taken_at)

    def visitors_per_venue(self, venue_ids: np.ndarray) -> np.ndarray:
        """Distinct visitors of each of ``venue_ids`` (sorted; every visited venue among them)."""
        return np.bincount(np.searchsorted(venue_ids, self.visit_venue), minlength=len(venue_ids)).astype(np.int64)

    def visits_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in ``rows``, venue id) of every venue the people at ``rows`` visited."""
        return gather(self.visit_indptr, self.visit_venue, rows)

    def joins_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return gather(self.join_indptr, self.join_activity, rows)

    def availability_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position, (k, 3) weekday, start and end minute of the day)."""
        return gather(self.avail_indptr, self.avail, rows)

    def pings_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position, packed (day, spot) key)."""
        return gather(self.ping_indptr, self.ping_key, rows)
