"""Reads about people."""

from __future__ import annotations

from django.db.models import QuerySet

from users.models import Notification, User


def notifications_for(*, user: User, unread_only: bool = False) -> QuerySet[Notification]:
    """A person's own notifications, newest first."""
    queryset = Notification.objects.filter(user=user).order_by("-created_at", "-pk")
    return queryset.filter(read_at__isnull=True) if unread_only else queryset


def notifications_unread_count(*, user: User) -> int:
    return Notification.objects.filter(user=user, read_at__isnull=True).count()
