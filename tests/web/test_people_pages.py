"""The pages about people, through Django's test client: sign-up, profile, nearby, connections."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.urls import reverse

from matching.models import Interaction
from socialmatch.web import views
from socialmatch.web.forms import LOCATION_HALF
from tests.conftest import make_person
from tests.web.helpers import messages_of as _messages
from users.models import Availability, Block, Connection, Profile, User
from users.services import CONNECT_PENDING, CONNECTION_NOT_YOURS

pytestmark = pytest.mark.django_db


def _profile_post(**overrides: object) -> dict[str, object]:
    data = {
        "display_name": "Dana", "bio": "", "birth_year": "1994", "gender": "female", "occupation": "professional",
        "languages": "en, fr", "interests": ["sports", "music"], "activity_types": ["sports"],
        "place_types": ["park"], "time_preferences": ["weekend"], "discoverable": "on",
        "latitude": "40.4406", "longitude": "-79.9959",
        "slots-TOTAL_FORMS": "1", "slots-INITIAL_FORMS": "0", "slots-MIN_NUM_FORMS": "0", "slots-MAX_NUM_FORMS": "21",
        "slots-0-weekday": "5", "slots-0-start_time": "10:00", "slots-0-end_time": "14:00",
    }
    data.update(overrides)
    return data


def test_signup_logs_in_and_leads_to_the_profile(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post(reverse("web:signup"), {
        "username": "dana", "email": "dana@example.org", "password1": "a-long-pass-2026", "password2": "a-long-pass-2026",
    })
    assert response.status_code == 302 and response["Location"] == reverse("web:profile")
    assert client.get(reverse("web:profile")).status_code == 200
    assert User.objects.filter(username="dana").exists()


def test_signup_with_mismatched_passwords_shows_the_error_and_creates_nobody(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post(reverse("web:signup"), {
        "username": "dana", "email": "dana@example.org", "password1": "a-long-pass-2026", "password2": "other-pass-2026",
    })
    assert response.status_code == 200
    assert "The two password fields didn" in response.content.decode()
    assert not User.objects.filter(username="dana").exists()


def test_password_reset_sends_a_link(client) -> None:  # type: ignore[no-untyped-def]
    User.objects.create_user("dana", "dana@example.org", "a-long-pass-2026")
    response = client.post(reverse("password_reset"), {"email": "dana@example.org"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1 and "/accounts/reset/" in mail.outbox[0].body


def test_pages_for_people_need_a_login(client) -> None:  # type: ignore[no-untyped-def]
    for name in ("web:profile", "web:people", "web:connections"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert client.post(reverse("web:connect", args=[1])).status_code == 302
    assert not Connection.objects.exists()


def test_onboarding_saves_profile_location_and_availability(client) -> None:  # type: ignore[no-untyped-def]
    user = User.objects.create_user("dana", password="x")
    client.force_login(user)
    response = client.post(reverse("web:profile"), _profile_post())
    assert response.status_code == 302 and response["Location"] == reverse("web:people")
    profile = Profile.objects.get(user=user)
    assert profile.interests == ["sports", "music"] and profile.languages == ["en", "fr"]
    assert (round(profile.location.x, 4), round(profile.location.y, 4)) == (-79.9959, 40.4406)
    assert list(Availability.objects.filter(user=user).values_list("weekday", flat=True)) == [5]
    assert user.location_pings.count() == 1


@pytest.mark.parametrize(("overrides", "field", "text"), [
    ({"latitude": "95"}, "latitude", "less than or equal to 90"),
    ({"longitude": "-181"}, "longitude", "greater than or equal to -180"),
    ({"latitude": "north"}, "latitude", "Enter a number"),
    ({"longitude": ""}, None, LOCATION_HALF),
    ({"interests": ["sports", "surfing"]}, "interests", "Select a valid choice"),
    ({"languages": "english"}, "languages", "Not a two-letter language code: english."),
    ({"birth_year": "1850"}, "birth_year", "greater than or equal to 1900"),
    ({"slots-0-end_time": "09:00"}, None, "A slot must end after it starts."),
])
def test_bad_profile_input_is_explained_and_changes_nothing(client, overrides, field, text) -> None:  # type: ignore[no-untyped-def]
    user = User.objects.create_user("dana", password="x")
    client.force_login(user)
    response = client.post(reverse("web:profile"), _profile_post(**overrides))
    assert response.status_code == 200
    assert text in response.content.decode()
    if field:
        assert field in response.context["form"].errors
    assert not Profile.objects.filter(user=user).exists()
    assert not Availability.objects.filter(user=user).exists()


def test_overlapping_slots_are_refused_as_a_whole(client) -> None:  # type: ignore[no-untyped-def]
    user = User.objects.create_user("dana", password="x")
    client.force_login(user)
    response = client.post(reverse("web:profile"), _profile_post(**{
        "slots-TOTAL_FORMS": "2", "slots-1-weekday": "5", "slots-1-start_time": "13:00", "slots-1-end_time": "15:00",
    }))
    assert response.status_code == 200
    assert "Slots on Saturday overlap (10:00-14:00 and 13:00-15:00)." in response.content.decode()
    assert not Profile.objects.filter(user=user).exists() and not Availability.objects.exists()


def test_people_page_ranks_cards_without_anyone_s_coordinates(client, alice, bob, carol) -> None:  # type: ignore[no-untyped-def]
    client.force_login(alice)
    response = client.get(reverse("web:people"), {"radius_km": "5"})
    html = response.content.decode()
    assert response.status_code == 200
    names = re.findall(r"<h2><a [^>]*>(\w+)</a></h2>", html)
    assert names == ["Bob", "Carol"]  # bob: closer and shares sports; carol: further, shares reading
    assert "Ranked by shared interests" in html  # no model in this test: the rules say so
    assert "You both like sports" in html
    for person in (bob, carol):
        x, y = person.profile.location.x, person.profile.location.y
        assert f"{y:.3f}" not in html and f"{x:.3f}" not in html


def test_people_filter_keeps_people_sharing_the_interest(client, alice, bob, carol) -> None:  # type: ignore[no-untyped-def]
    client.force_login(alice)
    html = client.get(reverse("web:people"), {"radius_km": "5", "interest": "reading"}).content.decode()
    assert ">Carol<" in html and ">Bob<" not in html


def test_people_page_without_a_location_sends_to_the_profile(client) -> None:  # type: ignore[no-untyped-def]
    user = User.objects.create_user("dana", password="x")
    client.force_login(user)
    response = client.get(reverse("web:people"))
    assert response["Location"] == reverse("web:profile")
    assert _messages(response) == [views.NEEDS_LOCATION]


def test_connect_sends_a_request_and_logs_it_once(client, alice, bob) -> None:  # type: ignore[no-untyped-def]
    client.force_login(alice)
    response = client.post(reverse("web:connect", args=[bob.pk]), {"next": "/people/?radius_km=5"})
    assert response["Location"] == "/people/?radius_km=5"
    assert Connection.objects.get().status == "pending"
    assert Interaction.objects.filter(actor=alice, kind="connect_request", target_user=bob).count() == 1
    again = client.post(reverse("web:connect", args=[bob.pk]))
    assert _messages(again)[-1] == CONNECT_PENDING
    assert Interaction.objects.filter(kind="connect_request").count() == 1


def test_connect_refuses_an_outside_redirect(client, alice, bob) -> None:  # type: ignore[no-untyped-def]
    client.force_login(alice)
    response = client.post(reverse("web:connect", args=[bob.pk]), {"next": "//evil.example/"})
    assert response["Location"] == reverse("web:people")


def test_pass_is_logged(client, alice, bob) -> None:  # type: ignore[no-untyped-def]
    client.force_login(alice)
    client.post(reverse("web:pass", args=[bob.pk]))
    assert Interaction.objects.filter(actor=alice, kind="pass", target_user=bob).exists()


def test_only_the_receiver_answers_a_request(client, alice, bob, carol) -> None:  # type: ignore[no-untyped-def]
    request = Connection.objects.create(from_user=alice, to_user=carol)
    client.force_login(bob)
    response = client.post(reverse("web:connection-reply", args=[request.pk]), {"answer": "accept"})
    assert _messages(response) == [CONNECTION_NOT_YOURS]
    request.refresh_from_db()
    assert request.status == "pending"
    client.force_login(carol)
    client.post(reverse("web:connection-reply", args=[request.pk]), {"answer": "accept"})
    request.refresh_from_db()
    assert request.status == "accepted"
    assert Interaction.objects.filter(actor=carol, kind="accept", target_user=alice).exists()


def test_a_request_and_its_acceptance_are_notified(client, alice, bob) -> None:  # type: ignore[no-untyped-def]
    from users.models import Notification

    client.force_login(alice)
    client.post(reverse("web:connect", args=[bob.pk]))
    told = Notification.objects.get(user=bob)
    assert (told.kind, told.message, told.data) == ("connection_request", "Alice would like to connect with you.",
                                                    {"user_id": alice.pk})
    client.force_login(bob)
    client.post(reverse("web:connection-reply", args=[Connection.objects.get().pk]), {"answer": "accept"})
    back = Notification.objects.get(user=alice)
    assert back.kind == "connection_accepted" and back.message == "Bob accepted your request: you are connected."
    inbox = client.get(reverse("web:invitations")).content.decode()
    assert "Alice would like to connect with you." in inbox


def test_asking_someone_who_asked_you_connects_you(client, alice, bob) -> None:  # type: ignore[no-untyped-def]
    Connection.objects.create(from_user=bob, to_user=alice)
    client.force_login(alice)
    response = client.post(reverse("web:connect", args=[bob.pk]))
    assert Connection.objects.get().status == "accepted"
    assert _messages(response) == [views.CONNECTED.format(name="Bob")]


def test_block_removes_the_connection_and_hides_both_ways(client, alice, bob) -> None:  # type: ignore[no-untyped-def]
    Connection.objects.create(from_user=alice, to_user=bob, status="accepted")
    client.force_login(alice)
    client.post(reverse("web:block", args=[bob.pk]))
    assert not Connection.objects.exists() and Block.objects.filter(blocker=alice, blocked=bob).exists()
    client.force_login(bob)
    html = client.get(reverse("web:people"), {"radius_km": "5"}).content.decode()
    assert ">Alice<" not in html
    response = client.post(reverse("web:connect", args=[alice.pk]))
    assert not Connection.objects.exists()
    assert _messages(response) == ["This person cannot be connected with."]


def test_connections_page_lists_requests_and_friends(client, alice, bob, carol) -> None:  # type: ignore[no-untyped-def]
    Connection.objects.create(from_user=bob, to_user=alice)
    Connection.objects.create(from_user=alice, to_user=carol, status="accepted")
    dave = make_person("dave", -79.99, 40.44)
    Connection.objects.create(from_user=alice, to_user=dave)
    client.force_login(alice)
    response = client.get(reverse("web:connections"))
    assert [c.from_user for c in response.context["incoming"]] == [bob]
    assert response.context["friends"] == [carol]
    assert [c.to_user for c in response.context["sent"]] == [dave]


def test_saving_the_profile_again_records_no_new_location(client) -> None:  # type: ignore[no-untyped-def]
    user = User.objects.create_user("dana", password="x")
    client.force_login(user)
    client.post(reverse("web:profile"), _profile_post())
    client.post(reverse("web:profile"), _profile_post(bio="Now with a bio."))
    assert user.location_pings.count() == 1
    client.post(reverse("web:profile"), _profile_post(latitude="40.45"))
    assert user.location_pings.count() == 2


def test_a_jumping_query_point_gets_a_clear_429_page(client, alice, bob, settings) -> None:  # type: ignore[no-untyped-def]
    from django.core.cache import cache

    cache.clear()
    settings.NEARBY_MOVE_MAX_KM = 1.0
    client.force_login(alice)
    assert client.get(reverse("web:people")).status_code == 200
    Profile.objects.filter(user=alice).update(location=alice.profile.location.__class__(-80.5, 40.9, srid=4326))
    response = client.get(reverse("web:people"))
    assert response.status_code == 429
    assert "km" in _messages(response)[-1]


def test_the_people_page_shares_the_api_s_per_person_budget(client, alice, bob, settings) -> None:  # type: ignore[no-untyped-def]
    from django.core.cache import cache
    from rest_framework.settings import api_settings

    from matching.apis import NearbyThrottle

    cache.clear()
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "nearby": "3/min"}
    NearbyThrottle.THROTTLE_RATES = rates  # the class reads the rates when defined
    try:
        client.force_login(alice)
        assert client.get("/api/v1/matches/nearby/").status_code == 200
        assert client.get(reverse("web:people")).status_code == 200
        assert client.get(reverse("web:people")).status_code == 200
        refused = client.get(reverse("web:people"))
        assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
        assert _messages(refused)[-1].startswith("You have looked for people nearby very often")
    finally:
        NearbyThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
