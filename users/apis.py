"""In-app notifications of the asker (DRF under /api/v1/)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from users.selectors import notifications_for, notifications_unread_count
from users.services import notifications_mark_read


class NotificationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    message = serializers.CharField()
    data = serializers.JSONField()
    created_at = serializers.DateTimeField()
    read_at = serializers.DateTimeField(allow_null=True)


class NotificationQuerySerializer(serializers.Serializer):
    unread = serializers.BooleanField(default=False)


class MarkReadSerializer(serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=1000,
                                help_text="Omit to mark every notification read.")


class NotificationsApi(APIView):
    @extend_schema(parameters=[NotificationQuerySerializer], responses=NotificationSerializer(many=True))
    def get(self, request: Request) -> Response:
        """The asker's notifications, newest first, with the unread count."""
        query = NotificationQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(
            notifications_for(user=request.user, unread_only=query.validated_data["unread"]), request, view=self
        )
        response = paginator.get_paginated_response(NotificationSerializer(page, many=True).data)
        response.data["unread"] = notifications_unread_count(user=request.user)
        return response


class NotificationsReadApi(APIView):
    @extend_schema(request=MarkReadSerializer, responses=inline_serializer("NotificationsMarked", {
        "marked": serializers.IntegerField(), "unread": serializers.IntegerField(),
    }))
    def post(self, request: Request) -> Response:
        body = MarkReadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        marked = notifications_mark_read(actor=request.user, ids=body.validated_data.get("ids"))
        return Response({"marked": marked, "unread": notifications_unread_count(user=request.user)})
