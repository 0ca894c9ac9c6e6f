from __future__ import annotations

from django.urls import path

from users.apis import NotificationsApi, NotificationsReadApi

app_name = "users"
urlpatterns = [
    path("notifications/", NotificationsApi.as_view(), name="notifications"),
    path("notifications/read/", NotificationsReadApi.as_view(), name="notifications-read"),
]
