"""The pages about activities, through Django's test client: browse, create, join, invite, answer."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from activities import errors
from activities.factories import ActivityFactory, ParticipationFactory
from activities.models import Activity, Invitation, Participation, Recommendation, WaitlistEntry
from socialmatch.web import activities as pages
from tests.web.helpers import messages_of as _messages
from users.models import Notification, User

pytestmark = pytest.mark.django_db


def _form(**overrides: object) -> dict[str, object]:
    start = timezone.localtime(timezone.now() + dt.timedelta(days=2)).replace(second=0, microsecond=0)
    data = {
        "title": "Saturday badminton", "description": "Doubles, all welcome.", "category": "sports", "subtype": "fitness",
        "skill_level": "3", "starts_at": start.strftime("%Y-%m-%dT%H:%M"),
        "ends_at": (start + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"), "capacity": "8",
        "recruit_radius_km": "10", "latitude": "40.4410", "longitude": "-79.9950", "publish": "on",
    }
    data.update(overrides)
    return data


def test_activity_pages_need_a_login(client) -> None:  # type: ignore[no-untyped-def]
    for url in (reverse("web:activities"), reverse("web:activity-new"), reverse("web:invitations")):
        assert client.get(url)["Location"].startswith(reverse("login"))


def test_browse_lists_published_activities_nearby_with_places_on_the_map(client, alice) -> None:  # type: ignore[no-untyped-def]
    near = ActivityFactory(title="Badminton near", location=alice.profile.location)
    ActivityFactory(title="Draft", status=Activity.Status.DRAFT, location=alice.profile.location)
    ActivityFactory(title="Far away", location=alice.profile.location.__class__(-81.5, 41.5, srid=4326))
    client.force_login(alice)
    response = client.get(reverse("web:activities"), {"radius_km": "10"})
    html = response.content.decode()
    assert [a.title for a in response.context["activities"]] == ["Badminton near"]
    assert f'"lat": {near.location.y}' in html and "Far away" not in html and "Draft" not in html


def test_browse_filters_by_category(client, alice) -> None:  # type: ignore[no-untyped-def]
    ActivityFactory(title="Badminton", location=alice.profile.location)
    ActivityFactory(title="Book club", category="reading", location=alice.profile.location)
    client.force_login(alice)
    response = client.get(reverse("web:activities"), {"radius_km": "10", "category": "reading"})
    assert [a.title for a in response.context["activities"]] == ["Book club"]


def test_create_publishes_and_leads_to_the_invite_page(client, alice) -> None:  # type: ignore[no-untyped-def]
    client.force_login(alice)
    response = client.post(reverse("web:activity-new"), _form())
    activity = Activity.objects.get()
    assert response["Location"] == reverse("web:activity-invite", args=[activity.pk])
    assert activity.organiser == alice and activity.status == "published"
    assert (round(activity.location.x, 4), round(activity.location.y, 4)) == (-79.995, 40.441)


@pytest.mark.parametrize(("overrides", "text"), [
    ({"starts_at": "2020-01-01T10:00", "ends_at": "2020-01-01T12:00"}, errors.START_IN_PAST),
    ({"ends_at": "2020-01-01T10:00"}, errors.END_BEFORE_START),
    ({"latitude": "95"}, "Ensure this value is less than or equal to 90."),
    ({"category": "surfing"}, "Select a valid choice."),
    ({"capacity": "0"}, "Ensure this value is greater than or equal to 1."),
])
def test_bad_activity_input_is_explained_and_creates_nothing(client, alice, overrides, text) -> None:  # type: ignore[no-untyped-def]
    client.force_login(alice)
    response = client.post(reverse("web:activity-new"), _form(**overrides))
    assert response.status_code == 200 and text in response.content.decode()
    assert not Activity.objects.exists()


def test_only_the_organiser_edits(client, alice, bob) -> None:  # type: ignore[no-untyped-def]
    activity = ActivityFactory(organiser=alice)
    client.force_login(bob)
    assert client.get(reverse("web:activity-edit", args=[activity.pk])).status_code == 403
    client.force_login(alice)
    response = client.post(reverse("web:activity-edit", args=[activity.pk]), _form(title="Renamed", capacity="12"))
    assert response["Location"] == reverse("web:activity", args=[activity.pk])
    activity.refresh_from_db()
    assert (activity.title, activity.capacity) == ("Renamed", 12)


def test_capacity_below_participants_is_refused_on_edit(client, alice) -> None:  # type: ignore[no-untyped-def]
    activity = ActivityFactory(organiser=alice, capacity=4)
    for _ in range(3):
        ParticipationFactory(activity=activity)
    client.force_login(alice)
    response = client.post(reverse("web:activity-edit", args=[activity.pk]), _form(capacity="2"))
    assert errors.CAPACITY_BELOW_PARTICIPANTS.format(count=3) in response.content.decode()
    activity.refresh_from_db()
    assert activity.capacity == 4


def test_join_then_full_offers_the_waitlist(client, alice, bob, carol) -> None:  # type: ignore[no-untyped-def]
    activity = ActivityFactory(capacity=1)
    client.force_login(bob)
    response = client.post(reverse("web:activity-join", args=[activity.pk]))
    assert _messages(response) == [pages.JOINED.format(title=activity.title)]
    client.force_login(carol)
    full = client.post(reverse("web:activity-join", args=[activity.pk]))
    assert _messages(full)[-1] == errors.FULL.format(capacity=1)
    page = client.get(reverse("web:activity", args=[activity.pk])).content.decode()
    assert "Join the waitlist" in page
    client.post(reverse("web:activity-wait", args=[activity.pk]))
    assert WaitlistEntry.objects.filter(activity=activity, user=carol).exists()
    client.force_login(bob)
    client.post(reverse("web:activity-leave", args=[activity.pk]))
    assert list(Participation.objects.filter(activity=activity).values_list("user", flat=True)) == [carol.pk]
    assert Notification.objects.filter(user=carol, kind="waitlist_promoted").exists()


def test_invite_page_is_the_organiser_s(client, alice, bob, carol) -> None:  # type: ignore[no-untyped-def]
    activity = ActivityFactory(organiser=alice)
    Recommendation.objects.create(activity=activity, user=bob, rank=1, score=0.9,
                                  reasons={"shared_interests": ["sports"], "distance": "< 1 km", "friends_taking_part": 0})
    Recommendation.objects.create(activity=activity, user=carol, rank=2, score=0.5, reasons={"distance": "1-2 km"})
    client.force_login(bob)
    assert client.get(reverse("web:activity-invite", args=[activity.pk])).status_code == 403
    client.force_login(alice)
    page = client.get(reverse("web:activity-invite", args=[activity.pk])).content.decode()
    assert "likes sports" in page and "&lt; 1 km away" in page
    response = client.post(reverse("web:activity-invite", args=[activity.pk]), {"user_ids": [str(bob.pk)]})
    assert _messages(response)[-1] == pages.INVITED.format(count=1, people="person")
    assert list(Invitation.objects.values_list("invitee", flat=True)) == [bob.pk]
    top = client.post(reverse("web:activity-invite", args=[activity.pk]), {"mode": "top", "top": "5"})
    assert _messages(top)[-1] == pages.INVITED.format(count=1, people="person")  # only carol was left
    nobody = client.post(reverse("web:activity-invite", args=[activity.pk]), {})
    assert _messages(nobody)[-1] == pages.PICK_SOMEONE


def test_invitee_accepts_from_the_inbox_and_a_full_activity_says_so(client, alice, bob, carol) -> None:  # type: ignore[no-untyped-def]
    activity = ActivityFactory(organiser=alice, capacity=1)
    mine = Invitation.objects.create(activity=activity, invitee=bob, invited_by=alice)
    theirs = Invitation.objects.create(activity=activity, invitee=carol, invited_by=alice)
    Notification.objects.create(user=bob, kind="invitation", message="Alice invites you", data={"activity_id": activity.pk})
    client.force_login(bob)
    inbox = client.get(reverse("web:invitations"))
    assert "Alice invites you" in inbox.content.decode() and inbox.context["unread"]
    assert not Notification.objects.filter(user=bob, read_at__isnull=True).exists()
    # Only the invitee answers.
    other = client.post(reverse("web:invitation-answer", args=[theirs.pk]), {"answer": "accept"})
    assert _messages(other) == [errors.ONLY_INVITEE]
    accepted = client.post(reverse("web:invitation-answer", args=[mine.pk]), {"answer": "accept"})
    assert _messages(accepted)[-1] == pages.ACCEPTED.format(title=activity.title)
    client.force_login(carol)
    full = client.post(reverse("web:invitation-answer", args=[theirs.pk]), {"answer": "accept"})
    assert _messages(full)[-1] == errors.FULL_FOR_INVITATION.format(capacity=1)
    theirs.refresh_from_db()
    assert theirs.status == "pending"


def test_unread_notifications_show_in_the_navigation(client, bob) -> None:  # type: ignore[no-untyped-def]
    Notification.objects.create(user=bob, kind="invitation", message="x")
    client.force_login(bob)
    html = client.get(reverse("web:connections")).content.decode()
    assert 'aria-label="1 new"' in html


def test_a_draft_is_only_for_its_organiser(client, alice, bob) -> None:  # type: ignore[no-untyped-def]
    draft = ActivityFactory(organiser=alice, status=Activity.Status.DRAFT)
    client.force_login(bob)
    assert client.get(reverse("web:activity", args=[draft.pk])).status_code == 404
    client.force_login(alice)
    client.post(reverse("web:activity-publish", args=[draft.pk]))
    draft.refresh_from_db()
    assert draft.status == "published"


def test_users_are_never_shown_coordinates_on_activity_pages(client, alice, bob) -> None:  # type: ignore[no-untyped-def]
    activity = ActivityFactory(organiser=bob, location=alice.profile.location.__class__(-79.9, 40.5, srid=4326))
    client.force_login(alice)
    html = client.get(reverse("web:activity", args=[activity.pk])).content.decode()
    x, y = bob.profile.location.x, bob.profile.location.y
    assert f"{y:.4f}" not in html and f"{x:.4f}" not in html
    assert User.objects.count() == 2


def test_pages_show_times_in_the_city_time_zone(client, alice, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AVAILABILITY_TIME_ZONE = "Etc/GMT+5"  # UTC-5, as the generated city
    starts = dt.datetime(2031, 6, 7, 15, 0, tzinfo=dt.UTC)
    activity = ActivityFactory(starts_at=starts, ends_at=starts + dt.timedelta(hours=2))
    client.force_login(alice)
    html = client.get(reverse("web:activity", args=[activity.pk])).content.decode()
    assert "Saturday 7 June 2031, 10:00" in html
