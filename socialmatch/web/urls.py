from __future__ import annotations

from django.urls import path

from socialmatch.web import views

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
]
