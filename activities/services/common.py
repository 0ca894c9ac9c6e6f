"""Helpers the activity services share: who may moderate, counts under the row lock, the
waitlist promotion, notifications and the signals to the apps above."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.db import transaction
from django.db.models import Q

from activities.models import Activity, Participation, WaitlistEntry
from activities.signals import activity_event, recommendations_stale
from users.models import Block, Notification, User
from users.services import notification_create, notifications_create

PROMOTED_MESSAGE = "A place freed up in {title}: you are in."


def can_moderate(actor: User) -> bool:
    return bool(actor.is_staff and actor.is_active)


def participant_count(activity_id: int) -> int:
    return Participation.objects.filter(activity_id=activity_id).count()


def participant_ids(activity_id: int) -> list[int]:
    return list(Participation.objects.filter(activity_id=activity_id).values_list("user_id", flat=True))


def blocked_with(user_id: int, other_id: int) -> bool:
    """Whether either of two people blocked the other."""
    return Block.objects.filter(
        Q(blocker_id=user_id, blocked_id=other_id) | Q(blocker_id=other_id, blocked_id=user_id)
    ).exists()


def may_take_part(user: User, activity: Activity) -> bool:
    """Active, not suspended, and not blocked either way with the organiser."""
    return bool(user.is_active and not user.is_suspended and not blocked_with(user.pk, activity.organiser_id))


def emit(kind: str, *, actor_id: int, activity_id: int, **extra: object) -> None:
    """An event for the interaction log, inside the caller's transaction (see ``signals``)."""
    activity_event.send(sender=Activity, kind=kind, actor_id=actor_id, activity_id=activity_id, **extra)


def stale_after_commit(activity_id: int, reason: str) -> None:
    """Tell listeners, once the transaction commits, that the recommendations are out of date."""
    transaction.on_commit(
        lambda: recommendations_stale.send(sender=Activity, activity_id=activity_id, reason=reason)
    )


def notify(user_id: int, kind: str, message: str, data: dict[str, object]) -> None:
    notification_create(user_id=user_id, kind=kind, message=message, data=data)


def notify_many(user_ids: Iterable[int], kind: str, message: str, data: dict[str, object]) -> None:
    notifications_create(user_ids=sorted(set(user_ids)), kind=kind, message=message, data=data)


def promote_waitlist(activity: Activity, *, now: dt.datetime) -> list[int]:
    """Fill free places from the waitlist, earliest first; the caller holds the activity's row lock.

    People who may no longer take part (suspended, blocked with the organiser) lose their entry
    and the next in line is tried. Each promoted person is told. Returns their ids.
    """
    if activity.status != Activity.Status.PUBLISHED or activity.starts_at <= now:
        return []
    free = activity.capacity - participant_count(activity.pk)
    promoted: list[int] = []
    entries = WaitlistEntry.objects.filter(activity=activity).select_related("user").order_by("created_at", "pk")
    for entry in entries:
        if free <= 0:
            break
        entry.delete()
        if not may_take_part(entry.user, activity):
            continue
        _, created = Participation.objects.get_or_create(activity=activity, user=entry.user)
        if not created:
            continue
        free -= 1
        promoted.append(entry.user_id)
        emit("join", actor_id=entry.user_id, activity_id=activity.pk, surface="waitlist")
        notify(
            entry.user_id, Notification.Kind.WAITLIST_PROMOTED,
            PROMOTED_MESSAGE.format(title=activity.title), {"activity_id": activity.pk},
        )
    if promoted:
        stale_after_commit(activity.pk, "joined")
    return promoted
