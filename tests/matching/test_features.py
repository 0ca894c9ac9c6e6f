"""User features mean what their names say, on hand-made people (no database)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from matching.ml import geohash
from matching.ml.data import EVENT_KINDS, KIND_CODE, CityData
from matching.ml.features import SCHEMA, FeatureSchema, FeatureSchemaMismatch, user_features
from matching.ml.pairs import PAIR_NAMES, PairFeaturizer
from matching.models import Interaction

NOW = dt.datetime(2026, 6, 15, 12, tzinfo=dt.UTC).timestamp()
DAY = 86_400.0


def col(features: np.ndarray, name: str) -> np.ndarray:
    return features[:, SCHEMA.names.index(name)]


def add_events(data: CityData, user: int, kind: str, times: list[float], venue: int = -1) -> None:
    k = len(times)
    data.event_user = np.concatenate([data.event_user, np.full(k, user)])
    data.event_kind = np.concatenate([data.event_kind, np.full(k, KIND_CODE[kind])])
    data.event_time = np.concatenate([data.event_time, np.array(times, dtype=np.float64)])
    data.event_weight = np.concatenate([data.event_weight, np.ones(k)])
    data.event_venue = np.concatenate([data.event_venue, np.full(k, venue)])
    data.event_target = np.concatenate([data.event_target, np.full(k, -1)])


def add_pings(data: CityData, user: int, lonlat: list[tuple[float, float]], times: list[float]) -> None:
    data.ping_user = np.concatenate([data.ping_user, np.full(len(times), user)])
    data.ping_lon = np.concatenate([data.ping_lon, [p[0] for p in lonlat]])
    data.ping_lat = np.concatenate([data.ping_lat, [p[1] for p in lonlat]])
    data.ping_time = np.concatenate([data.ping_time, times])


def test_event_kinds_match_the_interaction_model() -> None:
    assert EVENT_KINDS == tuple(Interaction.Kind.values)


@pytest.mark.parametrize(
    ("lat", "lon", "expected"),
    [(57.64911, 10.40744, "u4pruydqqvj"), (39.92324, 116.3906, "wx4g0e"), (-33.8688, 151.2093, "r3gx2f")],
)
def test_geohash_encoding_matches_known_values(lat: float, lon: float, expected: str) -> None:
    assert geohash.encode(lat, lon, len(expected)) == expected


def test_geohash_decoding_uses_the_geohash_alphabet() -> None:
    # int("wx4g0e", 32) raises: "w" and "x" are not base-32 digits in Python's alphabet.
    with pytest.raises(ValueError):
        int("wx4g0e", 32)
    lat, lon = geohash.decode("wx4g0e")
    assert abs(lat - 39.92) < 0.01 and abs(lon - 116.39) < 0.01
    assert geohash.to_int("0") == 0 and geohash.to_int("z") == 31
    with pytest.raises(ValueError, match="not a geohash character"):
        geohash.to_int("wa")


def test_empty_profile_gets_finite_defaults_and_missing_indicators() -> None:
    features = user_features(CityData.blank(3), NOW)
    assert features.shape == (3, SCHEMA.dim) and features.dtype == np.float32
    assert np.isfinite(features).all()
    for indicator in ("has_location", "has_history", "has_events", "has_friends", "has_demographics"):
        assert (col(features, indicator) == 0).all()


def test_nan_and_out_of_range_inputs_never_reach_the_matrix() -> None:
    data = CityData.blank(2)
    data.birth_year[:] = [np.nan, 1e9]
    data.years_in_city[:] = [np.inf, -5]
    data.has_profile[:] = True
    features = user_features(data, NOW)
    assert np.isfinite(features).all()
    assert features.min() >= -1.0 and features.max() <= 1.0


def test_stay_at_home_is_more_stable_and_has_smaller_radius_than_traveller() -> None:
    data = CityData.blank(2)
    times = [NOW - d * DAY for d in range(1, 11)]
    add_pings(data, 0, [(-79.99 + 0.0005 * (i % 2), 40.44) for i in range(10)], times)
    add_pings(data, 1, [(-79.99 + 0.3 * i, 40.44 + 0.2 * (i % 3)) for i in range(10)], times)
    features = user_features(data, NOW)
    assert col(features, "stability")[0] > col(features, "stability")[1]
    assert col(features, "activity_radius")[0] < col(features, "activity_radius")[1]


def test_night_owls_night_share_is_their_highest() -> None:
    data = CityData.blank(2)
    midnight = NOW - (NOW % DAY)
    add_events(data, 0, "view", [midnight - 5 * DAY + h * 3600 for h in (1, 2, 3, 23)])
    add_events(data, 1, "view", [midnight - 5 * DAY + h * 3600 for h in (8, 9, 10, 14)])
    features = user_features(data, NOW)
    owl = {p: col(features, f"{p}_7d")[0] for p in ("morning", "afternoon", "evening", "night")}
    lark = {p: col(features, f"{p}_7d")[1] for p in ("morning", "afternoon", "evening", "night")}
    assert max(owl, key=owl.get) == "night" and owl["night"] == pytest.approx(0.75)
    assert max(lark, key=lark.get) == "morning"


def test_decay_makes_last_weeks_events_weigh_more_than_last_years() -> None:
    data = CityData.blank(2)
    add_events(data, 0, "view", [NOW - 6 * DAY] * 5)
    add_events(data, 1, "view", [NOW - 365 * DAY] * 5)
    features = user_features(data, NOW)
    assert col(features, "recent_decayed")[0] > 5 * col(features, "recent_decayed")[1]
    assert col(features, "events_7d")[0] > 0 and col(features, "events_7d")[1] == 0


def test_windows_diversity_and_sessions() -> None:
    data = CityData.blank(1)
    start = NOW - 2 * DAY
    add_events(data, 0, "view", [start, start + 600, start + 1200])  # one 20-minute session
    add_events(data, 0, "like", [start + 5 * 3600])  # a second session
    features = user_features(data, NOW)
    assert col(features, "diversity_7d")[0] == pytest.approx(2 / len(EVENT_KINDS))
    assert col(features, "events_1d")[0] == 0
    assert col(features, "sessions")[0] == pytest.approx(2 / 30 / 50)
    assert col(features, "usage_minutes")[0] == pytest.approx((20 + 1) / 30 / 1440)


def test_friend_count_density_and_clustering() -> None:
    data = CityData.blank(4)
    # 0-1, 0-2, 1-2 form a triangle; 0-3 hangs off it.
    data.friend_u = np.array([0, 0, 1, 0])
    data.friend_v = np.array([1, 2, 2, 3])
    data.requests_total[:] = [5, 2, 2, 1]
    data.requests_accepted[:] = [3, 2, 2, 1]
    features = user_features(data, NOW)
    assert col(features, "friends")[0] > col(features, "friends")[1] > 0
    assert col(features, "density")[0] == pytest.approx(0.6)
    assert col(features, "clustering")[0] == pytest.approx(1 / 3)
    assert col(features, "clustering")[1] == pytest.approx(1.0)
    assert col(features, "has_friends")[3] == 1


def test_preferences_blend_profile_and_visits() -> None:
    data = CityData.blank(2, n_venues=1)
    data.venue_interests[0, 4] = 1.0  # a bookshop: reading
    data.venue_place_type[0] = 12  # library
    data.profile_interests[0, 0] = 1.0  # says: sports
    add_events(data, 0, "visit", [NOW - DAY], venue=0)
    add_events(data, 1, "visit", [NOW - DAY], venue=0)
    features = user_features(data, NOW)
    assert col(features, "interest_sports")[0] == pytest.approx(0.5)
    assert col(features, "interest_reading")[0] == pytest.approx(0.5)
    assert col(features, "interest_reading")[1] == pytest.approx(1.0)
    assert col(features, "placepref_library")[1] == pytest.approx(1.0)
    assert col(features, "place_library")[1] == pytest.approx(1.0)


def test_schema_mismatch_is_a_clear_error() -> None:
    other = FeatureSchema(version="user-features-0", groups=SCHEMA.groups[:-1])
    SCHEMA.check_compatible(FeatureSchema.from_dict(SCHEMA.to_dict()))
    with pytest.raises(FeatureSchemaMismatch, match="does not match"):
        SCHEMA.check_compatible(other)


def test_pair_features_match_hand_computed_adamic_adar() -> None:
    # Friends: 0-2, 0-3, 1-2, 1-3, 3-4. Common friends of 0 and 1: 2 (degree 2) and 3 (degree 3).
    data = CityData.blank(5, n_venues=2)
    data.friend_u = np.array([0, 0, 1, 1, 3])
    data.friend_v = np.array([2, 3, 2, 3, 4])
    # Venues: 0 and 1 both visited venue 0 (visitors 0, 1, 2) and venue 1 (visitors 0, 1).
    for user, venue in ((0, 0), (1, 0), (2, 0), (0, 1), (1, 1)):
        add_events(data, user, "visit", [NOW - DAY], venue=venue)
    data.lon[:] = [-79.99, -79.98, -79.99, -79.99, -79.99]
    data.lat[:] = 40.44
    featurizer = PairFeaturizer(data, user_features(data, NOW))
    pairs = featurizer.pair_features(0, np.array([1, 4]))
    f = {name: pairs[:, i] for i, name in enumerate(PAIR_NAMES)}
    expected_friend_aa = 1 / np.log(2) + 1 / np.log(3)
    assert f["friend_adamic_adar"][0] == pytest.approx(expected_friend_aa / 10, rel=1e-5)
    assert f["mutual_friends"][0] == pytest.approx(np.log1p(2) / np.log1p(100), rel=1e-5)
    expected_venue_aa = 1 / np.log(3) + 1 / np.log(2)
    assert f["venue_adamic_adar"][0] == pytest.approx(expected_venue_aa / 10, rel=1e-5)
    # 4 shares friend 3 with 0 (degree 3) and no venue.
    assert f["friend_adamic_adar"][1] == pytest.approx(1 / np.log(3) / 10, rel=1e-5)
    assert f["venue_adamic_adar"][1] == 0
    assert f["distance_km"][0] == pytest.approx(0.846, abs=0.01)
    assert f["has_distance"].tolist() == [1, 1]


def test_availability_overlap() -> None:
    data = CityData.blank(3)
    data.avail_user = np.array([0, 1, 2])
    data.avail_start = np.array([5 * 1440 + 600, 5 * 1440 + 720, 0.0])  # Sat 10-14, Sat 12-16, Mon 0-1
    data.avail_end = np.array([5 * 1440 + 840, 5 * 1440 + 960, 60.0])
    featurizer = PairFeaturizer(data, user_features(data, NOW))
    overlap = featurizer.pair_features(0, np.array([1, 2]))[:, PAIR_NAMES.index("availability_overlap")]
    assert overlap[0] == pytest.approx(2 / 40) and overlap[1] == 0
