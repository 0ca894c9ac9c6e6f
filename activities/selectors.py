"""Reads about activities: browsing nearby, one activity with the viewer's state, the organiser's
recommendations and invitations, an invitee's inbox. Selectors never write.

Activity locations are public (they are places); nothing here returns where a person is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.contrib.gis.db.models.functions import Distance
from django.contrib.gis.geos import Point
from django.contrib.gis.measure import D
from django.db.models import Case, Count, IntegerField, Q, QuerySet, Value, When
from django.utils import timezone

from activities import errors
from activities.errors import ActivityPermissionDenied
from activities.models import Activity, Invitation, Participation, Recommendation, WaitlistEntry
from users.models import User

MAX_RADIUS_KM = 100.0
ORDERS = ("distance", "start")


def _with_counts(queryset: QuerySet[Activity]) -> QuerySet[Activity]:
    return queryset.select_related("organiser__profile", "venue").annotate(
        participant_count=Count("participations", distinct=True)
    )


def activities_nearby(
    *, lon: float, lat: float, radius_km: float, category: str | None = None,
    starts_after: dt.datetime | None = None, starts_before: dt.datetime | None = None,
    skill_level: int | None = None, order: str = "distance",
) -> QuerySet[Activity]:
    """Published activities starting after ``starts_after`` (default now) within ``radius_km`` of
    a point, optionally of one category, before a time, at a skill level, nearest or soonest first.

    ``ST_DWithin`` on the geography column uses its GiST index; each row carries ``distance``
    (to the place, from the given point) and ``participant_count``.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}")
    origin = Point(lon, lat, srid=4326)
    queryset = Activity.objects.filter(
        status=Activity.Status.PUBLISHED,
        starts_at__gt=starts_after or timezone.now(),
        location__dwithin=(origin, D(km=radius_km)),
    )
    if category:
        queryset = queryset.filter(category=category)
    if starts_before is not None:
        queryset = queryset.filter(starts_at__lt=starts_before)
    if skill_level is not None:
        queryset = queryset.filter(skill_level=skill_level)
    queryset = _with_counts(queryset).annotate(distance=Distance("location", origin))
    return queryset.order_by("distance", "starts_at", "pk") if order == "distance" else queryset.order_by("starts_at", "distance", "pk")


def activity_visible_to(*, viewer: User) -> QuerySet[Activity]:
    """Activities a person may open: every non-draft one and their own drafts (all, for staff)."""
    queryset = _with_counts(Activity.objects.all())
    if viewer.is_staff:
        return queryset
    return queryset.filter(~Q(status=Activity.Status.DRAFT) | Q(organiser=viewer))


@dataclass
class ViewerState:
    is_organiser: bool
    joined: bool
    invitation_id: int | None
    invitation_status: str | None  # "pending", "accepted", ... or None when never invited
    waitlist_position: int | None  # 1 = next in line; None when not waiting


def waitlist_position(*, activity: Activity, user: User) -> int | None:
    entry = WaitlistEntry.objects.filter(activity=activity, user=user).first()
    if entry is None:
        return None
    return WaitlistEntry.objects.filter(activity=activity, created_at__lt=entry.created_at).count() + 1


def activity_viewer_state(*, activity: Activity, viewer: User) -> ViewerState:
    invitation = Invitation.objects.filter(activity=activity, invitee=viewer).first()
    return ViewerState(
        is_organiser=activity.organiser_id == viewer.pk,
        joined=Participation.objects.filter(activity=activity, user=viewer).exists(),
        invitation_id=invitation.pk if invitation else None,
        invitation_status=invitation.status if invitation else None,
        waitlist_position=waitlist_position(activity=activity, user=viewer),
    )


@dataclass
class RecommendationList:
    activity_id: int
    ranker: str  # "model", "rules", or "" before the first computation
    model_version: str
    computed_at: dt.datetime | None
    # True when the activity changed after the list was computed (a recomputation is queued).
    stale: bool
    items: list[Recommendation]


def activity_recommendations(*, actor: User, activity: Activity, limit: int = 50) -> RecommendationList:
    """The stored ranked recommendations of an activity, for its organiser (or staff)."""
    if not (actor.pk == activity.organiser_id or actor.is_staff):
        raise ActivityPermissionDenied(errors.ONLY_ORGANISER_SEES_RECOMMENDATIONS)
    items = list(
        Recommendation.objects.filter(activity=activity).select_related("user__profile").order_by("rank")[:limit]
    )
    stale = activity.recommended_at is None or activity.updated_at > activity.recommended_at
    return RecommendationList(
        activity_id=activity.pk, ranker=activity.recommendation_ranker,
        model_version=activity.recommendation_model_version, computed_at=activity.recommended_at,
        stale=stale, items=items,
    )


def activity_invitations(*, actor: User, activity: Activity) -> QuerySet[Invitation]:
    """Every invitation of an activity, newest first (organiser or staff)."""
    if not (actor.pk == activity.organiser_id or actor.is_staff):
        raise ActivityPermissionDenied(errors.ONLY_ORGANISER)
    return Invitation.objects.filter(activity=activity).select_related("invitee__profile").order_by("-created_at", "-pk")


def invitations_for_invitee(*, user: User, status: str | None = None) -> QuerySet[Invitation]:
    """A person's own invitations: pending first, then newest first."""
    queryset = Invitation.objects.filter(invitee=user).select_related("activity", "invited_by__profile")
    if status:
        queryset = queryset.filter(status=status)
    return queryset.annotate(
        pending_first=Case(When(status=Invitation.Status.PENDING, then=Value(0)), default=Value(1),
                           output_field=IntegerField())
    ).order_by("pending_first", "-created_at", "-pk")
