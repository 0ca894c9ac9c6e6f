"""Look-alike audiences: the API, the job (with progress), the CSV export, and bad input."""

from __future__ import annotations

import csv
import io

import pytest
from django.test import Client

from matching.models import Audience
from matching.services.audiences import audience_build
from tests.conftest import client_for
from tests.matching.test_refresh import served_city
from users.models import User

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_serving")]


def test_audience_end_to_end_ranks_the_seeds_group_first(staff: User) -> None:
    served_city()
    people = list(User.objects.filter(profile__isnull=False).order_by("pk").values_list("pk", flat=True))
    group_a, group_b = people[:8], people[8:16]
    client = client_for(staff)
    response = client.post("/api/v1/audiences/", {"seed_user_ids": group_a[:4], "target_size": 6, "name": "A"},
                           content_type="application/json")
    assert response.status_code == 201, response.json()
    audience_id = response.json()["id"]
    assert response.json()["status"] == "pending"
    audience_build(audience_id=audience_id)  # what the queued task runs
    body = client.get(f"/api/v1/audiences/{audience_id}/").json()
    assert body["status"] == "ready" and body["progress"] == 1.0 and body["model_version"] == "v1"
    members = [m["user_id"] for m in body["members"]]
    assert len(members) == 6 and not set(members) & set(group_a[:4])
    assert [m["rank"] for m in body["members"]] == [1, 2, 3, 4, 5, 6]
    scores = [m["score"] for m in body["members"]]
    assert scores == sorted(scores, reverse=True)
    export = client.get(f"/api/v1/audiences/{audience_id}/export.csv")
    rows = list(csv.reader(io.StringIO(export.content.decode())))
    assert rows[0] == ["rank", "user_id", "username", "score"] and len(rows) == 7
    assert group_b  # the other group exists to be ranked below


def test_audience_without_embeddings_fails_with_a_clear_error(staff: User, alice: User) -> None:
    audience = Audience.objects.create(seed_user_ids=[alice.pk], target_size=3, created_by=staff)
    with pytest.raises(RuntimeError, match="No embedding set is ready"):
        audience_build(audience_id=audience.pk)
    audience.refresh_from_db()
    assert audience.status == "failed" and "No embedding set" in audience.error


@pytest.mark.parametrize(
    "body",
    [
        {"seed_user_ids": [], "target_size": 5},
        {"seed_user_ids": [1], "target_size": 0},
        {"seed_user_ids": ["x"], "target_size": 5},
        {"seed_user_ids": [1], "target_size": 5, "min_score": 3},
    ],
)
def test_bad_audience_input_is_a_400_and_creates_nothing(staff: User, body: dict[str, object]) -> None:
    response = client_for(staff).post("/api/v1/audiences/", body, content_type="application/json")
    assert response.status_code == 400
    assert not Audience.objects.exists()


def test_unknown_seed_ids_are_named(staff: User) -> None:
    response = client_for(staff).post("/api/v1/audiences/", {"seed_user_ids": [987654321], "target_size": 5},
                                        content_type="application/json")
    assert response.status_code == 400 and "987654321" in response.json()["seed_user_ids"][0]
    assert not Audience.objects.exists()


def test_audiences_are_staff_only(alice: User) -> None:
    client = Client()
    client.force_login(alice)
    assert client.post("/api/v1/audiences/", {"seed_user_ids": [alice.pk], "target_size": 5},
                       content_type="application/json").status_code == 403


# -- seeds from a saved filter ------------------------------------------------------------------


def test_a_filter_of_interests_area_and_activity_picks_the_seeds(staff: User) -> None:
    import datetime as dt

    from django.utils import timezone

    from activities.factories import VenueFactory
    from matching.models import Interaction
    from tests.conftest import client_for, make_person

    near_music = make_person("near_music", -79.99, 40.44, interests=["music", "art"])
    make_person("near_sports", -79.99, 40.44, interests=["sports"])
    make_person("far_music", -75.0, 40.44, interests=["music"])
    idle_music = make_person("idle_music", -79.99, 40.45, interests=["music"])
    for days in (1, 2, 200):  # the visit 200 days ago is outside the 90-day window
        Interaction.objects.create(actor=near_music, kind="visit", target_venue=VenueFactory(),
                                   occurred_at=timezone.now() - dt.timedelta(days=days))
    # Impressions are what the system showed, not what the person did.
    Interaction.objects.create(actor=idle_music, kind="impression", target_user=near_music,
                               occurred_at=timezone.now())
    area = {"lon": -79.99, "lat": 40.44, "radius_km": 5}
    body = {"target_size": 5, "filter": {"interests": ["music"], "area": area}}
    created = client_for(staff).post("/api/v1/audiences/", body, content_type="application/json")
    assert created.status_code == 201, created.json()
    audience = Audience.objects.get(pk=created.json()["id"])
    assert audience.seed_user_ids == sorted([near_music.pk, idle_music.pk])
    body["filter"]["min_activity"] = 2
    created = client_for(staff).post("/api/v1/audiences/", body, content_type="application/json")
    assert created.status_code == 201 and created.json()["seeds"] == 1
    assert Audience.objects.get(pk=created.json()["id"]).seed_user_ids == [near_music.pk]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"target_size": 5, "filter": {}}, "filter"),
        ({"target_size": 5, "filter": {"interests": ["knitting"]}}, "filter"),
        ({"target_size": 5, "filter": {"area": {"lon": -79.99, "radius_km": 5}}}, "filter"),
        ({"target_size": 5, "filter": {"area": {"lon": -79.99, "lat": 40.44, "radius_km": 0}}},
         "filter"),
        ({"target_size": 5, "filter": {"min_activity": -1}}, "filter"),
        ({"target_size": 5, "filter": {"interests": ["music"]}, "seed_user_ids": [1]},
         "non_field_errors"),
        ({"target_size": 5}, "non_field_errors"),
        ({"target_size": 5, "filter": {"interests": ["gaming"]}}, "filter"),  # nobody matches
    ],
)
def test_bad_filters_are_a_400_and_create_nothing(
    staff: User, body: dict[str, object], field: str,
) -> None:
    from tests.conftest import make_person

    make_person("music_fan", -79.99, 40.44, interests=["music"])
    response = client_for(staff).post("/api/v1/audiences/", body, content_type="application/json")
    assert response.status_code == 400, response.json()
    assert field in response.json()
    assert not Audience.objects.exists()
