from __future__ import annotations

from django.urls import path

from socialmatch.web import activities, views

app_name = "web"

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/signup/", views.signup, name="signup"),
    path("me/profile/", views.profile, name="profile"),
    path("people/", views.people, name="people"),
    path("people/<int:user_id>/", views.person, name="person"),
    path("people/<int:user_id>/connect/", views.connect, name="connect"),
    path("people/<int:user_id>/pass/", views.pass_person, name="pass"),
    path("people/<int:user_id>/block/", views.block, name="block"),
    path("people/<int:user_id>/unblock/", views.unblock, name="unblock"),
    path("connections/", views.connections, name="connections"),
    path("connections/<int:connection_id>/reply/", views.connection_reply, name="connection-reply"),
    path("activities/", activities.activity_list, name="activities"),
    path("activities/new/", activities.activity_create_view, name="activity-new"),
    path("activities/<int:activity_id>/", activities.activity_detail, name="activity"),
    path("activities/<int:activity_id>/edit/", activities.activity_edit_view, name="activity-edit"),
    path("activities/<int:activity_id>/join/", activities.activity_join, name="activity-join"),
    path("activities/<int:activity_id>/leave/", activities.activity_leave, name="activity-leave"),
    path("activities/<int:activity_id>/waitlist/", activities.activity_wait, name="activity-wait"),
    path("activities/<int:activity_id>/waitlist/leave/", activities.activity_unwait, name="activity-unwait"),
    path("activities/<int:activity_id>/cancel/", activities.activity_cancel_view, name="activity-cancel"),
    path("activities/<int:activity_id>/publish/", activities.activity_publish_view, name="activity-publish"),
    path("activities/<int:activity_id>/invite/", activities.activity_invite, name="activity-invite"),
    path("invitations/", activities.invitations_inbox, name="invitations"),
    path("invitations/<int:invitation_id>/answer/", activities.invitation_answer, name="invitation-answer"),
]
