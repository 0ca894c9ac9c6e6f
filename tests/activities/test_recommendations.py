"""Participant recommendations: who is eligible, how they rank, the organiser-only endpoint, the
model path, and the Celery flow end to end (publish, join, debounce, expiry) on a real worker."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.contrib.gis.geos import Point
from django.core.cache import cache
from django.utils import timezone

from activities import errors
from activities.factories import ActivityFactory, InvitationFactory, ParticipationFactory
from activities.models import Activity, Invitation
from activities.services import participation_join, waitlist_join
from activities.tasks import invitations_expire_task
from matching.services.activity_recommendations import (
    activity_recommendations_compute,
    activity_recommendations_schedule,
    local_slot,
)
from tests.activities.helpers import (
    PARK_LAT,
    PARK_LON,
    new_activity,
    next_saturday,
    person,
    wait_for,
)
from tests.conftest import client_for
from users.factories import AvailabilityFactory, BlockFactory, UserFactory
from users.models import Profile, User

pytestmark = pytest.mark.django_db
URL = "/api/v1/activities/"


def ranked(activity: Activity) -> list[str]:
    return list(activity.recommendations.order_by("rank").values_list("user__username", flat=True))


def eligible_and_ineligible(organiser: User, activity: Activity) -> None:
    """Three eligible people (kindred ranks first) and one of each kind of ineligible person."""
    person("kindred", 0.02, interests=["sports", "music", "reading"])  # 1.7 km, shares all of alice's
    person("neighbour", 0.003, interests=["sports", "gaming"])  # 250 m, shares sports only
    person("fan", 0.05, interests=["sports"], activity_types=["sports"])  # 4 km
    person("too_far", 0.15)  # 12.7 km, beyond the 10 km radius
    person("uninterested", 0.004, interests=["art"])
    person("busy", 0.004, free=False)
    AvailabilityFactory(user=User.objects.get(username="busy"), weekday=5, start_time="11:00", end_time="14:00")
    person("weekday_only", 0.004, free=False)
    AvailabilityFactory(user=User.objects.get(username="weekday_only"), weekday=2, start_time="09:00", end_time="13:00")
    expert = person("expert", 0.004)  # joined a level-5 sports activity: skill 5 against 3
    past = ActivityFactory(organiser=UserFactory(username="coach"), category="sports", skill_level=5)
    ParticipationFactory(activity=past, user=expert)
    beginner_ok = person("improver", 0.006)  # level 4 in sports: within one
    ParticipationFactory(activity=ActivityFactory(organiser=past.organiser, category="sports", skill_level=4),
                         user=beginner_ok)
    BlockFactory(blocker=organiser, blocked=person("blocked", 0.004))
    BlockFactory(blocker=person("blocker", 0.004), blocked=organiser)
    hidden, suspended = person("hidden", 0.004), person("suspended", 0.004)
    User.objects.filter(pk=hidden.pk).update(is_hidden=True)
    User.objects.filter(pk=suspended.pk).update(is_suspended=True)
    private = person("private", 0.004)
    Profile.objects.filter(user=private).update(discoverable=False)
    InvitationFactory(activity=activity, invitee=person("invited", 0.004))
    ParticipationFactory(activity=activity, user=person("joined", 0.004))


INELIGIBLE = {"too_far", "uninterested", "busy", "weekday_only", "expert", "blocked", "blocker", "hidden",
              "suspended", "private", "invited", "joined"}


def test_rules_rank_like_minded_nearby_available_people_first_and_leave_out_the_ineligible(alice: User) -> None:
    activity = new_activity(alice, publish=False)
    eligible_and_ineligible(alice, activity)
    Activity.objects.filter(pk=activity.pk).update(status="published")
    run = activity_recommendations_compute(activity_id=activity.pk)
    assert run is not None and run.ranker == "rules" and run.model_version == ""
    names = ranked(activity)
    assert names[0] == "kindred"
    assert set(names) == {"kindred", "neighbour", "fan", "improver"}
    assert not set(names) & INELIGIBLE
    first = activity.recommendations.get(rank=1)
    assert first.reasons["shared_interests"] == ["music", "reading", "sports"]
    assert first.reasons["distance"] == "1-2 km" and first.reasons["available"] is True
    improver = activity.recommendations.get(user__username="improver")
    assert improver.reasons["skill_level"] == 4
    activity.refresh_from_db()
    assert activity.recommendation_ranker == "rules" and activity.recommended_at is not None
    assert activity.recommendation_runs == 1


def test_participants_are_seeds_and_friends_taking_part_are_a_reason(alice: User) -> None:
    from users.factories import ConnectionFactory

    activity = new_activity(alice)
    art_lover = person("art_lover", 0.001, interests=["art", "film"])
    ParticipationFactory(activity=activity, user=art_lover)
    sporty_artist = person("sporty_artist", 0.03, interests=["sports", "art", "film"])
    person("plain", 0.03, interests=["sports", "cooking"])
    ConnectionFactory(from_user=art_lover, to_user=sporty_artist)
    activity_recommendations_compute(activity_id=activity.pk)
    top = activity.recommendations.get(rank=1)
    assert top.user == sporty_artist
    assert top.reasons["friends_taking_part"] == 1 and "art" in top.reasons["shared_interests"]


def test_nothing_is_computed_for_drafts_cancelled_or_started_activities(alice: User) -> None:
    person("kindred", 0.01)
    draft = new_activity(alice, publish=False)
    assert activity_recommendations_compute(activity_id=draft.pk) is None
    started = new_activity(alice)
    Activity.objects.filter(pk=started.pk).update(starts_at=timezone.now() - dt.timedelta(minutes=5))
    assert activity_recommendations_compute(activity_id=started.pk) is None
    assert activity_recommendations_compute(activity_id=987654) is None


def test_availability_is_read_in_the_city_time_zone(alice: User) -> None:
    activity = new_activity(alice)
    # Saturday 10:00-12:00 local (UTC-5) is Saturday 15:00-17:00 UTC.
    assert activity.starts_at.astimezone(dt.UTC).hour == 15
    assert local_slot(activity) == (5, dt.time(10, 0), dt.time(12, 0))


def test_recommendations_are_for_the_organiser_and_staff_only(alice: User, bob: User, staff: User) -> None:
    activity = new_activity(alice)
    person("kindred", 0.01)
    participation_join(actor=bob, activity=activity)
    activity_recommendations_compute(activity_id=activity.pk)
    invitee = person("invitee", 0.01)
    InvitationFactory(activity=activity, invitee=invitee)
    for someone in (bob, invitee, person("stranger", 0.2)):
        response = client_for(someone).get(f"{URL}{activity.pk}/recommendations/")
        assert response.status_code == 403
        assert response.json()["detail"] == errors.ONLY_ORGANISER_SEES_RECOMMENDATIONS
    assert client_for(staff).get(f"{URL}{activity.pk}/recommendations/").status_code == 200
    body = client_for(alice).get(f"{URL}{activity.pk}/recommendations/").json()
    assert body["ranker"] == "rules" and body["computed_at"] and body["stale"] is False
    assert [r["user"]["display_name"] for r in body["results"]] == ["Kindred"]


def test_recommendations_carry_no_coordinates_of_anyone(alice: User) -> None:
    activity = new_activity(alice, location=Point(PARK_LON + 0.03, PARK_LAT + 0.01, srid=4326))
    kindred = person("kindred", 0.0123)
    activity_recommendations_compute(activity_id=activity.pk)
    text = client_for(alice).get(f"{URL}{activity.pk}/recommendations/").content.decode()
    assert json.loads(text)["results"][0]["user"]["id"] == kindred.pk
    home = kindred.profile.location
    for needle in (f"{home.x:.3f}", f"{home.y:.3f}", "lat", "lon", "location", "distance_m"):
        assert needle not in text


def test_a_burst_of_joins_schedules_one_recomputation(alice: User) -> None:
    activity = new_activity(alice)
    cache.clear()
    assert activity_recommendations_schedule(activity_id=activity.pk, countdown=30) is True
    for _ in range(9):
        assert activity_recommendations_schedule(activity_id=activity.pk, countdown=30) is False


def test_with_a_served_model_the_seed_set_attention_and_the_ranking_head_rank(fresh_serving: None) -> None:
    from tests.matching.test_refresh import served_city

    served_city()
    people = list(User.objects.filter(profile__isnull=False).order_by("pk"))
    group_a = people[:8]
    for someone in people:
        AvailabilityFactory(user=someone, weekday=5, start_time="08:00", end_time="18:00")
    Profile.objects.filter(user__in=people).update(interests=["sports", "music"])
    organiser = group_a[0]
    activity = new_activity(organiser, location=Point(-80.04, 40.44, srid=4326), recruit_radius_km=30.0)
    participation_join(actor=group_a[1], activity=activity)
    run = activity_recommendations_compute(activity_id=activity.pk)
    assert run is not None and run.ranker == "model" and run.model_version == "v1"
    assert {"attention", "ranking_head"} <= set(run.timings)
    recs = list(activity.recommendations.order_by("rank"))
    assert {r.user_id for r in recs} == {p.pk for p in people[2:]}
    scores = [r.score for r in recs]
    assert scores == sorted(scores, reverse=True)
    body = client_for(organiser).get(f"{URL}{activity.pk}/recommendations/").json()
    assert body["ranker"] == "model" and body["model_version"] == "v1"
    # The seeds' own group, friends and neighbours, comes before the other side of town.
    top_half = {r.user_id for r in recs[:6]}
    assert len(top_half & {p.pk for p in group_a}) >= 4
    assert np.isfinite(scores).all()


# End to end through a real Celery worker. transaction=True: the worker must see committed rows.


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_publishing_queues_recommendations_that_the_worker_computes(celery_worker_process: object) -> None:
    organiser = person("organiser", interests=["sports", "music", "reading"])
    person("kindred", 0.02, interests=["sports", "music", "reading"])
    person("neighbour", 0.003, interests=["sports", "gaming"])
    person("busy", 0.003, free=False)
    person("too_far", 0.15)
    response = client_for(organiser).post(URL, {
        "title": "Saturday doubles", "category": "sports", "lat": PARK_LAT, "lon": PARK_LON,
        "starts_at": next_saturday().isoformat(), "ends_at": (next_saturday() + dt.timedelta(hours=2)).isoformat(),
    }, content_type="application/json")
    assert response.status_code == 201
    activity_id = response.json()["id"]
    url = f"{URL}{activity_id}/recommendations/"
    wait_for(lambda: client_for(organiser).get(url).json()["computed_at"] is not None)
    body = client_for(organiser).get(url).json()
    assert body["ranker"] == "rules" and body["stale"] is False
    assert [r["user"]["display_name"] for r in body["results"]] == ["Kindred", "Neighbour"]
    # Invite the best, who accepts: they join, and the join refreshes the list without them.
    invite = client_for(organiser).post(f"{URL}{activity_id}/invitations/", {"top": 1}, content_type="application/json")
    assert invite.status_code == 201
    kindred = User.objects.get(username="kindred")
    accepted = client_for(kindred).post(f"/api/v1/invitations/{invite.json()[0]['id']}/accept/")
    assert accepted.status_code == 200
    detail = client_for(kindred).get(f"{URL}{activity_id}/").json()
    assert detail["participant_count"] == 1 and detail["viewer"]["joined"] is True


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_ten_joins_within_the_window_cause_one_recomputation(celery_worker_process: object, settings: object) -> None:
    settings.ACTIVITY_RECOMMENDATION_DEBOUNCE_SECONDS = 3  # type: ignore[attr-defined]
    organiser = person("organiser")
    for i in range(3):
        person(f"candidate{i}", 0.001 * (i + 1))
    activity = new_activity(organiser, capacity=20)
    wait_for(lambda: Activity.objects.get(pk=activity.pk).recommendation_runs == 1)
    joiners = [UserFactory(username=f"joiner{i}") for i in range(10)]
    for joiner in joiners:
        participation_join(actor=joiner, activity=activity)
    wait_for(lambda: Activity.objects.get(pk=activity.pk).recommendation_runs == 2, timeout=30)
    import time

    time.sleep(settings.ACTIVITY_RECOMMENDATION_DEBOUNCE_SECONDS + 2)  # type: ignore[attr-defined]
    assert Activity.objects.get(pk=activity.pk).recommendation_runs == 2
    # The recomputation saw every join: the ten are seeds now, and never recommended.
    assert not Activity.objects.get(pk=activity.pk).recommendations.filter(user__in=joiners).exists()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_worker_expires_pending_invitations_of_started_activities(celery_worker_process: object) -> None:
    organiser = person("organiser")
    started, upcoming = new_activity(organiser), new_activity(organiser)
    invitee = person("invitee")
    late = InvitationFactory(activity=started, invitee=invitee)
    early = InvitationFactory(activity=upcoming, invitee=invitee)
    Activity.objects.filter(pk=started.pk).update(starts_at=timezone.now() - dt.timedelta(minutes=1))
    assert invitations_expire_task.delay().get(timeout=60) == 1
    assert Invitation.objects.get(pk=late.pk).status == "expired"
    assert Invitation.objects.get(pk=early.pk).status == "pending"


def test_beat_sweeps_expired_invitations_every_minute() -> None:
    from socialmatch.celery import app

    entry = django_settings.CELERY_BEAT_SCHEDULE["activities-expire-invitations"]
    assert entry["task"] == "activities.tasks.invitations_expire_task" and entry["schedule"] == 60.0
    app.loader.import_default_modules()
    assert entry["task"] in app.tasks


def test_joining_a_waitlisted_persons_place_does_not_recommend_them(alice: User, bob: User) -> None:
    activity = new_activity(alice, capacity=1)
    participation_join(actor=bob, activity=activity)
    waiting = person("waiting", 0.01)
    waitlist_join(actor=waiting, activity=activity)
    activity_recommendations_compute(activity_id=activity.pk)
    assert not activity.recommendations.filter(user=waiting).exists()


def test_a_new_model_going_live_queues_the_upcoming_activities_recommendations(alice: User) -> None:
    from django.core.cache import cache

    from activities.factories import ActivityFactory
    from matching.services.activity_recommendations import (
        _pending_key,
        activity_recommendations_refresh_upcoming,
    )

    cache.clear()
    soon = ActivityFactory(organiser=alice, starts_at=timezone.now() + dt.timedelta(days=2))
    later = ActivityFactory(organiser=alice, starts_at=timezone.now() + dt.timedelta(days=60))
    draft = ActivityFactory(organiser=alice, status=Activity.Status.DRAFT)
    cancelled = ActivityFactory(organiser=alice, status=Activity.Status.CANCELLED)
    assert activity_recommendations_refresh_upcoming() == 1
    assert cache.get(_pending_key(soon.pk)) == 1
    assert all(cache.get(_pending_key(a.pk)) is None for a in (later, draft, cancelled))
    assert activity_recommendations_refresh_upcoming() == 0  # already pending: not queued twice


def test_the_new_model_s_recomputations_go_to_the_bulk_queue_and_a_join_s_does_not(
    alice: User, settings: object, django_capture_on_commit_callbacks: object,
) -> None:
    """Up to 2,000 of them, 1 to 2 s each at a million people: on the default queue they held
    the impression flushes behind them for an hour."""
    import os

    from django.core.cache import cache

    from activities.factories import ActivityFactory
    from matching.services.activity_recommendations import (
        activity_recommendations_refresh_upcoming,
        activity_recommendations_schedule,
    )

    cache.clear()
    bulk, default = f"test-bulk-{os.getpid()}", f"test-default-{os.getpid()}"
    settings.CELERY_BULK_QUEUE = bulk  # type: ignore[attr-defined]
    from socialmatch.celery import app, queue_purge

    app.conf.task_default_queue, before = default, app.conf.task_default_queue
    try:
        queue_purge(bulk), queue_purge(default)
        ActivityFactory(organiser=alice, starts_at=timezone.now() + dt.timedelta(days=2))
        ActivityFactory(organiser=alice, starts_at=timezone.now() + dt.timedelta(days=3))
        joined = ActivityFactory(organiser=alice, starts_at=timezone.now() + dt.timedelta(days=90))
        with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
            assert activity_recommendations_refresh_upcoming() == 2
            assert activity_recommendations_schedule(activity_id=joined.pk, countdown=60)
        assert (queue_purge(bulk), queue_purge(default)) == (2, 1)
    finally:
        app.conf.task_default_queue = before
