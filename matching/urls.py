from __future__ import annotations

from django.urls import path

from matching.apis import (
    AudienceCreateApi,
    AudienceDetailApi,
    AudienceExportApi,
    NearbyMatchesApi,
    SimilarityApi,
    SimilarUsersApi,
)

app_name = "matching"
urlpatterns = [
    path("matches/nearby/", NearbyMatchesApi.as_view(), name="nearby"),
    path("similarity/", SimilarityApi.as_view(), name="similarity"),
    path("users/<int:user_id>/similar/", SimilarUsersApi.as_view(), name="similar-users"),
    path("audiences/", AudienceCreateApi.as_view(), name="audiences"),
    path("audiences/<int:audience_id>/", AudienceDetailApi.as_view(), name="audience"),
    path("audiences/<int:audience_id>/export.csv", AudienceExportApi.as_view(), name="audience-export"),
]
