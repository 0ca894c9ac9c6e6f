"""GET /api/v1/matches/nearby/: ranking, exclusions, privacy and bad input."""

from __future__ import annotations

import json
import math
import time

import pytest
from django.contrib.gis.geos import Point
from django.core.cache import cache
from django.test import Client

from matching.models import Interaction
from matching.services.impressions import impressions_flush
from matching.services.nearby import (
    MOVING_TOO_FAST,
    QueryPointMoving,
    distance_bucket,
    query_point_check,
)
from matching.serving import SERVING_SET_KEY, store
from tests.conftest import client_for, make_person
from users.factories import BlockFactory, ConnectionFactory
from users.models import Profile, User

pytestmark = pytest.mark.django_db
URL = "/api/v1/matches/nearby/"

# Alice lives at the origin of these offsets; 0.01 degrees of longitude is about 0.85 km here.
LON, LAT = -79.9959, 40.4406


@pytest.fixture(autouse=True)
def no_published_model() -> None:
    cache.delete(SERVING_SET_KEY)
    cache.clear()  # throttle counters
    store.reset()


@pytest.fixture
def me() -> User:
    return make_person("me", LON, LAT, interests=["sports", "music", "reading"], birth_year=1990)


def test_like_minded_neighbour_outranks_the_stranger_next_door(me: User) -> None:
    stranger = make_person("stranger", LON + 0.0025, LAT, interests=["gaming"], birth_year=1950)
    kindred = make_person("kindred", LON + 0.018, LAT, interests=["sports", "music", "reading"], birth_year=1990)
    body = client_for(me).get(URL, {"radius_km": 5}).json()
    assert body["ranker"] == "rules"
    order = [r["user_id"] for r in body["results"]]
    assert order == [kindred.pk, stranger.pk]
    first = body["results"][0]
    assert first["distance"] == "1-2 km"
    assert first["reasons"]["shared_interests"] == ["music", "reading", "sports"]
    assert body["results"][1]["distance"] == "< 1 km"


def test_excludes_self_blocked_hidden_suspended_undiscoverable_and_connected(me: User) -> None:
    visible = make_person("visible", LON + 0.001, LAT)
    for name in ("blocked", "blocker", "hidden", "suspended", "private", "friend", "asked"):
        make_person(name, LON + 0.002, LAT)
    users = {u.username: u for u in User.objects.all()}
    BlockFactory(blocker=me, blocked=users["blocked"])
    BlockFactory(blocker=users["blocker"], blocked=me)
    User.objects.filter(username="hidden").update(is_hidden=True)
    User.objects.filter(username="suspended").update(is_suspended=True)
    Profile.objects.filter(user__username="private").update(discoverable=False)
    ConnectionFactory(from_user=me, to_user=users["friend"])
    ConnectionFactory(from_user=users["asked"], to_user=me, status="pending")
    results = client_for(me).get(URL).json()["results"]
    assert [r["user_id"] for r in results] == [visible.pk]
    with_connected = client_for(me).get(URL, {"include_connected": "true"}).json()["results"]
    assert {r["user_id"] for r in with_connected} == {visible.pk, users["friend"].pk, users["asked"].pk}


def test_no_coordinates_of_other_people_anywhere_in_the_response(me: User) -> None:
    other = make_person("other", -79.98765, 40.45678, interests=["sports"])
    ConnectionFactory(from_user=other, to_user=make_person("common", LON, LAT + 0.03))
    text = client_for(me).get(URL, {"radius_km": 10, "include_connected": "true"}).content.decode()
    body = json.loads(text)
    assert body["results"]
    for needle in ("79.98765", "40.45678", "79.987", "40.456", "lat", "lon", "location", "coordinates", "distance_m"):
        assert needle not in text


def _move(user: User, lon: float) -> None:
    profile = Profile.objects.get(user=user)
    profile.location = Point(lon, LAT, srid=4326)
    profile.save()  # as the app saves a new location (people nearby follow saves)


def test_moving_within_a_grid_cell_changes_neither_distance_nor_score() -> None:
    """Scores come from positions snapped to the 100 m grid: a 40 m move inside a cell is invisible."""
    me = make_person("me", LON, LAT)
    radius = 6378137.0
    cell = 100.0 / math.cos(math.radians(LAT))  # web-mercator units of the grid at this latitude
    # ST_SnapToGrid rounds to the nearest grid point: a cell is centred on a multiple of its size.
    k = round((LON + 0.02) * math.pi / 180 * radius / cell)
    centre_lon = k * cell / radius * 180 / math.pi
    other = make_person("other", centre_lon - 0.00024, LAT)  # ~20 m west of the cell centre
    first = client_for(me).get(URL).json()["results"][0]
    _move(other, centre_lon + 0.00024)  # ~20 m east
    second = client_for(me).get(URL).json()["results"][0]
    assert first["score"] == second["score"] and first["distance"] == second["distance"]
    _move(other, centre_lon + 0.01)  # ~850 m east
    third = client_for(me).get(URL).json()["results"][0]
    assert third["score"] < first["score"]


def test_impressions_are_logged_with_positions(me: User) -> None:
    a = make_person("a", LON + 0.001, LAT)
    b = make_person("b", LON + 0.004, LAT)
    client_for(me).get(URL)
    assert impressions_flush() == 2  # buffered in Redis, written in batches
    logged = list(Interaction.objects.filter(actor=me, kind="impression").order_by("position").values_list("target_user_id", "position", "surface"))
    assert logged == [(a.pk, 0, "nearby"), (b.pk, 1, "nearby")]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"lat": "95", "lon": "0"}, "lat"),
        ({"lat": "10", "lon": "-181"}, "lon"),
        ({"radius_km": "500"}, "radius_km"),
        ({"limit": "1000"}, "limit"),
        ({"radius_km": "near"}, "radius_km"),
        ({"lat": "40.4"}, "lat"),
    ],
)
def test_bad_input_is_a_400_with_field_errors(me: User, params: dict[str, str], field: str) -> None:
    response = client_for(me).get(URL, params)
    assert response.status_code == 400
    assert field in response.json()
    assert not Interaction.objects.exists()


def test_without_a_location_the_user_is_told_to_set_one() -> None:
    user = User.objects.create(username="nowhere")
    Profile.objects.create(user=user, display_name="Nowhere")
    response = client_for(user).get(URL)
    assert response.status_code == 400
    assert "Set your location" in response.json()["detail"]


def test_anonymous_requests_are_refused() -> None:
    assert Client().get(URL).status_code in (401, 403)


@pytest.mark.parametrize(("km", "bucket"), [(0.2, "< 1 km"), (1.0, "1-2 km"), (4.9, "2-5 km"), (75.0, "> 50 km")])
def test_distance_buckets(km: float, bucket: str) -> None:
    assert distance_bucket(km) == bucket


# -- query points that move too fast -----------------------------------------------------------


def test_a_far_jump_of_the_query_point_within_seconds_is_a_429(me: User) -> None:
    client = client_for(me)
    assert client.get(URL, {"lat": LAT, "lon": LON}).status_code == 200
    far = client.get(URL, {"lat": LAT + 0.5, "lon": LON})  # about 56 km north
    assert far.status_code == 429
    detail = far.json()["detail"]
    assert detail.startswith(MOVING_TOO_FAST.split("{km")[0]) and "moved 56 km in 0 s" in detail
    assert 1 <= int(far["Retry-After"]) <= 60
    # The refused point was not recorded: the real one is still the reference.
    assert client.get(URL, {"lat": LAT, "lon": LON}).status_code == 200


def test_walking_around_town_is_not_limited(me: User) -> None:
    client = client_for(me)
    for step in range(6):  # 6 requests, 300 m apart: 2 cells of 1 km
        assert client.get(URL, {"lat": LAT + 0.0027 * step, "lon": LON}).status_code == 200


def test_too_many_places_within_a_minute_is_a_429(me: User, settings: object) -> None:
    settings.NEARBY_MOVE_MAX_CELLS = 3  # type: ignore[attr-defined]
    client = client_for(me)
    for step in range(3):  # 3 cells, 2 km apart: within the jump limit
        assert client.get(URL, {"lat": LAT + 0.018 * step, "lon": LON}).status_code == 200
    fourth = client.get(URL, {"lat": LAT + 0.054, "lon": LON})
    assert fourth.status_code == 429
    assert fourth.json()["detail"].startswith("You searched from 4 different places within 60 s.")
    # A place already seen within the window is not a new one.
    assert client.get(URL, {"lat": LAT + 0.018, "lon": LON}).status_code == 200


def test_the_limit_lifts_when_the_window_has_passed(me: User) -> None:
    now = time.time()
    query_point_check(user_id=me.pk, lon=LON, lat=LAT, now=now)
    with pytest.raises(QueryPointMoving):
        query_point_check(user_id=me.pk, lon=LON + 1.0, lat=LAT, now=now + 5)
    query_point_check(user_id=me.pk, lon=LON + 1.0, lat=LAT, now=now + 61)


def test_the_profile_location_counts_as_the_query_point(me: User) -> None:
    client = client_for(me)
    assert client.get(URL).status_code == 200
    far_east = Point(LON + 1.0, LAT, srid=4326)  # about 85 km east
    Profile.objects.filter(user=me).update(location=far_east)
    assert client.get(URL).status_code == 429


def test_the_body_built_directly_is_what_the_documented_serializer_gives() -> None:
    from matching.apis import NearbyResponseSerializer, nearby_body
    from matching.services.nearby import Match, NearbyResult

    result = NearbyResult(ranker="model", model_version="v3", matches=[
        Match(user_id=7, display_name="Ann", distance_bucket="1-2 km", similarity=0.25, score=0.5,
              shared_interests=["music"], mutual_friends=2),
        Match(user_id=9, display_name="Bo", distance_bucket="< 1 km", similarity=1, score=0),
    ])
    assert nearby_body(result) == NearbyResponseSerializer(result).data
    empty = NearbyResult(ranker="rules", model_version="", matches=[])
    assert nearby_body(empty) == NearbyResponseSerializer(empty).data
