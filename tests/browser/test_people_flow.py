"""Flow 1 in a real browser: sign up, onboard, set the location on the map, see ranked people, connect."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from matching.models import Interaction
from matching.services.impressions import impressions_flush
from tests.browser.conftest import log_in, shot
from tests.conftest import make_person
from users.models import Availability, Connection, Profile, User

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_sign_up_onboard_and_connect_with_a_like_minded_neighbour(page, phone) -> None:  # type: ignore[no-untyped-def]
    # The neighbourhood around the map's starting view (Pittsburgh): one like-minded neighbour,
    # one who shares nothing, and one far away.
    make_person("maya", -79.9950, 40.4410, display_name="Maya", interests=["music", "reading", "nature"],
                birth_year=1993)
    make_person("tom", -79.9965, 40.4400, display_name="Tom", interests=["gaming", "nightlife"], birth_year=1970)
    make_person("faraway", -80.3000, 40.7000, display_name="Far Away", interests=["music", "reading"])

    page.goto("/")
    page.get_by_role("link", name="Sign up").first.click()
    page.get_by_label("Username").fill("dana")
    page.get_by_label("Email").fill("dana@example.org")
    page.get_by_label("Password", exact=True).fill("a-long-pass-2026")
    page.get_by_label("Password confirmation").fill("a-long-pass-2026")
    shot(page, "01-sign-up")
    page.get_by_role("button", name="Create my account").click()
    expect(page).to_have_url(re.compile(r"/me/profile/$"))

    page.get_by_label("Name shown to others").fill("Dana")
    page.get_by_label("Birth year").fill("1991")
    for interest in ("Music", "Reading", "Nature"):
        page.get_by_role("group", name="Interests").get_by_label(interest, exact=True).check()
    page.get_by_role("group", name="When you like to go out").get_by_label("Weekend").check()
    # Clicking the middle of the map (no tiles here) sets the location fields.
    page.locator("#map").click()
    expect(page.get_by_label("Latitude")).not_to_have_value("")
    lat = float(page.get_by_label("Latitude").input_value())
    lon = float(page.get_by_label("Longitude").input_value())
    assert abs(lat - 40.4406) < 0.01 and abs(lon + 79.9959) < 0.01
    page.get_by_label("Day", exact=True).first.select_option("Saturday")
    page.get_by_label("From", exact=True).first.fill("10:00")
    page.get_by_label("To", exact=True).first.fill("14:00")
    shot(page, "02-onboarding")
    page.get_by_role("button", name="Save my profile").click()

    expect(page).to_have_url(re.compile(r"/people/$"))
    expect(page.get_by_text("Your profile is saved.")).to_be_visible()
    cards = page.locator("li.person h2")
    expect(cards).to_have_text(["Maya", "Tom"])  # like-minded first; the far one is outside 5 km
    expect(page.locator("li.person").first).to_contain_text("You both like music, nature and reading")
    shot(page, "03-people-nearby")
    page.get_by_role("button", name="Connect with Maya").click()
    expect(page.get_by_text("Request sent to Maya.")).to_be_visible()

    dana = User.objects.get(username="dana")
    profile = Profile.objects.get(user=dana)
    assert profile.interests == ["music", "reading", "nature"] and profile.location is not None
    assert Availability.objects.filter(user=dana, weekday=5).exists()
    assert Connection.objects.filter(from_user=dana, to_user__username="maya", status="pending").exists()
    assert Interaction.objects.filter(actor=dana, kind="connect_request", target_user__username="maya").exists()
    impressions_flush()  # the worker writes them within seconds; this does it now
    assert Interaction.objects.filter(actor=dana, kind="impression", surface="nearby").count() >= 2

    # The same list on a phone-sized screen: one column, buttons large enough to tap.
    phone.context.add_cookies(page.context.cookies())
    phone.goto("/people/")
    expect(phone.locator("li.person h2")).to_have_text(["Tom"])  # Maya now has a pending request
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the page scrolls sideways on a phone"
    shot(phone, "04-people-on-a-phone")


def test_bad_coordinates_are_refused_with_a_message(page) -> None:  # type: ignore[no-untyped-def]
    User.objects.create_user("erin", password="a-long-pass-2026")
    log_in(page, "erin", "a-long-pass-2026")
    expect(page).to_have_url(re.compile(r"/me/profile/$"))
    page.get_by_label("Name shown to others").fill("Erin")
    page.get_by_label("Latitude").fill("95")
    page.get_by_label("Longitude").fill("10")
    page.get_by_role("button", name="Save my profile").click()
    expect(page.get_by_text("Ensure this value is less than or equal to 90.")).to_be_visible()
    assert not Profile.objects.filter(user__username="erin").exists()
