"""Staff's first page, the training-curve picture, and audiences built from a user selection."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.cache import cache
from django.urls import reverse

from activities.factories import InvitationFactory
from activities.models import Invitation
from matching.dashboard import dashboard_summary
from matching.models import Audience, EmbeddingSet, ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    cache.clear()  # the dashboard's counts are cached


@pytest.fixture
def version() -> ModelVersion:
    return ModelVersion.objects.create(
        name="v7", weights="models/v7.pt", sha256="0" * 64, config={}, feature_schema={}, is_active=True,
        feature_schema_version="user-features-1", metrics={"rank_val_recall@20": 0.4321, "ignored": 3.0},
        curves={"train_loss": [0.9, 0.7, 0.6], "val_loss": [0.95, 0.8, 0.75], "rank_val_recall": [0.2, 0.3, 0.43]},
    )


def test_dashboard_counts_people_invitations_and_the_serving_model(staff_client, alice, bob, version) -> None:  # type: ignore[no-untyped-def]
    InvitationFactory(status=Invitation.Status.ACCEPTED)
    InvitationFactory(status=Invitation.Status.DECLINED)
    InvitationFactory(status=Invitation.Status.PENDING)
    EmbeddingSet.objects.create(model_version=version, users=2, chunks_total=4, chunks_done=4, status="ready", index_kind="flat")
    summary = dashboard_summary(fresh=True)
    assert summary.invitations == 3 and summary.invitations_answered == 2 and summary.acceptance_percent == 50.0
    assert summary.model_version == "v7" and summary.model_headline == {"rank_val_recall@20": 0.4321}
    html = staff_client.get(reverse("admin:index")).content.decode()
    assert "At a glance" in html and "50% accepted (1 of 2 answered)" in html
    assert "rank_val_recall@20 0.432" in html and "4/4 chunks" in html and "index flat" in html
    assert reverse("admin:matching_modelversion_curves", args=[version.pk]) in html


def test_dashboard_without_a_model_says_rules_rank(staff_client) -> None:  # type: ignore[no-untyped-def]
    html = staff_client.get(reverse("admin:index")).content.decode()
    assert "none: ranking by rules" in html


def test_training_curves_are_a_png(staff_client, version) -> None:  # type: ignore[no-untyped-def]
    response = staff_client.get(reverse("admin:matching_modelversion_curves", args=[version.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response.content[:8] == b"\x89PNG\r\n\x1a\n" and len(response.content) > 5_000
    page = staff_client.get(reverse("admin:matching_modelversion_change", args=[version.pk])).content.decode()
    assert 'alt="Training curves of v7"' in page


def test_curves_are_for_staff_only(client, alice, version) -> None:  # type: ignore[no-untyped-def]
    client.force_login(alice)
    response = client.get(reverse("admin:matching_modelversion_curves", args=[version.pk]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_audience_action_asks_for_the_size_then_builds(staff_client, alice, bob, carol, staff) -> None:  # type: ignore[no-untyped-def]
    url = reverse("admin:users_user_changelist")
    picked = {"action": "build_audience", ACTION_CHECKBOX_NAME: [alice.pk, bob.pk]}
    form_page = staff_client.post(url, picked)
    assert form_page.status_code == 200 and "Build a look-alike audience" in form_page.content.decode()
    assert not Audience.objects.exists()
    bad = staff_client.post(url, {**picked, "apply": "1", "target_size": "0", "min_score": "-1"})
    assert "Ensure this value is greater than or equal to 1." in bad.content.decode()
    assert not Audience.objects.exists()
    done = staff_client.post(url, {**picked, "apply": "1", "target_size": "50", "min_score": "0.1", "exclude_seeds": "on",
                                   "name": "Sporty"})
    audience = Audience.objects.get()
    assert done.status_code == 302 and done["Location"] == reverse("admin:matching_audience_change", args=[audience.pk])
    assert sorted(audience.seed_user_ids) == sorted([alice.pk, bob.pk])
    assert (audience.name, audience.target_size, audience.min_score, audience.exclude_seeds) == ("Sporty", 50, 0.1, True)
    assert audience.created_by == staff
    page = staff_client.get(done["Location"]).content.decode()
    assert 'http-equiv="refresh"' in page  # pending: the page follows the build's progress


def test_the_version_list_says_why_a_candidate_was_not_activated(staff_client, version) -> None:  # type: ignore[no-untyped-def]
    refused = ModelVersion.objects.create(
        name="v8", weights="models/v8.pt", sha256="0" * 64, config={}, feature_schema={},
        feature_schema_version="user-features-1",
        notes="Not activated by the nightly gate: recall@20 0.3100 is worse than the active 0.3500 by more than 0.0100",
    )
    html = staff_client.get(reverse("admin:matching_modelversion_changelist")).content.decode()
    assert "Not activated by the nightly gate: recall@20 0.3100 is worse" in html
    assert refused.name in html
