"""REST endpoints of the matcher (DRF under /api/v1/)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from matching.services.nearby import MAX_LIMIT, MAX_RADIUS_KM, NearbyError, nearby_matches

BOTH_OR_NEITHER = "Give both lat and lon, or neither."


class NearbyQuerySerializer(serializers.Serializer):
    radius_km = serializers.FloatField(default=5.0, min_value=0.1, max_value=MAX_RADIUS_KM)
    limit = serializers.IntegerField(default=20, min_value=1, max_value=MAX_LIMIT)
    lat = serializers.FloatField(required=False, min_value=-90.0, max_value=90.0)
    lon = serializers.FloatField(required=False, min_value=-180.0, max_value=180.0)
    include_connected = serializers.BooleanField(default=False)

    def validate(self, attrs: dict[str, object]) -> dict[str, object]:
        if ("lat" in attrs) != ("lon" in attrs):
            raise serializers.ValidationError({"lat": [BOTH_OR_NEITHER], "lon": [BOTH_OR_NEITHER]})
        return attrs


class ReasonsSerializer(serializers.Serializer):
    shared_interests = serializers.ListField(child=serializers.CharField())
    mutual_friends = serializers.IntegerField()


class MatchSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    display_name = serializers.CharField()
    distance = serializers.CharField(source="distance_bucket", help_text="A bucket, never a position.")
    similarity = serializers.FloatField()
    score = serializers.FloatField()
    reasons = serializers.SerializerMethodField()

    def get_reasons(self, match: object) -> dict[str, object]:
        return {"shared_interests": match.shared_interests, "mutual_friends": match.mutual_friends}  # type: ignore[attr-defined]


class NearbyResponseSerializer(serializers.Serializer):
    ranker = serializers.ChoiceField(choices=["model", "rules"])
    model_version = serializers.CharField(allow_blank=True)
    results = MatchSerializer(many=True, source="matches")


class NearbyThrottle(UserRateThrottle):
    scope = "nearby"


class NearbyMatchesApi(APIView):
    throttle_classes = [NearbyThrottle]

    @extend_schema(parameters=[NearbyQuerySerializer], responses=NearbyResponseSerializer)
    def get(self, request: Request) -> Response:
        query = NearbyQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            result = nearby_matches(user=request.user, **query.validated_data)
        except NearbyError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(NearbyResponseSerializer(result).data)
