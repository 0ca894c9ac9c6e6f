"""Joining and leaving activities, and the waitlist, with capacity that holds under concurrency.

Every write here first takes ``SELECT ... FOR UPDATE`` on the activity's row: joins (and
accepted invitations, see ``invitations``) of one activity run one after another, each counting
the participants the previous one committed, so 50 people joining a 10-place activity at once
leave exactly 10 participants. Different activities never wait for each other.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from activities import errors
from activities.errors import (
    ActivityClosed,
    ActivityConflict,
    ActivityFull,
    ActivityPermissionDenied,
)
from activities.models import Activity, Participation, WaitlistEntry
from activities.services.common import (
    can_moderate,
    emit,
    may_take_part,
    participant_count,
    promote_waitlist,
    stale_after_commit,
)
from users.models import User


def lock_open_activity(activity_id: int) -> Activity:
    """The activity's row, locked; raises ActivityClosed unless it is published and not started."""
    activity = Activity.objects.select_for_update().get(pk=activity_id)
    if activity.status != Activity.Status.PUBLISHED:
        raise ActivityClosed(errors.NOT_OPEN.format(status=activity.get_status_display().lower()))
    if activity.starts_at <= timezone.now():
        raise ActivityClosed(errors.STARTED)
    return activity


def check_may_join(actor: User, activity: Activity) -> None:
    if actor.is_suspended or not actor.is_active:
        raise ActivityPermissionDenied(errors.SUSPENDED)
    if actor.pk == activity.organiser_id:
        raise ActivityConflict(errors.ORGANISER_JOINS)
    if not may_take_part(actor, activity):
        raise ActivityPermissionDenied(errors.BLOCKED)


def add_participant(activity: Activity, user: User, *, surface: str, full_message: str) -> tuple[Participation, bool]:
    """Under the caller's row lock: the existing participation, or a new one if a place is free."""
    existing = Participation.objects.filter(activity=activity, user=user).first()
    if existing is not None:
        return existing, False
    if participant_count(activity.pk) >= activity.capacity:
        raise ActivityFull(full_message.format(capacity=activity.capacity))
    participation = Participation.objects.create(activity=activity, user=user)
    WaitlistEntry.objects.filter(activity=activity, user=user).delete()
    emit("join", actor_id=user.pk, activity_id=activity.pk, surface=surface)
    stale_after_commit(activity.pk, "joined")
    return participation, True


def participation_join(*, actor: User, activity: Activity) -> Participation:
    """Join a published, upcoming activity; idempotent for someone already in.

    Raises ActivityFull (with the waitlist offered) when every place is taken, ActivityClosed
    when it is not open, ActivityPermissionDenied for suspended or blocked people.
    """
    with transaction.atomic():
        activity = lock_open_activity(activity.pk)
        check_may_join(actor, activity)
        participation, _ = add_participant(activity, actor, surface="join", full_message=errors.FULL)
    return participation


def participation_leave(*, actor: User, activity: Activity, user: User | None = None) -> list[int]:
    """Leave an activity (or, for staff, remove ``user`` from it); the first people waiting are
    promoted into the freed place and told. Returns the ids of those promoted."""
    user = user or actor
    if user.pk != actor.pk and not can_moderate(actor):
        raise ActivityPermissionDenied(errors.ONLY_STAFF_REMOVES)
    now = timezone.now()
    with transaction.atomic():
        activity = Activity.objects.select_for_update().get(pk=activity.pk)
        deleted, _ = Participation.objects.filter(activity=activity, user=user).delete()
        if not deleted:
            raise ActivityConflict(errors.NOT_PARTICIPANT)
        stale_after_commit(activity.pk, "left")
        return promote_waitlist(activity, now=now)


def waitlist_join(*, actor: User, activity: Activity) -> WaitlistEntry:
    """Wait for a place in a full activity (idempotent). Refused while places are free."""
    with transaction.atomic():
        activity = lock_open_activity(activity.pk)
        check_may_join(actor, activity)
        if Participation.objects.filter(activity=activity, user=actor).exists():
            raise ActivityConflict(errors.ALREADY_JOINED)
        if participant_count(activity.pk) < activity.capacity:
            raise ActivityConflict(errors.HAS_PLACES)
        entry, _ = WaitlistEntry.objects.get_or_create(activity=activity, user=actor)
    return entry


def waitlist_leave(*, actor: User, activity: Activity) -> None:
    with transaction.atomic():
        deleted, _ = WaitlistEntry.objects.filter(activity_id=activity.pk, user=actor).delete()
        if not deleted:
            raise ActivityConflict(errors.NOT_WAITING)

