"""Flow 2 in a real browser: an organiser creates an activity, the worker recommends participants,
the organiser invites two, and one of them logs in and accepts."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from playwright.sync_api import expect

from activities.models import Activity, Invitation, Participation
from tests.activities.helpers import next_saturday, person
from tests.browser.conftest import log_in, shot
from users.models import Notification, User

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.worker]

PASSWORD = "a-long-pass-2026"


def test_organiser_invites_recommended_people_and_one_accepts(page, celery_worker_process) -> None:  # type: ignore[no-untyped-def]
    organiser = person("olivia", interests=["sports", "music", "reading"], display_name="Olivia")
    person("kim", 0.02, interests=["sports", "music", "reading"], display_name="Kim")  # like-minded, 1.7 km
    person("ned", 0.003, interests=["sports", "gaming"], display_name="Ned")  # next door, shares sports
    person("bea", 0.004, free=False, display_name="Bea")  # not free then: never recommended
    person("far", 0.15, display_name="Far")  # 12.7 km: outside the 10 km radius
    for user in User.objects.all():
        user.set_password(PASSWORD)
        user.save()

    log_in(page, "olivia", PASSWORD)
    page.get_by_role("link", name="Activities").first.click()
    page.get_by_role("link", name="Organise an activity").click()
    starts = next_saturday()  # pages show and read times in the city's zone, as availability is
    page.get_by_label("Title").fill("Saturday doubles")
    page.get_by_label("Category").select_option("sports")
    page.get_by_label("Starts").fill(starts.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Ends").fill((starts + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Places").fill("4")
    shot(page, "20-organiser-creates")
    page.get_by_role("button", name="Create the activity").click()

    expect(page).to_have_url(re.compile(r"/activities/\d+/invite/$"))
    # The worker computes the recommendations after the commit; the page says so until then.
    for _ in range(60):
        if page.locator("table.recommendations tbody tr").count():
            break
        page.wait_for_timeout(1000)
        page.reload()
    rows = page.locator("table.recommendations tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Kim")  # like-minded first
    expect(rows.nth(1)).to_contain_text("Ned")
    expect(page.locator("table.recommendations")).not_to_contain_text("Bea")
    shot(page, "21-organiser-recommendations")
    page.get_by_label("Invite Kim").check()
    page.get_by_label("Invite Ned").check()
    page.get_by_role("button", name="Invite the selected people").click()
    expect(page.get_by_text("Invited 2 people.")).to_be_visible()
    shot(page, "22-organiser-invited")

    page.get_by_role("button", name="Log out").click()
    log_in(page, "kim", PASSWORD)
    expect(page.get_by_role("link", name=re.compile(r"Invitations"))).to_contain_text("1")  # unread badge
    page.get_by_role("link", name=re.compile(r"Invitations")).click()
    expect(page.locator("li.invitation")).to_contain_text("Saturday doubles")
    shot(page, "23-invitee-inbox")
    page.get_by_role("button", name="Accept the invitation to Saturday doubles").click()
    expect(page.get_by_text("You joined Saturday doubles. Have fun!")).to_be_visible()

    activity = Activity.objects.get(title="Saturday doubles")
    assert activity.organiser == organiser
    assert list(Participation.objects.filter(activity=activity).values_list("user__username", flat=True)) == ["kim"]
    assert dict(Invitation.objects.filter(activity=activity).values_list("invitee__username", "status")) == {
        "kim": "accepted", "ned": "pending"}
    assert Notification.objects.filter(user=organiser, kind="invitation_answered").exists()
