"""Writes about people: curation by staff, profiles, availability, connections and blocks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
from django.contrib.gis.geos import Point
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from users.geo import robust_centre
from users.models import Availability, Block, Connection, LocationPing, Notification, Profile, User
from users.selectors import display_name
from users.signals import discovery_changed

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
        changed = User.objects.filter(pk__in=ids, is_staff=False).update(
            is_suspended=suspended, is_active=not suspended
        )
        discovery_changed.send(sender=User, user_ids=ids)
        return changed


def _ids(users: QuerySet[User] | Iterable[User]) -> list[int]:
    if isinstance(users, QuerySet):
        return list(users.values_list("pk", flat=True))
    return [user.pk for user in users]


def _set_flag(users: QuerySet[User] | Iterable[User], **flag: bool) -> int:
    ids = _ids(users)
    with transaction.atomic():
        changed = User.objects.filter(pk__in=ids).update(**flag)
        discovery_changed.send(sender=User, user_ids=ids)
        return changed


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


# --- Profiles and availability --------------------------------------------------------------


class UserActionError(ValueError):
    """A request about people that cannot be done; the message is shown to the person as is."""


CONNECT_SELF = "You cannot connect with yourself."
CONNECT_UNAVAILABLE = "This person cannot be connected with."
CONNECT_ALREADY = "You are already connected."
CONNECT_PENDING = "Your request is already waiting for an answer."
CONNECT_DECLINED = "This person has declined your request."
CONNECTION_NOT_YOURS = "Only the person who received this request can answer it."
CONNECTION_ANSWERED = "This request has already been answered."
BLOCK_SELF = "You cannot block yourself."
REQUEST_MESSAGE = "{name} would like to connect with you."
ACCEPTED_MESSAGE = "{name} accepted your request: you are connected."
AVAILABILITY_OVERLAP = "Slots on {day} overlap ({first} and {second})."
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def profile_update(*, user: User, location: tuple[float, float] | None = None, **fields: object) -> Profile:
    """Create or change a person's own profile; ``location`` is (lon, lat) set by hand or the browser.

    Validation (model validators, taxonomy, coordinate ranges) runs before anything is written.
    """
    with transaction.atomic():
        profile = Profile.objects.select_for_update().filter(user=user).first()
        if profile is None:
            profile = Profile(user=user, display_name=user.get_username())
        for name, value in fields.items():
            if name not in PROFILE_EDITABLE:
                raise TypeError(f"profile field {name!r} is not editable by its owner")
            setattr(profile, name, value)
        moved = False
        if location is not None:
            lon, lat = location
            point = Point(lon, lat, srid=4326)
            moved = profile.location is None or (profile.location.x, profile.location.y) != (point.x, point.y)
            if moved:  # saving the profile with the same point is not a new observation
                profile.location = point
                profile.location_updated_at = timezone.now()
        profile.full_clean()
        profile.save()
        if moved:
            LocationPing.objects.create(user=user, point=profile.location, recorded_at=profile.location_updated_at,
                                        source=LocationPing.Source.MANUAL)
    return profile


# What a person may change about themselves (curation flags and timestamps are not theirs).
PROFILE_EDITABLE = frozenset({
    "display_name", "bio", "birth_year", "gender", "education", "income_band", "occupation",
    "marital_status", "city_tier", "years_in_city", "languages", "interests", "activity_types",
    "place_types", "time_preferences", "discoverable",
})


def availability_replace(*, user: User, slots: Iterable[tuple[int, dt.time, dt.time]]) -> list[Availability]:
    """Replace a person's weekly availability with ``slots`` (weekday, start, end), all or nothing."""
    rows = sorted((Availability(user=user, weekday=d, start_time=s, end_time=e) for d, s, e in slots),
                  key=lambda a: (a.weekday, a.start_time))
    for row in rows:
        row.full_clean(exclude=["user"], validate_unique=False, validate_constraints=False)
        if row.end_time <= row.start_time:
            raise UserActionError(f"A slot on {WEEKDAYS[row.weekday]} ends before it starts.")
    for first, second in zip(rows, rows[1:], strict=False):
        if first.weekday == second.weekday and second.start_time < first.end_time:
            raise UserActionError(AVAILABILITY_OVERLAP.format(
                day=WEEKDAYS[first.weekday],
                first=f"{first.start_time:%H:%M}-{first.end_time:%H:%M}",
                second=f"{second.start_time:%H:%M}-{second.end_time:%H:%M}",
            ))
    with transaction.atomic():
        Availability.objects.filter(user=user).delete()
        return Availability.objects.bulk_create(rows)


# --- Connections and blocks -----------------------------------------------------------------

def _blocked_either_way(a: int, b: int) -> bool:
    return Block.objects.filter(Q(blocker_id=a, blocked_id=b) | Q(blocker_id=b, blocked_id=a)).exists()


def connection_request(*, actor: User, to_user_id: int) -> Connection:
    """Ask to connect. A request the other person already sent is accepted instead (both want it).

    Hidden, suspended, blocked (either way) and unknown people answer the same message, so a request
    reveals nothing about them.
    """
    if actor.pk == to_user_id:
        raise UserActionError(CONNECT_SELF)
    with transaction.atomic():
        target = User.objects.filter(pk=to_user_id, is_active=True, is_hidden=False, is_suspended=False).first()
        if target is None or _blocked_either_way(actor.pk, to_user_id):
            raise UserActionError(CONNECT_UNAVAILABLE)
        existing = (
            Connection.objects.select_for_update()
            .filter(Q(from_user=actor, to_user=target) | Q(from_user=target, to_user=actor))
            .first()
        )
        if existing is None:
            connection = Connection(from_user=actor, to_user=target)
            connection.full_clean(validate_constraints=False)
            try:
                with transaction.atomic():
                    connection.save()
            except IntegrityError:  # the other person asked at the same moment: answer as a re-ask
                return connection_request(actor=actor, to_user_id=to_user_id)
            notification_create(user_id=target.pk, kind=Notification.Kind.CONNECTION_REQUEST,
                                message=REQUEST_MESSAGE.format(name=display_name(actor.pk)), data={"user_id": actor.pk})
            return connection
        if existing.status == Connection.Status.ACCEPTED:
            raise UserActionError(CONNECT_ALREADY)
        if existing.from_user_id == actor.pk:
            raise UserActionError(CONNECT_PENDING if existing.status == Connection.Status.PENDING else CONNECT_DECLINED)
        # They asked me before: pending means yes now; declined by me means I changed my mind.
        existing.status = Connection.Status.ACCEPTED
        existing.responded_at = timezone.now()
        existing.save(update_fields=["status", "responded_at"])
        _tell_accepted(existing)
        return existing


def connection_respond(*, actor: User, connection_id: int, accept: bool) -> Connection:
    """The receiver of a pending request accepts or declines it."""
    with transaction.atomic():
        connection = Connection.objects.select_for_update().filter(pk=connection_id).first()
        if connection is None or connection.to_user_id != actor.pk:
            raise UserActionError(CONNECTION_NOT_YOURS)
        if connection.status != Connection.Status.PENDING:
            raise UserActionError(CONNECTION_ANSWERED)
        connection.status = Connection.Status.ACCEPTED if accept else Connection.Status.DECLINED
        connection.responded_at = timezone.now()
        connection.save(update_fields=["status", "responded_at"])
        if accept:  # a decline is not announced: the asker's request just stays unanswered to them
            _tell_accepted(connection)
    return connection


def _tell_accepted(connection: Connection) -> None:
    notification_create(user_id=connection.from_user_id, kind=Notification.Kind.CONNECTION_ACCEPTED,
                        message=ACCEPTED_MESSAGE.format(name=display_name(connection.to_user_id)),
                        data={"user_id": connection.to_user_id})


def user_block(*, actor: User, blocked_id: int) -> Block:
    """Block someone: any connection or request between the two goes, and neither sees the other."""
    if actor.pk == blocked_id:
        raise UserActionError(BLOCK_SELF)
    with transaction.atomic():
        if not User.objects.filter(pk=blocked_id).exists():
            raise UserActionError(CONNECT_UNAVAILABLE)
        Connection.objects.filter(
            Q(from_user=actor, to_user_id=blocked_id) | Q(from_user_id=blocked_id, to_user=actor)
        ).delete()
        block, _ = Block.objects.get_or_create(blocker=actor, blocked_id=blocked_id)
    return block


def user_unblock(*, actor: User, blocked_id: int) -> bool:
    with transaction.atomic():
        deleted, _ = Block.objects.filter(blocker=actor, blocked_id=blocked_id).delete()
    return deleted > 0
# --- Notifications --------------------------------------------------------------------------


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
