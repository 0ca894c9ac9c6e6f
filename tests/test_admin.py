"""Every admin page a curator uses answers, and the bulk curation actions do what they say."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib import admin
from django.contrib.gis.geos import Point
from django.test import Client
from django.urls import reverse

from activities.factories import (
    ActivityFactory,
    CategoryFactory,
    InvitationFactory,
    ParticipationFactory,
    VenueFactory,
)
from activities.models import Activity, Invitation, Recommendation, WaitlistEntry
from matching.models import (
    Audience,
    AudienceMember,
    EmbeddingSet,
    Experiment,
    Interaction,
    ModelVersion,
    RankingConfig,
)
from users.factories import (
    AvailabilityFactory,
    BlockFactory,
    ConnectionFactory,
    ProfileFactory,
)
from users.models import LocationPing, Notification, User

pytestmark = pytest.mark.django_db


@pytest.fixture
def one_of_everything(staff: User) -> None:
    profile = ProfileFactory()
    LocationPing.objects.create(
        user=profile.user, point=Point(-79.99, 40.44, srid=4326), recorded_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    )
    AvailabilityFactory()
    ConnectionFactory()
    BlockFactory()
    venue = VenueFactory()
    venue.categories.add(CategoryFactory())
    invitation = InvitationFactory()
    ParticipationFactory()
    WaitlistEntry.objects.create(activity=invitation.activity, user=profile.user)
    Recommendation.objects.create(activity=invitation.activity, user=profile.user, rank=1, score=0.5)
    Notification.objects.create(user=profile.user, kind="invitation", message="Alice invites you.")
    Interaction.objects.create(
        actor=profile.user, kind="visit", target_venue=venue, occurred_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    )
    version = ModelVersion.objects.create(
        name="v1", weights="models/v1.pt", sha256="0" * 64, config={}, feature_schema={},
        feature_schema_version="user-features-1", metrics={"rank_val_recall@20": 0.5},
    )
    EmbeddingSet.objects.create(model_version=version, users=3, chunks_total=1)
    audience = Audience.objects.create(seed_user_ids=[profile.user.pk], target_size=5, model_version=version)
    AudienceMember.objects.create(audience=audience, user=profile.user, rank=1, score=0.9)
    now = dt.datetime.now(dt.UTC)
    Experiment.objects.create(name="e1", a_model=version, b_ranking=RankingConfig.objects.get(is_default=True),
                              starts_at=now, ends_at=now + dt.timedelta(days=7))


def admin_models() -> list[type]:
    return [m for m in admin.site._registry if m._meta.app_label in {"users", "activities", "matching"}]


@pytest.mark.parametrize("model", admin_models(), ids=lambda m: m._meta.label)
def test_changelist_and_change_page_answer_200(staff_client: Client, one_of_everything: None, model: type) -> None:
    meta = model._meta
    changelist = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
    assert staff_client.get(changelist).status_code == 200
    assert staff_client.get(changelist, {"q": "a"}).status_code == 200
    obj = model._default_manager.order_by("pk").first()
    change = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    response = staff_client.get(change)
    assert response.status_code == 200


def test_map_widget_is_served_from_our_static_files(staff_client: Client, one_of_everything: None) -> None:
    venue = VenueFactory()
    html = staff_client.get(reverse("admin:activities_venue_change", args=[venue.pk])).content.decode()
    assert "vendor/ol/ol.js" in html
    assert "cdn.jsdelivr.net" not in html


def test_non_staff_cannot_open_the_admin(alice: User) -> None:
    client = Client()
    client.force_login(alice)
    response = client.get(reverse("admin:users_user_changelist"))
    assert response.status_code == 302


def test_bulk_hide_and_suspend_users(staff_client: Client, alice: User, bob: User, staff: User) -> None:
    url = reverse("admin:users_user_changelist")
    staff_client.post(url, {"action": "hide", "_selected_action": [alice.pk]})
    staff_client.post(url, {"action": "suspend", "_selected_action": [bob.pk, staff.pk]})
    alice.refresh_from_db(), bob.refresh_from_db(), staff.refresh_from_db()
    assert alice.is_hidden and not alice.is_suspended
    assert bob.is_suspended and not bob.is_active
    # Staff are never suspended by a bulk action: an admin cannot lock every admin out.
    assert not staff.is_suspended and staff.is_active


def test_bulk_feature_users(staff_client: Client, alice: User) -> None:
    staff_client.post(reverse("admin:users_user_changelist"), {"action": "feature", "_selected_action": [alice.pk]})
    alice.refresh_from_db()
    assert alice.is_featured


def test_cancel_activity_cancels_pending_invitations(staff_client: Client) -> None:
    invitation = InvitationFactory()
    done = ActivityFactory(status=Activity.Status.COMPLETED)
    staff_client.post(
        reverse("admin:activities_activity_changelist"),
        {"action": "cancel", "_selected_action": [invitation.activity.pk, done.pk]},
    )
    invitation.refresh_from_db(), invitation.activity.refresh_from_db(), done.refresh_from_db()
    assert invitation.activity.status == Activity.Status.CANCELLED
    assert invitation.status == Invitation.Status.CANCELLED
    assert done.status == Activity.Status.COMPLETED


def test_feature_activity(staff_client: Client) -> None:
    activity = ActivityFactory()
    staff_client.post(
        reverse("admin:activities_activity_changelist"), {"action": "feature", "_selected_action": [activity.pk]}
    )
    activity.refresh_from_db()
    assert activity.is_featured
