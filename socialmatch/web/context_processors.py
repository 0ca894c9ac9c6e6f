from __future__ import annotations

from django.http import HttpRequest

from users.selectors import notifications_unread_count


def notifications(request: HttpRequest) -> dict[str, int]:
    """The unread count in the navigation: one indexed COUNT for signed-in people."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"unread_notifications": notifications_unread_count(user=user)}
