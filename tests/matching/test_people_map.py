"""matching.people_map: the in-memory first stage of people nearby agrees with a plain scan of the
database, follows changes through its change log, and a stale map never shows someone who may
not be shown."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
from django.contrib.gis.geos import Point
from django.db import connection

from matching import people_map as people_map_module
from matching.grid import snapped_distance_m
from matching.people_map import PeopleMap, _redis, _stream_key, people_map
from matching.services.nearby import nearby_matches
from tests.conftest import make_person
from users.factories import ConnectionFactory
from users.models import Connection, Profile, User
from users.services import users_set_hidden, users_set_suspended

LON, LAT = -79.9959, 40.4406


def _scan(me: int, lon: float, lat: float, radius_m: float, cap: int, excluded: set[int]) -> list[int]:
    """The answer the map must give, the slow way: every eligible person from the database."""
    people = [
        (p.user_id, p.location.x, p.location.y)
        for p in Profile.objects.select_related("user").filter(location__isnull=False, discoverable=True)
        if p.user.is_active and not p.user.is_hidden and not p.user.is_suspended
        and p.user_id != me and p.user_id not in excluded
    ]
    ids = np.array([p[0] for p in people])
    metres = snapped_distance_m(np.array([p[1] for p in people]), np.array([p[2] for p in people]), lon, lat, 100.0)
    order = np.lexsort((ids, metres))
    return [int(ids[i]) for i in order if metres[i] <= radius_m][:cap]


def _many(count: int, lon: float, lat: float, spread: float, seed: int) -> list[User]:
    rng = np.random.default_rng(seed)
    dx = rng.normal(0, spread, count) * rng.choice([0.05, 1.0], count)  # a dense core and a sprawl
    dy = rng.normal(0, spread * 0.75, count) * rng.choice([0.05, 1.0], count)
    return [make_person(f"p{seed}-{i}", lon + float(dx[i]), lat + float(dy[i])) for i in range(count)]


@pytest.mark.django_db
def test_nearest_agrees_with_a_plain_scan_at_every_radius_and_cap() -> None:
    people = _many(300, LON, LAT, 0.05, seed=1)
    people[5].is_hidden = True
    people[5].save()
    me = people[0].pk
    excluded = {people[1].pk, people[2].pk}
    rng = np.random.default_rng(2)
    for _ in range(25):
        lon, lat = LON + rng.normal(0, 0.03), LAT + rng.normal(0, 0.03)
        radius_m, cap = float(rng.choice([300, 1_000, 5_000, 50_000])), int(rng.choice([1, 7, 40, 500]))
        found = people_map.nearest(lon=lon, lat=lat, radius_m=radius_m, cap=cap, grid_m=100.0,
                                   excluded=np.array([me, *excluded]))
        assert found.ids.tolist() == _scan(me, lon, lat, radius_m, cap, excluded), (lon, lat, radius_m, cap)
        assert np.all(np.diff(found.distance_m) >= 0)


@pytest.mark.django_db
def test_nearest_reaches_round_the_antimeridian() -> None:
    east = make_person("east", 179.999, 10.0)
    west = make_person("west", -179.998, 10.0)
    found = people_map.nearest(lon=179.9995, lat=10.0, radius_m=2_000, cap=10, grid_m=100.0)
    assert set(found.ids.tolist()) == {east.pk, west.pk}


@pytest.mark.django_db
def test_saved_changes_are_seen_at_once_and_bulk_staff_changes_too() -> None:
    me = make_person("me", LON, LAT)
    other = make_person("other", LON + 0.005, LAT)
    assert people_map.nearest(lon=LON, lat=LAT, radius_m=1_000, cap=10, grid_m=100.0).ids.tolist() == [me.pk, other.pk]
    profile = other.profile
    profile.location = Point(LON + 0.05, LAT, srid=4326)  # about 4 km east
    profile.save()
    assert people_map.nearest(lon=LON, lat=LAT, radius_m=1_000, cap=10, grid_m=100.0).ids.tolist() == [me.pk]
    newcomer = make_person("newcomer", LON - 0.002, LAT)
    assert people_map.nearest(lon=LON, lat=LAT, radius_m=1_000, cap=10, grid_m=100.0).ids.tolist() == [me.pk, newcomer.pk]
    users_set_suspended(users=[newcomer], suspended=True)  # a bulk update: no model signal
    users_set_hidden(users=[me], hidden=True)
    assert people_map.nearest(lon=LON, lat=LAT, radius_m=1_000, cap=10, grid_m=100.0).ids.tolist() == []
    users_set_suspended(users=[newcomer], suspended=False)
    assert people_map.nearest(lon=LON, lat=LAT, radius_m=1_000, cap=10, grid_m=100.0).ids.tolist() == [newcomer.pk]
    newcomer.delete()
    assert people_map.nearest(lon=LON, lat=LAT, radius_m=1_000, cap=10, grid_m=100.0).ids.tolist() == []


@pytest.mark.django_db
def test_overlay_is_merged_into_the_base_when_it_grows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(people_map_module, "OVERLAY_MAX", 3)
    people = _many(20, LON, LAT, 0.01, seed=3)
    people_map.current()
    for i, person in enumerate(people[:5]):
        profile = person.profile
        profile.location = Point(LON + 0.0001 * i, LAT, srid=4326)
        profile.save()
    state = people_map.current()
    assert len(state.overlay) <= 3 and len(people_map) == 20
    found = people_map.nearest(lon=LON, lat=LAT, radius_m=50_000, cap=20, grid_m=100.0)
    assert found.ids.tolist() == _scan(-1, LON, LAT, 50_000, 20, set())


@pytest.mark.django_db
def test_a_stale_map_never_shows_someone_who_may_not_be_shown(alice: User) -> None:
    """Writes that bypass the change log (raw SQL) are not in the map until it reloads, but the
    people an answer shows are checked once more, and the next in line takes the place."""
    near = [make_person(f"n{i}", LON + 0.001 * (i + 1), LAT) for i in range(4)]
    people_map.current()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE users_user SET is_suspended = true WHERE id = %s", [near[0].pk])
        cursor.execute("UPDATE users_profile SET discoverable = false WHERE user_id = %s", [near[1].pk])
    assert near[0].pk in people_map.nearest(lon=LON, lat=LAT, radius_m=5_000, cap=10, grid_m=100.0).ids
    shown = [m.user_id for m in nearby_matches(user=alice, lon=LON, lat=LAT, limit=2).matches]
    assert shown == [near[2].pk, near[3].pk]


@pytest.mark.django_db(transaction=True)
def test_a_change_committed_by_another_process_is_taken_in(alice: User) -> None:
    other = make_person("other", LON + 0.003, LAT)
    assert other.pk in people_map.nearest(lon=LON, lat=LAT, radius_m=1_000, cap=10, grid_m=100.0).ids

    def elsewhere() -> None:  # another connection, as another web process or worker would write
        profile = Profile.objects.get(user=other)
        profile.location = Point(LON + 0.5, LAT, srid=4326)
        profile.save()
        connection.close()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert other.pk not in people_map.nearest(lon=LON, lat=LAT, radius_m=1_000, cap=10, grid_m=100.0).ids


@pytest.mark.django_db(transaction=True)
def test_a_process_the_change_log_left_behind_reloads(alice: User) -> None:
    mine = PeopleMap()
    first = make_person("first", LON + 0.003, LAT)
    assert first.pk in mine.nearest(lon=LON, lat=LAT, radius_m=1_000, cap=10, grid_m=100.0).ids
    second = make_person("second", LON - 0.003, LAT)
    _redis().xtrim(_stream_key(), maxlen=0)  # as if far more changes had come than the log keeps
    mine.current()  # notices, and reloads in the background
    for _ in range(100):
        if second.pk in mine.nearest(lon=LON, lat=LAT, radius_m=1_000, cap=10, grid_m=100.0).ids:
            break
        threading.Event().wait(0.05)
    assert second.pk in mine.nearest(lon=LON, lat=LAT, radius_m=1_000, cap=10, grid_m=100.0).ids


def _friends_in_database(user_ids: list[int]) -> list[tuple[int, int]]:
    rows = Connection.objects.filter(status="accepted").values_list("from_user_id", "to_user_id")
    both = [(a, b) for a, b in rows] + [(b, a) for a, b in rows]
    return sorted((a, b) for a, b in both if a in user_ids)


def _friends_in_map(user_ids: list[int]) -> list[tuple[int, int]]:
    users, friends = people_map.friendships(np.array(user_ids))
    return sorted(zip(users.tolist(), friends.tolist(), strict=True))


@pytest.mark.django_db
def test_friendships_follow_connections_made_accepted_and_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    people = _many(12, LON, LAT, 0.01, seed=4)
    ids = [p.pk for p in people]
    for a, b in [(0, 1), (1, 2), (2, 0), (3, 4), (5, 0)]:
        ConnectionFactory(from_user=people[a], to_user=people[b])
    pending = ConnectionFactory(from_user=people[6], to_user=people[0], status="pending")
    assert _friends_in_map(ids) == _friends_in_database(ids)
    pending.status = "accepted"  # accepted after the map was loaded
    pending.save()
    Connection.objects.get(from_user=people[3], to_user=people[4]).delete()
    ConnectionFactory(from_user=people[7], to_user=people[8])
    assert _friends_in_map(ids) == _friends_in_database(ids)
    assert _friends_in_map([ids[0]]) == [(ids[0], ids[b]) for b in sorted([1, 2, 5, 6], key=lambda i: ids[i])]
    # The changed lists merge into the adjacency lists once there are enough of them.
    monkeypatch.setattr(people_map_module, "OVERLAY_MAX", 2)
    ConnectionFactory(from_user=people[9], to_user=people[10])
    assert not people_map.current().friends_overlay
    assert _friends_in_map(ids) == _friends_in_database(ids)
    assert _friends_in_map([10**9]) == []  # nobody's


@pytest.mark.django_db
def test_gunicorn_workers_load_the_map_before_their_first_request(alice: User) -> None:
    from socialmatch.gunicorn import post_worker_init

    assert people_map._state is None
    try:
        post_worker_init(worker=None)
        # What the worker holds from then on is out of the collector's full passes.
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # this test process goes on collecting as before
    assert alice.pk in people_map.current().base.ids


@pytest.mark.django_db(transaction=True)
def test_a_bulk_load_asks_every_process_to_load_its_map_again(alice: User) -> None:
    from matching.citygen import CityConfig, city_generate
    from matching.citygen_db import city_write

    mine = PeopleMap()
    before = len(mine)
    city_write(city_generate(CityConfig(users=30, seed=3)), prefix="bulk")  # COPY: no model signals
    for _ in range(100):
        if len(mine) > before:
            break
        threading.Event().wait(0.05)
    assert len(mine) == Profile.objects.filter(location__isnull=False, discoverable=True).count()


@pytest.mark.django_db
def test_without_redis_the_map_keeps_serving_what_it_has(
    alice: User, settings: object, caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis down (here: a port nobody listens on) costs freshness, never an answer."""
    people_map.current()
    settings.CACHES = {**settings.CACHES, "default": {  # type: ignore[attr-defined]
        **settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}  # type: ignore[attr-defined]
    people_map._changes_read = 0.0  # read the (unreachable) change log now
    found = people_map.nearest(lon=-79.9959, lat=40.4406, radius_m=1_000, cap=10, grid_m=100.0)
    assert alice.pk in found.ids
    assert "cannot read the change log" in caplog.text
    people_map._changes_read = 0.0
    caplog.clear()
    people_map.current()
    assert "cannot read the change log" not in caplog.text  # logged once a minute, not at every read
