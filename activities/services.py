"""Writes about activities. Curation only for now; organiser flows build on these."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import QuerySet

from activities.models import Activity, Invitation

# Activities in these states can still be cancelled.
CANCELLABLE = (Activity.Status.DRAFT, Activity.Status.PUBLISHED)


def activities_set_featured(*, activities: QuerySet[Activity] | Iterable[Activity], featured: bool) -> int:
    with transaction.atomic():
        return Activity.objects.filter(pk__in=_ids(activities)).update(is_featured=featured)


def activities_cancel(*, activities: QuerySet[Activity] | Iterable[Activity]) -> int:
    """Cancel draft or published activities; their pending invitations are cancelled with them.

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
