"""Organisers create, change, publish and cancel activities; staff curate and moderate them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.contrib.gis.geos import Point
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from activities import errors
from activities.errors import ActivityClosed, ActivityPermissionDenied
from activities.models import Activity, Invitation, Venue
from activities.services.common import (
    can_moderate,
    notify_many,
    participant_count,
    participant_ids,
    promote_waitlist,
    stale_after_commit,
)
from users.models import Notification, User

# Activities in these states can still be cancelled or changed.
CANCELLABLE = (Activity.Status.DRAFT, Activity.Status.PUBLISHED)
# What an organiser may change; everything else (status, featuring ...) has its own service.
EDITABLE = (
    "title", "description", "category", "subtype", "skill_level", "location", "venue",
    "starts_at", "ends_at", "capacity", "recruit_radius_km",
)
# Changes participants are told about.
NOTIFIED_CHANGES = ("starts_at", "ends_at", "location", "venue")
CHANGED_MESSAGE = "{title} changed its time or place: have a look."
CANCELLED_MESSAGE = "{title} was cancelled by {who}."


def _check(activity: Activity, *, now: dt.datetime, changed: Iterable[str], current_participants: int) -> None:
    """Every field error at once, ours and the model's, as one ValidationError (a 400)."""
    problems: dict[str, list[str]] = {}
    try:
        activity.full_clean(exclude=["organiser"])
    except ValidationError as exc:
        problems.update(exc.message_dict)
    changed = set(changed)
    if "starts_at" in changed and activity.starts_at is not None and activity.starts_at <= now:
        problems.setdefault("starts_at", []).append(errors.START_IN_PAST)
    if (
        activity.starts_at is not None and activity.ends_at is not None
        and activity.ends_at <= activity.starts_at
    ):
        problems.setdefault("ends_at", []).append(errors.END_BEFORE_START)
    if activity.capacity is not None and activity.capacity < current_participants:
        problems.setdefault("capacity", []).append(
            errors.CAPACITY_BELOW_PARTICIPANTS.format(count=current_participants)
        )
    # The model's own constraint check repeats ours for ends_at; keep one message per field.
    problems = {k: list(dict.fromkeys(v)) for k, v in problems.items()}
    if "__all__" in problems and "ends_at" in problems:
        problems.pop("__all__")
    if problems:
        raise ValidationError(problems)


def activity_create(
    *, actor: User, title: str, category: str, location: Point, starts_at: dt.datetime,
    ends_at: dt.datetime, description: str = "", subtype: str = "", skill_level: int = 3,
    venue: Venue | None = None, capacity: int = 10, recruit_radius_km: float = 10.0,
    publish: bool = True,
) -> Activity:
    """A new activity organised by ``actor``; published at once unless ``publish`` is False.

    Publishing queues its participant recommendations (after the commit).
    """
    if actor.is_suspended or not actor.is_active:
        raise ActivityPermissionDenied(errors.SUSPENDED)
    activity = Activity(
        organiser=actor, title=title, description=description, category=category, subtype=subtype,
        skill_level=skill_level, location=location, venue=venue, starts_at=starts_at, ends_at=ends_at,
        capacity=capacity, recruit_radius_km=recruit_radius_km,
        status=Activity.Status.PUBLISHED if publish else Activity.Status.DRAFT,
    )
    _check(activity, now=timezone.now(), changed=EDITABLE, current_participants=0)
    with transaction.atomic():
        activity.save()
        if publish:
            stale_after_commit(activity.pk, "published")
    return activity


def _lock_for_change(actor: User, activity_id: int) -> Activity:
    activity = Activity.objects.select_for_update().get(pk=activity_id)
    if not (actor.pk == activity.organiser_id or can_moderate(actor)):
        raise ActivityPermissionDenied(errors.ONLY_ORGANISER)
    return activity


def activity_update(*, actor: User, activity: Activity, **changes: Any) -> Activity:
    """Change an activity's fields (organiser or staff); all-or-nothing.

    1. Lock the activity row, so joins wait and capacity is checked against a stable count.
    2. Refuse a cancelled, completed or started activity, and fields outside ``EDITABLE``.
    3. Validate every field (start in the future if it moves, end after start, capacity not
       below the people who joined, location, category ...): one 400 with all the messages.
    4. Save; a larger capacity promotes people from the waitlist; participants are told when the
       time or place changed; a published activity's recommendations are recomputed.
    """
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise ValidationError({name: [errors.UNKNOWN_FIELDS.format(names=", ".join(unknown))] for name in unknown})
    now = timezone.now()
    with transaction.atomic():
        activity = _lock_for_change(actor, activity.pk)
        if activity.status not in CANCELLABLE:
            raise ActivityClosed(errors.CANNOT_CHANGE.format(status=activity.get_status_display().lower()))
        if activity.starts_at <= now:
            raise ActivityClosed(errors.STARTED)
        changed = [name for name, value in changes.items() if getattr(activity, name) != value]
        for name in changed:
            setattr(activity, name, changes[name])
        count = participant_count(activity.pk)
        _check(activity, now=now, changed=changed, current_participants=count)
        if not changed:
            return activity
        activity.save()
        if "capacity" in changed:
            promote_waitlist(activity, now=now)
        if set(changed) & set(NOTIFIED_CHANGES):
            notify_many(
                participant_ids(activity.pk), Notification.Kind.ACTIVITY_CHANGED,
                CHANGED_MESSAGE.format(title=activity.title), {"activity_id": activity.pk},
            )
        if activity.status == Activity.Status.PUBLISHED:
            stale_after_commit(activity.pk, "changed")
    return activity


def activity_publish(*, actor: User, activity: Activity) -> Activity:
    """Publish a draft (organiser or staff); its recommendations are computed after the commit."""
    with transaction.atomic():
        activity = _lock_for_change(actor, activity.pk)
        if activity.status == Activity.Status.PUBLISHED:
            return activity
        if activity.status != Activity.Status.DRAFT:
            raise ActivityClosed(errors.CANNOT_CHANGE.format(status=activity.get_status_display().lower()))
        if activity.starts_at <= timezone.now():
            raise ValidationError({"starts_at": [errors.START_IN_PAST]})
        activity.status = Activity.Status.PUBLISHED
        activity.save(update_fields=["status", "updated_at"])
        stale_after_commit(activity.pk, "published")
    return activity


def activity_cancel(*, actor: User, activity: Activity) -> Activity:
    """Cancel one activity (organiser or staff): pending invitations are cancelled, the waitlist
    emptied, and participants and pending invitees are told."""
    with transaction.atomic():
        activity = _lock_for_change(actor, activity.pk)
        if activity.status not in CANCELLABLE:
            raise ActivityClosed(errors.CANNOT_CANCEL.format(status=activity.get_status_display().lower()))
        pending = Invitation.objects.filter(activity=activity, status=Invitation.Status.PENDING)
        told = set(participant_ids(activity.pk)) | set(pending.values_list("invitee_id", flat=True))
        pending.update(status=Invitation.Status.CANCELLED, responded_at=timezone.now())
        activity.waitlist.all().delete()
        activity.status = Activity.Status.CANCELLED
        activity.save(update_fields=["status", "updated_at"])
        who = "the organiser" if actor.pk == activity.organiser_id else "a moderator"
        notify_many(
            told - {actor.pk}, Notification.Kind.ACTIVITY_CANCELLED,
            CANCELLED_MESSAGE.format(title=activity.title, who=who), {"activity_id": activity.pk},
        )
    return activity


def activities_set_featured(*, activities: QuerySet[Activity] | Iterable[Activity], featured: bool) -> int:
    with transaction.atomic():
        return Activity.objects.filter(pk__in=_ids(activities)).update(is_featured=featured)


def activities_cancel(*, activities: QuerySet[Activity] | Iterable[Activity]) -> int:
    """Cancel draft or published activities (staff, from the admin); their pending invitations are
    cancelled with them.

    Completed or already cancelled activities are left as they are. Returns how many changed.
    """
    with transaction.atomic():
        ids = list(
            Activity.objects.select_for_update()
            .filter(pk__in=_ids(activities), status__in=CANCELLABLE)
            .values_list("pk", flat=True)
        )
        Invitation.objects.filter(activity_id__in=ids, status=Invitation.Status.PENDING).update(
            status=Invitation.Status.CANCELLED
        )
        return Activity.objects.filter(pk__in=ids).update(status=Activity.Status.CANCELLED)


def _ids(activities: QuerySet[Activity] | Iterable[Activity]) -> list[int]:
    if isinstance(activities, QuerySet):
        return list(activities.values_list("pk", flat=True))
    return [activity.pk for activity in activities]
