"""REST endpoints of activities, participation and invitations (DRF under /api/v1/).

Thin views: a serializer validates the shape of the input, one service or selector does the
work, and ``ActivityApi.handle_exception`` turns domain errors into HTTP answers (403, 404,
409, 429, and 400 with a message per field). Activities' locations are public places and are
returned; people's never are (recommended people come with a distance bucket to the place).
"""

from __future__ import annotations

from typing import Any

from django.contrib.gis.geos import Point
from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from activities import selectors, services
from activities.errors import (
    ActivityClosed,
    ActivityConflict,
    ActivityFull,
    ActivityPermissionDenied,
    InvitationClosed,
    InvitationLimitReached,
)
from activities.models import Activity, Invitation, Venue
from users.models import User
from users.taxonomy import ACTIVITY_TYPES, INTERESTS

BOTH_OR_NEITHER = "Give both lat and lon, or neither."
NO_LOCATION = "Set your location first, or pass lat and lon."
UNKNOWN_VENUE = "No such venue."


def _person(user: User | None) -> dict[str, object] | None:
    """A person as others see them: an id and a name, never where they are."""
    if user is None:
        return None
    profile = getattr(user, "profile", None)
    return {"id": user.pk, "display_name": (profile.display_name if profile else "") or user.username}


class ActivityOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    description = serializers.CharField()
    category = serializers.CharField()
    subtype = serializers.CharField()
    skill_level = serializers.IntegerField()
    status = serializers.CharField()
    location = serializers.SerializerMethodField(help_text="The place: public, unlike people's positions.")
    venue = serializers.SerializerMethodField()
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    capacity = serializers.IntegerField()
    participant_count = serializers.SerializerMethodField()
    places_left = serializers.SerializerMethodField()
    recruit_radius_km = serializers.FloatField()
    organiser = serializers.SerializerMethodField()
    distance_km = serializers.SerializerMethodField(help_text="From the point searched from; lists only.")

    def get_location(self, activity: Activity) -> dict[str, float]:
        return {"lat": round(activity.location.y, 6), "lon": round(activity.location.x, 6)}

    def get_venue(self, activity: Activity) -> dict[str, object] | None:
        return {"id": activity.venue_id, "name": activity.venue.name} if activity.venue_id else None

    def get_participant_count(self, activity: Activity) -> int:
        count = getattr(activity, "participant_count", None)
        return count if count is not None else activity.participations.count()

    def get_places_left(self, activity: Activity) -> int:
        return max(0, activity.capacity - self.get_participant_count(activity))

    def get_organiser(self, activity: Activity) -> dict[str, object] | None:
        return _person(activity.organiser)

    def get_distance_km(self, activity: Activity) -> float | None:
        distance = getattr(activity, "distance", None)
        return round(distance.km, 1) if distance is not None else None


class ViewerStateSerializer(serializers.Serializer):
    is_organiser = serializers.BooleanField()
    joined = serializers.BooleanField()
    invitation_id = serializers.IntegerField(allow_null=True)
    invitation_status = serializers.CharField(allow_null=True)
    waitlist_position = serializers.IntegerField(allow_null=True)


class NearbyActivitiesQuerySerializer(serializers.Serializer):
    lat = serializers.FloatField(required=False, min_value=-90.0, max_value=90.0)
    lon = serializers.FloatField(required=False, min_value=-180.0, max_value=180.0)
    radius_km = serializers.FloatField(default=10.0, min_value=0.1, max_value=selectors.MAX_RADIUS_KM)
    category = serializers.ChoiceField(choices=list(ACTIVITY_TYPES), required=False)
    starts_after = serializers.DateTimeField(required=False)
    starts_before = serializers.DateTimeField(required=False)
    skill_level = serializers.IntegerField(required=False, min_value=1, max_value=5)
    order = serializers.ChoiceField(choices=list(selectors.ORDERS), default="distance")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("lat" in attrs) != ("lon" in attrs):
            raise serializers.ValidationError({"lat": [BOTH_OR_NEITHER], "lon": [BOTH_OR_NEITHER]})
        return attrs


class ActivityInSerializer(serializers.Serializer):
    """The shape of an activity; the rules (start in the future, capacity ...) are the service's."""

    title = serializers.CharField(max_length=140)
    description = serializers.CharField(max_length=5000, allow_blank=True, required=False)
    category = serializers.ChoiceField(choices=list(ACTIVITY_TYPES))
    subtype = serializers.ChoiceField(choices=list(INTERESTS), allow_blank=True, required=False)
    skill_level = serializers.IntegerField(min_value=1, max_value=5, required=False)
    lat = serializers.FloatField(min_value=-90.0, max_value=90.0)
    lon = serializers.FloatField(min_value=-180.0, max_value=180.0)
    venue_id = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    capacity = serializers.IntegerField(min_value=1, max_value=10_000, required=False)
    recruit_radius_km = serializers.FloatField(min_value=0.1, max_value=200.0, required=False)
    publish = serializers.BooleanField(default=True, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.partial and ("lat" in attrs) != ("lon" in attrs):
            raise serializers.ValidationError({"lat": [BOTH_OR_NEITHER], "lon": [BOTH_OR_NEITHER]})
        return attrs

    def to_service_kwargs(self) -> dict[str, Any]:
        data = dict(self.validated_data)
        data.pop("publish", None)
        if "lat" in data:
            data["location"] = Point(data.pop("lon"), data.pop("lat"), srid=4326)
        if "venue_id" in data:
            venue_id = data.pop("venue_id")
            data["venue"] = None
            if venue_id is not None:
                data["venue"] = Venue.objects.filter(pk=venue_id).first()
                if data["venue"] is None:
                    raise DjangoValidationError({"venue_id": [UNKNOWN_VENUE]})
        return data


class ActivityApi(APIView):
    """Maps the domain errors of ``activities.errors`` onto HTTP for every view below."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, DjangoValidationError):
            body = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        if isinstance(exc, ActivityPermissionDenied):
            return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
        if isinstance(exc, ActivityFull):
            return Response({"detail": exc.message, "waitlist": True}, status=status.HTTP_409_CONFLICT)
        if isinstance(exc, ActivityClosed | ActivityConflict | InvitationClosed):
            return Response({"detail": exc.message}, status=status.HTTP_409_CONFLICT)
        if isinstance(exc, InvitationLimitReached):
            return Response({"detail": exc.message}, status=status.HTTP_429_TOO_MANY_REQUESTS)
        if isinstance(exc, Activity.DoesNotExist | Invitation.DoesNotExist):
            exc = NotFound()
        return super().handle_exception(exc)

    def activity(self, request: Request, activity_id: int) -> Activity:
        """An activity the asker may see (others' drafts are 404, as if they did not exist)."""
        return get_object_or_404(selectors.activity_visible_to(viewer=request.user), pk=activity_id)

    def detail(self, request: Request, activity_id: int, code: int = status.HTTP_200_OK) -> Response:
        activity = self.activity(request, activity_id)
        body = dict(ActivityOutSerializer(activity).data)
        body["viewer"] = ViewerStateSerializer(selectors.activity_viewer_state(activity=activity, viewer=request.user)).data
        return Response(body, status=code)


class ActivitiesApi(ActivityApi):
    @extend_schema(parameters=[NearbyActivitiesQuerySerializer], responses=ActivityOutSerializer(many=True))
    def get(self, request: Request) -> Response:
        """Published upcoming activities near a point (default: your location), filtered and ordered."""
        query = NearbyActivitiesQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = dict(query.validated_data)
        lat, lon = params.pop("lat", None), params.pop("lon", None)
        if lat is None:
            profile = getattr(request.user, "profile", None)
            if profile is None or profile.location is None:
                return Response({"detail": NO_LOCATION}, status=status.HTTP_400_BAD_REQUEST)
            lon, lat = profile.location.x, profile.location.y
        queryset = selectors.activities_nearby(lon=lon, lat=lat, **params)
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(ActivityOutSerializer(page, many=True).data)

    @extend_schema(request=ActivityInSerializer, responses={201: ActivityOutSerializer})
    def post(self, request: Request) -> Response:
        body = ActivityInSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        activity = services.activity_create(
            actor=request.user, publish=body.validated_data.get("publish", True), **body.to_service_kwargs()
        )
        return self.detail(request, activity.pk, status.HTTP_201_CREATED)


class ActivityDetailApi(ActivityApi):
    @extend_schema(responses=ActivityOutSerializer)
    def get(self, request: Request, activity_id: int) -> Response:
        """One activity with its participant count and the asker's state (invited, joined ...)."""
        return self.detail(request, activity_id)

    @extend_schema(request=ActivityInSerializer, responses=ActivityOutSerializer)
    def patch(self, request: Request, activity_id: int) -> Response:
        activity = self.activity(request, activity_id)
        body = ActivityInSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        services.activity_update(actor=request.user, activity=activity, **body.to_service_kwargs())
        return self.detail(request, activity_id)


class ActivityPublishApi(ActivityApi):
    @extend_schema(request=None, responses=ActivityOutSerializer)
    def post(self, request: Request, activity_id: int) -> Response:
        services.activity_publish(actor=request.user, activity=self.activity(request, activity_id))
        return self.detail(request, activity_id)


class ActivityCancelApi(ActivityApi):
    @extend_schema(request=None, responses=ActivityOutSerializer)
    def post(self, request: Request, activity_id: int) -> Response:
        services.activity_cancel(actor=request.user, activity=self.activity(request, activity_id))
        return self.detail(request, activity_id)


class ActivityJoinApi(ActivityApi):
    @extend_schema(request=None, responses={201: ActivityOutSerializer})
    def post(self, request: Request, activity_id: int) -> Response:
        """Join; 409 with ``"waitlist": true`` when the activity is full."""
        services.participation_join(actor=request.user, activity=self.activity(request, activity_id))
        return self.detail(request, activity_id, status.HTTP_201_CREATED)


class ActivityLeaveApi(ActivityApi):
    @extend_schema(request=None, responses=ActivityOutSerializer)
    def post(self, request: Request, activity_id: int) -> Response:
        services.participation_leave(actor=request.user, activity=self.activity(request, activity_id))
        return self.detail(request, activity_id)


class ActivityParticipantApi(ActivityApi):
    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, activity_id: int, user_id: int) -> Response:
        """Staff moderation: remove someone from an activity (the waitlist fills the place)."""
        user = get_object_or_404(User, pk=user_id)
        services.participation_leave(actor=request.user, activity=self.activity(request, activity_id), user=user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ActivityWaitlistApi(ActivityApi):
    @extend_schema(request=None, responses={201: ActivityOutSerializer})
    def post(self, request: Request, activity_id: int) -> Response:
        services.waitlist_join(actor=request.user, activity=self.activity(request, activity_id))
        return self.detail(request, activity_id, status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, activity_id: int) -> Response:
        services.waitlist_leave(actor=request.user, activity=self.activity(request, activity_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class RecommendationSerializer(serializers.Serializer):
    user = serializers.SerializerMethodField()
    rank = serializers.IntegerField()
    score = serializers.FloatField()
    reasons = serializers.JSONField(help_text="Shared interests, a distance bucket, skill, friends taking part.")

    def get_user(self, recommendation: object) -> dict[str, object] | None:
        return _person(recommendation.user)  # type: ignore[attr-defined]


class RecommendationListSerializer(serializers.Serializer):
    activity_id = serializers.IntegerField()
    ranker = serializers.CharField(help_text='"model", "rules", or "" before the first computation.')
    model_version = serializers.CharField(allow_blank=True)
    computed_at = serializers.DateTimeField(allow_null=True)
    stale = serializers.BooleanField(help_text="The activity changed since; a recomputation is queued.")
    results = RecommendationSerializer(many=True, source="items")


class ActivityRecommendationsApi(ActivityApi):
    @extend_schema(responses=RecommendationListSerializer)
    def get(self, request: Request, activity_id: int) -> Response:
        """The organiser's ranked recommended participants, with when they were computed."""
        result = selectors.activity_recommendations(actor=request.user, activity=self.activity(request, activity_id))
        return Response(RecommendationListSerializer(result).data)


class InvitationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    activity = serializers.SerializerMethodField()
    invitee = serializers.SerializerMethodField()
    invited_by = serializers.SerializerMethodField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    responded_at = serializers.DateTimeField(allow_null=True)

    def get_activity(self, invitation: Invitation) -> dict[str, object]:
        a = invitation.activity
        return {"id": a.pk, "title": a.title, "starts_at": serializers.DateTimeField().to_representation(a.starts_at),
                "status": a.status}

    def get_invitee(self, invitation: Invitation) -> dict[str, object] | None:
        return _person(invitation.invitee)

    def get_invited_by(self, invitation: Invitation) -> dict[str, object] | None:
        return _person(invitation.invited_by)


class OrganiserInvitationSerializer(InvitationSerializer):
    """What the organiser sees besides: what the recommender said when they invited."""

    score = serializers.FloatField(allow_null=True)
    reasons = serializers.JSONField()


class InviteSerializer(serializers.Serializer):
    user_ids = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=500,
                                     required=False)
    top = serializers.IntegerField(min_value=1, max_value=500, required=False)


class ActivityInvitationsApi(ActivityApi):
    @extend_schema(responses=OrganiserInvitationSerializer(many=True))
    def get(self, request: Request, activity_id: int) -> Response:
        invitations = selectors.activity_invitations(actor=request.user, activity=self.activity(request, activity_id))
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(invitations.select_related("activity", "invited_by__profile"), request, view=self)
        return paginator.get_paginated_response(OrganiserInvitationSerializer(page, many=True).data)

    @extend_schema(request=InviteSerializer, responses={201: OrganiserInvitationSerializer(many=True)})
    def post(self, request: Request, activity_id: int) -> Response:
        """Invite chosen recommended people (``user_ids``) or the best ``top`` of them."""
        body = InviteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        invitations = services.invitations_send(
            actor=request.user, activity=self.activity(request, activity_id), **body.validated_data
        )
        fresh = Invitation.objects.filter(pk__in=[i.pk for i in invitations]).select_related(
            "activity", "invitee__profile", "invited_by__profile").order_by("pk")
        return Response(OrganiserInvitationSerializer(fresh, many=True).data, status=status.HTTP_201_CREATED)


class InvitationQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Invitation.Status.values, required=False)


class MyInvitationsApi(ActivityApi):
    @extend_schema(parameters=[InvitationQuerySerializer], responses=InvitationSerializer(many=True))
    def get(self, request: Request) -> Response:
        """The asker's invitations: pending first, then newest."""
        query = InvitationQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        invitations = selectors.invitations_for_invitee(user=request.user, status=query.validated_data.get("status"))
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(invitations, request, view=self)
        return paginator.get_paginated_response(InvitationSerializer(page, many=True).data)


class InvitationActionApi(ActivityApi):
    action = ""

    @extend_schema(request=None, responses=InvitationSerializer)
    def post(self, request: Request, invitation_id: int) -> Response:
        invitation = Invitation.objects.filter(pk=invitation_id).first()
        # Someone else's invitation does not exist for the asker, unless they organise or moderate.
        if invitation is None or not (
            request.user.pk in (invitation.invitee_id, invitation.invited_by_id) or request.user.is_staff
        ):
            raise NotFound()
        if self.action == "accept":
            services.invitation_accept(actor=request.user, invitation=invitation)
        elif self.action == "decline":
            services.invitation_decline(actor=request.user, invitation=invitation)
        else:
            services.invitation_cancel(actor=request.user, invitation=invitation)
        fresh = Invitation.objects.select_related("activity", "invitee__profile", "invited_by__profile").get(pk=invitation_id)
        return Response(InvitationSerializer(fresh).data)


class InvitationAcceptApi(InvitationActionApi):
    action = "accept"


class InvitationDeclineApi(InvitationActionApi):
    action = "decline"


class InvitationCancelApi(InvitationActionApi):
    action = "cancel"
