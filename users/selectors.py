"""Reads about people."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from users.models import Block, Connection, Notification, Profile, User


def display_name(user_id: int) -> str:
    """What others see a person called: their profile's display name, else their username."""
    row = User.objects.filter(pk=user_id).values_list("profile__display_name", "username").first()
    if row is None:
        return "this person"
    return row[0] or row[1]


def connection_between(a: int, b: int) -> Connection | None:
    return Connection.objects.filter(Q(from_user_id=a, to_user_id=b) | Q(from_user_id=b, to_user_id=a)).first()


def profile_visible_to(*, viewer: User, user_id: int) -> Profile | None:
    """Someone's profile as ``viewer`` may see it: discoverable or connected, never when hidden,
    suspended or blocked either way. ``None`` means "not found" to the viewer, whatever the reason."""
    if user_id == viewer.pk:
        return Profile.objects.filter(user_id=user_id).first()
    profile = (
        Profile.objects.select_related("user")
        .filter(user_id=user_id, user__is_active=True, user__is_hidden=False, user__is_suspended=False)
        .first()
    )
    if profile is None:
        return None
    if Block.objects.filter(Q(blocker=viewer, blocked_id=user_id) | Q(blocker_id=user_id, blocked=viewer)).exists():
        return None
    connected = Connection.objects.filter(
        Q(from_user=viewer, to_user_id=user_id) | Q(from_user_id=user_id, to_user=viewer), status=Connection.Status.ACCEPTED,
    ).exists()
    return profile if profile.discoverable or connected else None


def mutual_friend_count(a: int, b: int) -> int:
    def friends(u: int) -> set[int]:
        rows = Connection.objects.filter(Q(from_user_id=u) | Q(to_user_id=u), status=Connection.Status.ACCEPTED)
        return {t if f == u else f for f, t in rows.values_list("from_user_id", "to_user_id")}

    return len(friends(a) & friends(b))


def notifications_for(*, user: User, unread_only: bool = False) -> QuerySet[Notification]:
    """A person's own notifications, newest first."""
    queryset = Notification.objects.filter(user=user).order_by("-created_at", "-pk")
    return queryset.filter(read_at__isnull=True) if unread_only else queryset


def notifications_unread_count(*, user: User) -> int:
    return Notification.objects.filter(user=user, read_at__isnull=True).count()
