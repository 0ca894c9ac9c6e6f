from __future__ import annotations

from django.urls import path

from activities import apis

app_name = "activities"
urlpatterns = [
    path("activities/", apis.ActivitiesApi.as_view(), name="activities"),
    path("activities/<int:activity_id>/", apis.ActivityDetailApi.as_view(), name="activity"),
    path("activities/<int:activity_id>/publish/", apis.ActivityPublishApi.as_view(), name="publish"),
    path("activities/<int:activity_id>/cancel/", apis.ActivityCancelApi.as_view(), name="cancel"),
    path("activities/<int:activity_id>/join/", apis.ActivityJoinApi.as_view(), name="join"),
    path("activities/<int:activity_id>/leave/", apis.ActivityLeaveApi.as_view(), name="leave"),
    path("activities/<int:activity_id>/waitlist/", apis.ActivityWaitlistApi.as_view(), name="waitlist"),
    path(
        "activities/<int:activity_id>/participants/<int:user_id>/",
        apis.ActivityParticipantApi.as_view(), name="participant",
    ),
    path(
        "activities/<int:activity_id>/recommendations/",
        apis.ActivityRecommendationsApi.as_view(), name="recommendations",
    ),
    path("activities/<int:activity_id>/invitations/", apis.ActivityInvitationsApi.as_view(), name="invitations"),
    path("invitations/", apis.MyInvitationsApi.as_view(), name="my-invitations"),
    path("invitations/<int:invitation_id>/accept/", apis.InvitationAcceptApi.as_view(), name="invitation-accept"),
    path("invitations/<int:invitation_id>/decline/", apis.InvitationDeclineApi.as_view(), name="invitation-decline"),
    path("invitations/<int:invitation_id>/cancel/", apis.InvitationCancelApi.as_view(), name="invitation-cancel"),
]
