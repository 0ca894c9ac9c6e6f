from __future__ import annotations

from django.urls import path

from matching.apis import NearbyMatchesApi

app_name = "matching"
urlpatterns = [
    path("matches/nearby/", NearbyMatchesApi.as_view(), name="nearby"),
]
