"""``CityData`` straight from an LBSN dataset directory, as ``import_lbsn`` would store it.

The offline evaluation reads datasets this way, in memory, with no database; a test checks that
it gives the same user features as ``import_lbsn`` followed by ``matching.feature_store``. The
two agree because they share the derivations in ``matching.lbsn`` (home locations, visit totals,
distinct check-ins, category shares) and the rules below, which mirror the import:

- a visit is one event per distinct (user, place), weighted by its summed count, at the pair's
  latest check-in (``UNDATED_VISIT_TIME`` when it has none);
- location history is one ping per distinct check-in at the place (one per visit, undated, when
  the dataset has no check-ins);
- a person's home is the robust centre of their visits; their profile interests are the leading
  interests of the places' categories (category ``c`` means ``INTERESTS[c % 20]``);
- friendships are accepted connections; everyone has an (otherwise empty) profile.

``splits`` picks the visit splits to use: the evaluation leaves out ``test`` so that held-out
visits inform nothing.
"""

from __future__ import annotations

import numpy as np

from matching.lbsn import (
    SPLITS,
    LbsnDataset,
    category_shares,
    home_locations,
    unique_check_ins,
    unique_friend_pairs,
    visit_totals,
)
from matching.ml.data import KIND_CODE, CityData
from matching.ml.features import INTERESTS

UNDATED_VISIT_TIME = 0.0  # the Unix epoch: plainly not a real time, older than any real event
MAX_INTERESTS = 5
MIN_INTEREST_SHARE = 0.10


def category_interest_labels(n_categories: int) -> np.ndarray:
    """The interest (index into INTERESTS) of each dataset category: ``c % 20``."""
    return np.arange(max(n_categories, 0), dtype=np.int64) % len(INTERESTS)


def leading_interests(shares: np.ndarray) -> np.ndarray:
    """Multi-hot (n, 20): interests with at least ``MIN_INTEREST_SHARE``, the top ``MAX_INTERESTS``.

    Largest share first, ties in taxonomy order.
    """
    order = np.argsort(-shares, axis=1, kind="stable")[:, :MAX_INTERESTS]
    top = np.take_along_axis(shares, order, axis=1)
    chosen = np.zeros(shares.shape, dtype=np.float32)
    rows = np.repeat(np.arange(len(shares)), order.shape[1])
    mask = (top >= MIN_INTEREST_SHARE).ravel()
    chosen[rows[mask], order.ravel()[mask]] = 1.0
    return chosen


def dataset_now(dataset: LbsnDataset) -> float:
    """The reference time of a dataset: its last check-in (the epoch without check-ins)."""
    return float(dataset.check_in_times.max()) if len(dataset.check_in_times) else UNDATED_VISIT_TIME


def city_from_lbsn(
    dataset: LbsnDataset,
    *,
    friend_pairs: np.ndarray | None = None,
    splits: tuple[str, ...] = SPLITS,
) -> CityData:
    """The dataset as ``CityData``; ``friend_pairs`` replaces its friendships (for hold-outs)."""
    n, m = dataset.n_users, dataset.n_places
    split_codes = [SPLITS.index(s) for s in splits]
    chosen = np.isin(dataset.visit_splits, split_codes)
    view = _with_visits(dataset, chosen)
    totals = visit_totals(view)
    pairs, weights = totals.pairs, totals.weights
    homes = home_locations(n, dataset.place_lonlat, pairs, weights)

    labels = category_interest_labels(dataset.n_categories)
    interests = np.zeros((n, len(INTERESTS)), dtype=np.float32)
    venue_interests = np.zeros((m, len(INTERESTS)), dtype=np.float32)
    if len(labels) and len(dataset.place_categories):
        interests = leading_interests(category_shares(view, pairs, weights, labels, len(INTERESTS)))
        place_categories = np.unique(dataset.place_categories, axis=0)
        np.add.at(venue_interests, (place_categories[:, 0], labels[place_categories[:, 1]]), 1.0)
        per_place = np.bincount(place_categories[:, 0], minlength=m).astype(np.float32)
        venue_interests /= np.maximum(per_place, 1.0)[:, None]

    if dataset.has_check_ins:
        ping_pairs, ping_times = unique_check_ins(view)
        # Only check-ins of the chosen visits count (the test split's check-ins stay hidden).
        visit_keys = pairs[:, 0] * m + pairs[:, 1]
        keep = np.isin(ping_pairs[:, 0] * m + ping_pairs[:, 1], visit_keys)
        ping_pairs, ping_times = ping_pairs[keep], ping_times[keep]
    else:
        ping_pairs, ping_times = pairs, np.full(len(pairs), UNDATED_VISIT_TIME)
    event_times = np.where(np.isnan(totals.last_check_in), UNDATED_VISIT_TIME, totals.last_check_in)

    friends = unique_friend_pairs(dataset) if friend_pairs is None else np.asarray(friend_pairs, dtype=np.int64)
    degree = np.bincount(friends.ravel(), minlength=n).astype(np.float64)

    data = CityData.blank(n, n_venues=m)
    data.lon, data.lat = homes[:, 0], homes[:, 1]
    data.has_profile[:] = True
    data.profile_interests = interests
    data.ping_user = ping_pairs[:, 0].astype(np.int64)
    data.ping_lon = dataset.place_lonlat[ping_pairs[:, 1], 0]
    data.ping_lat = dataset.place_lonlat[ping_pairs[:, 1], 1]
    data.ping_time = ping_times.astype(np.float64)
    data.event_user = pairs[:, 0].astype(np.int64)
    data.event_kind = np.full(len(pairs), KIND_CODE["visit"], dtype=np.int64)
    data.event_time = event_times.astype(np.float64)
    data.event_weight = weights.astype(np.float64)
    data.event_venue = pairs[:, 1].astype(np.int64)
    data.event_target = np.full(len(pairs), -1, dtype=np.int64)
    data.venue_lon = dataset.place_lonlat[:, 0].copy()
    data.venue_lat = dataset.place_lonlat[:, 1].copy()
    data.venue_interests = venue_interests
    data.friend_u, data.friend_v = friends[:, 0], friends[:, 1]
    data.requests_total = degree
    data.requests_accepted = degree.copy()
    data.validate()
    return data


def _with_visits(dataset: LbsnDataset, keep: np.ndarray) -> LbsnDataset:
    """The dataset with only the visit rows in ``keep`` (check-ins untouched)."""
    import dataclasses

    return dataclasses.replace(
        dataset,
        visits=dataset.visits[keep],
        visit_counts=dataset.visit_counts[keep],
        visit_splits=dataset.visit_splits[keep],
    )
