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
from users.models import LocationPing, Notification, Profile, User

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


def notification_create(*, user_id: int, kind: str, message: str, data: dict[str, object] | None = None) -> Notification:
    """One in-app notification; callers run it inside their own transaction."""
    notification = Notification(user_id=user_id, kind=kind, message=message, data=data or {})
    notification.full_clean()
    notification.save()
    return notification


def notifications_create(*, user_ids: Iterable[int], kind: str, message: str, data: dict[str, object] | None = None) -> int:
    """The same notification to many people in one INSERT (cancelling an activity tells everyone)."""
    rows = [Notification(user_id=uid, kind=kind, message=message, data=data or {}) for uid in user_ids]
    for row in rows[:1]:
        row.full_clean(exclude=["user"])
    return len(Notification.objects.bulk_create(rows))


def notifications_mark_read(*, actor: User, ids: Iterable[int] | None = None) -> int:
    """Mark the actor's notifications read (all of them when ``ids`` is None); others' are untouched."""
    queryset = Notification.objects.filter(user=actor, read_at__isnull=True)
    if ids is not None:
        queryset = queryset.filter(pk__in=list(ids))
    with transaction.atomic():
        return queryset.update(read_at=timezone.now())
