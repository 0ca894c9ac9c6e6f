"""Scenario helpers for activity tests: a Saturday-morning activity and people free (or not) for it."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.gis.geos import Point
from django.utils import timezone

from activities.models import Activity
from activities.services import activity_create
from tests.conftest import make_person
from users.factories import AvailabilityFactory
from users.models import User

# The activity happens here (a park); people live at offsets from it. 0.01 degrees of longitude
# is about 0.85 km at this latitude.
PARK_LON, PARK_LAT = -79.9959, 40.4406


def next_saturday(hour: int = 10) -> dt.datetime:
    """Next Saturday (at least a day ahead) at ``hour`` in the availability time zone."""
    zone = ZoneInfo(settings.AVAILABILITY_TIME_ZONE)
    now = timezone.now().astimezone(zone)
    days = (5 - now.weekday()) % 7 or 7
    return (now + dt.timedelta(days=days)).replace(hour=hour, minute=0, second=0, microsecond=0)


def new_activity(organiser: User, *, publish: bool = True, **fields: object) -> Activity:
    starts = next_saturday()
    values: dict[str, object] = {
        "title": "Badminton doubles", "category": "sports", "subtype": "fitness", "skill_level": 3,
        "location": Point(PARK_LON, PARK_LAT, srid=4326), "starts_at": starts,
        "ends_at": starts + dt.timedelta(hours=2), "capacity": 10, "recruit_radius_km": 10.0,
    }
    values.update(fields)
    return activity_create(actor=organiser, publish=publish, **values)  # type: ignore[arg-type]


def free_on_saturday_morning(user: User) -> User:
    AvailabilityFactory(user=user, weekday=5, start_time="09:00", end_time="13:00")
    return user


def person(name: str, dlon: float = 0.0, *, free: bool = True, **profile: object) -> User:
    """Someone living ``dlon`` degrees east of the park, free on Saturday morning by default."""
    profile.setdefault("interests", ["sports"])
    user = make_person(name, PARK_LON + dlon, PARK_LAT, **profile)
    return free_on_saturday_morning(user) if free else user


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"not true within {timeout} s")
