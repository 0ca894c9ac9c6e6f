"""Writes about people: curation by staff and the home location kept from location history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
from django.contrib.gis.geos import Point
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from users.geo import robust_centre
from users.models import LocationPing, Profile, User

# How much location history the home location is computed from.
HOME_HISTORY_DAYS = 90
HOME_HISTORY_MAX_PINGS = 500


def users_set_featured(*, users: QuerySet[User] | Iterable[User], featured: bool) -> int:
    return _set_flag(users, is_featured=featured)


def users_set_hidden(*, users: QuerySet[User] | Iterable[User], hidden: bool) -> int:
    """Hidden people keep their account but never appear in discovery or recommendations."""
    return _set_flag(users, is_hidden=hidden)


def users_set_suspended(*, users: QuerySet[User] | Iterable[User], suspended: bool) -> int:
    """Suspension also blocks login (``is_active``) and, like hiding, removes them from discovery.

    Staff accounts are never suspended this way, so an admin cannot lock every admin out.
    """
    ids = _ids(users)
    with transaction.atomic():
        return User.objects.filter(pk__in=ids, is_staff=False).update(
            is_suspended=suspended, is_active=not suspended
        )


def _ids(users: QuerySet[User] | Iterable[User]) -> list[int]:
    if isinstance(users, QuerySet):
        return list(users.values_list("pk", flat=True))
    return [user.pk for user in users]


def _set_flag(users: QuerySet[User] | Iterable[User], **flag: bool) -> int:
    with transaction.atomic():
        return User.objects.filter(pk__in=_ids(users)).update(**flag)


def profile_location_refresh(*, user_id: int, now: dt.datetime | None = None) -> Profile | None:
    """Set a person's current location to the robust centre of their recent location history.

    1. Read the newest pings of the last ``HOME_HISTORY_DAYS`` days (at most
       ``HOME_HISTORY_MAX_PINGS``); with none, leave the profile unchanged.
    2. Take their geometric median: one trip across town moves it far less than it moves a mean.
    3. Save it with the time of the newest ping, under a row lock so that two refreshes of the
       same person do not interleave.

    Returns the profile, or None when the person has no profile or no recent pings.
    """
    now = now or timezone.now()
    pings = list(
        LocationPing.objects.filter(user_id=user_id, recorded_at__gte=now - dt.timedelta(days=HOME_HISTORY_DAYS))
        .order_by("-recorded_at")
        .values_list("point", "recorded_at")[:HOME_HISTORY_MAX_PINGS]
    )
    if not pings:
        return None
    lonlat = np.array([(point.x, point.y) for point, _ in pings], dtype=np.float64)
    lon, lat = robust_centre(lonlat)
    with transaction.atomic():
        profile = Profile.objects.select_for_update().filter(user_id=user_id).first()
        if profile is None:
            return None
        profile.location = Point(lon, lat, srid=4326)
        profile.location_updated_at = pings[0][1]
        profile.full_clean()
        profile.save(update_fields=["location", "location_updated_at", "updated_at"])
    return profile
