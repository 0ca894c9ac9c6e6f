"""Creating, changing, cancelling, browsing and reading activities through /api/v1/activities/."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from activities import errors
from activities.errors import ActivityPermissionDenied
from activities.factories import ParticipationFactory
from activities.models import Activity
from activities.services import activity_cancel, activity_update
from tests.activities.helpers import PARK_LAT, PARK_LON, new_activity, next_saturday, person
from tests.conftest import client_for
from users.models import Notification, User

pytestmark = pytest.mark.django_db
URL = "/api/v1/activities/"


def valid_body(**overrides: object) -> dict[str, object]:
    starts = next_saturday()
    body: dict[str, object] = {
        "title": "Badminton doubles", "category": "sports", "subtype": "fitness", "skill_level": 3,
        "lat": PARK_LAT, "lon": PARK_LON, "starts_at": starts.isoformat(),
        "ends_at": (starts + dt.timedelta(hours=2)).isoformat(), "capacity": 8,
    }
    body.update(overrides)
    return body


def test_organiser_creates_a_published_activity(alice: User) -> None:
    response = client_for(alice).post(URL, valid_body(), content_type="application/json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "published" and body["participant_count"] == 0 and body["places_left"] == 8
    assert body["organiser"] == {"id": alice.pk, "display_name": "Alice"}
    assert body["viewer"]["is_organiser"] is True and body["viewer"]["joined"] is False
    assert body["location"] == {"lat": PARK_LAT, "lon": PARK_LON}


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"starts_at": "2020-01-01T10:00:00Z", "ends_at": "2020-01-01T12:00:00Z"}, "starts_at", errors.START_IN_PAST),
        ({"ends_at": "BEFORE"}, "ends_at", errors.END_BEFORE_START),
        ({"category": "quidditch"}, "category", None),
        ({"subtype": "juggling"}, "subtype", None),
        ({"lat": 95}, "lat", None),
        ({"lon": -181}, "lon", None),
        ({"lat": "north"}, "lat", None),
        ({"capacity": 0}, "capacity", None),
        ({"skill_level": 6}, "skill_level", None),
        ({"title": ""}, "title", None),
        ({"venue_id": 987654}, "venue_id", "No such venue."),
    ],
)
def test_bad_input_is_a_400_with_field_errors_and_creates_nothing(
    alice: User, overrides: dict[str, object], field: str, message: str | None,
) -> None:
    body = valid_body(**overrides)
    if body.get("ends_at") == "BEFORE":
        body["ends_at"] = (next_saturday() - dt.timedelta(hours=1)).isoformat()
    response = client_for(alice).post(URL, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    if message:
        assert message in response.json()[field]
    assert not Activity.objects.exists()


def test_capacity_below_the_participants_is_refused_and_changes_nothing(alice: User) -> None:
    activity = new_activity(alice, capacity=5)
    for i in range(3):
        ParticipationFactory(activity=activity, user=person(f"p{i}"))
    response = client_for(alice).patch(f"{URL}{activity.pk}/", {"capacity": 2, "title": "Renamed"},
                                       content_type="application/json")
    assert response.status_code == 400
    assert response.json()["capacity"] == [errors.CAPACITY_BELOW_PARTICIPANTS.format(count=3)]
    activity.refresh_from_db()
    assert activity.capacity == 5 and activity.title == "Badminton doubles"


def test_update_moving_the_start_into_the_past_is_refused(alice: User) -> None:
    activity = new_activity(alice)
    with pytest.raises(ValidationError) as caught:
        activity_update(actor=alice, activity=activity, starts_at=timezone.now() - dt.timedelta(hours=1))
    assert caught.value.message_dict["starts_at"] == [errors.START_IN_PAST]
    activity.refresh_from_db()
    assert activity.starts_at > timezone.now()


def test_only_the_organiser_or_staff_edits_and_cancels(alice: User, bob: User, staff: User) -> None:
    activity = new_activity(alice)
    assert client_for(bob).patch(f"{URL}{activity.pk}/", {"title": "Mine now"},
                                 content_type="application/json").status_code == 403
    assert client_for(bob).post(f"{URL}{activity.pk}/cancel/").status_code == 403
    with pytest.raises(ActivityPermissionDenied):
        activity_update(actor=bob, activity=activity, title="Mine now")
    with pytest.raises(ActivityPermissionDenied):
        activity_cancel(actor=bob, activity=activity)
    assert client_for(alice).patch(f"{URL}{activity.pk}/", {"title": "Doubles"},
                                   content_type="application/json").json()["title"] == "Doubles"
    assert client_for(staff).patch(f"{URL}{activity.pk}/", {"title": "Moderated"},
                                   content_type="application/json").status_code == 200
    assert client_for(staff).post(f"{URL}{activity.pk}/cancel/").json()["status"] == "cancelled"
    activity.refresh_from_db()
    assert activity.title == "Moderated" and activity.status == "cancelled"


def test_cancelling_tells_participants_and_closes_pending_invitations(alice: User, bob: User, carol: User) -> None:
    from activities.factories import InvitationFactory

    activity = new_activity(alice)
    ParticipationFactory(activity=activity, user=bob)
    invitation = InvitationFactory(activity=activity, invitee=carol)
    client_for(alice).post(f"{URL}{activity.pk}/cancel/")
    invitation.refresh_from_db()
    assert invitation.status == "cancelled"
    told = set(Notification.objects.filter(kind="activity_cancelled").values_list("user_id", flat=True))
    assert told == {bob.pk, carol.pk}
    assert client_for(alice).post(f"{URL}{activity.pk}/cancel/").status_code == 409


def test_nearby_lists_published_upcoming_activities_by_radius_category_time_and_skill(alice: User, bob: User) -> None:
    near = new_activity(alice, title="near")
    far = new_activity(alice, title="far", location=near.location.__class__(PARK_LON + 0.1, PARK_LAT, srid=4326))
    music = new_activity(alice, title="music", category="music", subtype="")
    later = new_activity(alice, title="later", starts_at=next_saturday() + dt.timedelta(days=7),
                         ends_at=next_saturday() + dt.timedelta(days=7, hours=2), skill_level=5)
    new_activity(alice, title="draft", publish=False)
    cancelled = new_activity(alice, title="cancelled")
    activity_cancel(actor=alice, activity=cancelled)
    client = client_for(bob)

    def titles(**params: object) -> list[str]:
        response = client.get(URL, {"lat": PARK_LAT, "lon": PARK_LON, **params})
        assert response.status_code == 200, response.json()
        return [a["title"] for a in response.json()["results"]]

    assert set(titles(radius_km=5)) == {"near", "music", "later"}
    assert set(titles(radius_km=20)) == {"near", "music", "later", "far"}
    assert titles(radius_km=20, order="distance")[-1] == "far"
    assert titles(radius_km=20, order="start")[-1] == "later"
    assert set(titles(category="music")) == {"music"}
    assert set(titles(skill_level=5)) == {"later"}
    cutoff = (next_saturday() + dt.timedelta(days=1)).isoformat()
    assert "later" not in titles(starts_before=cutoff)
    assert titles(starts_after=cutoff) == ["later"]
    first = client.get(URL, {"lat": PARK_LAT, "lon": PARK_LON + 0.1, "radius_km": 1}).json()["results"][0]
    assert first["title"] == far.title and first["distance_km"] == 0.0 and first["participant_count"] == 0
    assert music and later


@pytest.mark.parametrize(
    ("params", "field"),
    [({"lat": "95", "lon": "0"}, "lat"), ({"lat": "40"}, "lat"), ({"radius_km": "0"}, "radius_km"),
     ({"category": "quidditch"}, "category"), ({"order": "random"}, "order"), ({"starts_after": "soon"}, "starts_after")],
)
def test_bad_search_input_is_a_400(bob: User, params: dict[str, str], field: str) -> None:
    response = client_for(bob).get(URL, params)
    assert response.status_code == 400 and field in response.json()


def test_nearby_without_a_point_uses_the_viewers_location_and_asks_for_one_otherwise(alice: User, bob: User) -> None:
    new_activity(alice)
    assert len(client_for(bob).get(URL).json()["results"]) == 1
    nowhere = User.objects.create(username="nowhere")
    response = client_for(nowhere).get(URL)
    assert response.status_code == 400 and "Set your location" in response.json()["detail"]


def test_detail_has_participant_count_and_the_viewers_state(alice: User, bob: User, carol: User) -> None:
    from activities.factories import InvitationFactory

    activity = new_activity(alice)
    ParticipationFactory(activity=activity, user=bob)
    invitation = InvitationFactory(activity=activity, invitee=carol)
    body = client_for(bob).get(f"{URL}{activity.pk}/").json()
    assert body["participant_count"] == 1 and body["places_left"] == 9
    assert body["viewer"] == {"is_organiser": False, "joined": True, "invitation_id": None,
                              "invitation_status": None, "waitlist_position": None}
    carol_view = client_for(carol).get(f"{URL}{activity.pk}/").json()["viewer"]
    assert carol_view["invitation_id"] == invitation.pk and carol_view["invitation_status"] == "pending"
    assert carol_view["joined"] is False


def test_the_organisers_home_never_appears_only_the_place(alice: User, bob: User) -> None:
    from django.contrib.gis.geos import Point

    new_activity(alice, location=Point(PARK_LON + 0.03, PARK_LAT + 0.01, srid=4326))
    home = alice.profile.location
    text = client_for(bob).get(URL, {"radius_km": 10}).content.decode()
    assert json.loads(text)["results"]
    for needle in (f"{home.x:.4f}", f"{home.y:.4f}", "profile"):
        assert needle not in text


def test_drafts_are_invisible_to_others_and_publishable_by_the_organiser(alice: User, bob: User) -> None:
    draft = new_activity(alice, publish=False)
    assert client_for(bob).get(f"{URL}{draft.pk}/").status_code == 404
    assert client_for(bob).post(f"{URL}{draft.pk}/join/").status_code == 404
    assert client_for(alice).post(f"{URL}{draft.pk}/publish/").json()["status"] == "published"
    assert client_for(bob).get(f"{URL}{draft.pk}/").status_code == 200


def test_anonymous_requests_are_refused() -> None:
    from django.test import Client

    assert Client().get(URL).status_code in (401, 403)
    assert Client().post(URL, valid_body(), content_type="application/json").status_code in (401, 403)
