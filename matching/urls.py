from __future__ import annotations

from django.urls import path

from matching.apis import NearbyMatchesApi, SimilarityApi, SimilarUsersApi

app_name = "matching"
urlpatterns = [
    path("matches/nearby/", NearbyMatchesApi.as_view(), name="nearby"),
    path("similarity/", SimilarityApi.as_view(), name="similarity"),
    path("users/<int:user_id>/similar/", SimilarUsersApi.as_view(), name="similar-users"),
]
