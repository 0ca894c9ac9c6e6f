"""A person's current location follows the robust centre of their recent location history."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from django.contrib.gis.geos import Point
from django.utils import timezone

from users.geo import haversine_m, robust_centre
from users.models import LocationPing, Profile, User
from users.services import profile_location_refresh
from users.tasks import profile_location_refresh_task

HOME = (-79.9959, 40.4406)


def ping(user: User, lon: float, lat: float, days_ago: float) -> None:
    LocationPing.objects.create(
        user=user, point=Point(lon, lat, srid=4326), recorded_at=timezone.now() - dt.timedelta(days=days_ago)
    )


def pings_around_home_and_one_trip(user: User) -> None:
    for i in range(9):
        ping(user, HOME[0] + 0.0005 * (i % 3 - 1), HOME[1] + 0.0005 * (i // 3 - 1), days_ago=i + 1)
    ping(user, -73.98, 40.75, days_ago=0.5)  # one trip to New York


def test_robust_centre_ignores_a_far_outlier() -> None:
    rng = np.random.default_rng(0)
    cluster = np.column_stack([HOME[0] + rng.normal(0, 0.001, 20), HOME[1] + rng.normal(0, 0.001, 20)])
    points = np.vstack([cluster, [[-73.98, 40.75]]])
    lon, lat = robust_centre(points)
    mean_lon, mean_lat = points.mean(axis=0)
    assert haversine_m(lon, lat, *HOME) < 300
    assert haversine_m(mean_lon, mean_lat, *HOME) > 10_000


def test_robust_centre_honours_weights() -> None:
    points = np.array([[0.0, 0.0], [0.01, 0.0]])
    lon, _ = robust_centre(points, np.array([10.0, 1.0]))
    assert lon < 0.001


@pytest.mark.django_db
def test_refresh_moves_location_to_history_centre(alice: User) -> None:
    pings_around_home_and_one_trip(alice)
    profile = profile_location_refresh(user_id=alice.pk)
    assert profile is not None
    assert haversine_m(profile.location.x, profile.location.y, *HOME) < 100


@pytest.mark.django_db
def test_refresh_without_recent_history_changes_nothing(alice: User) -> None:
    ping(alice, 2.35, 48.85, days_ago=400)
    before = Profile.objects.get(user=alice).location
    assert profile_location_refresh(user_id=alice.pk) is None
    assert Profile.objects.get(user=alice).location == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_refresh_task_runs_through_a_real_worker(celery_worker_process: object, alice: User) -> None:
    Profile.objects.filter(user=alice).update(location=Point(2.35, 48.85, srid=4326))
    pings_around_home_and_one_trip(alice)
    result = profile_location_refresh_task.delay(alice.pk).get(timeout=30)
    assert result == {"user_id": alice.pk, "updated": True}
    location = Profile.objects.get(user=alice).location
    assert haversine_m(location.x, location.y, *HOME) < 100
