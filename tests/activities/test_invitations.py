"""Invitations: from recommendations, at most once, a daily limit, answers under the capacity rule,
expiry, the interaction log, notifications, and who may do what."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from activities import errors
from activities.errors import ActivityFull, ActivityPermissionDenied, InvitationClosed
from activities.models import Activity, Invitation, Participation
from activities.services import (
    invitation_accept,
    invitation_cancel,
    invitation_decline,
    invitations_expire,
    invitations_send,
    participation_join,
)
from matching.models import Interaction
from matching.services.activity_recommendations import activity_recommendations_compute
from tests.activities.helpers import new_activity, person
from tests.activities.test_participation import _at_once
from tests.conftest import client_for
from users.models import Notification, User

pytestmark = pytest.mark.django_db
URL = "/api/v1/activities/"


def recommended(activity: Activity) -> list[int]:
    activity_recommendations_compute(activity_id=activity.pk)
    return list(activity.recommendations.order_by("rank").values_list("user_id", flat=True))


@pytest.fixture
def scene(alice: User) -> tuple[Activity, list[User]]:
    """Alice's activity and five recommended people, nearest first."""
    people = [person(f"guest{i}", 0.002 * (i + 1)) for i in range(5)]
    activity = new_activity(alice, capacity=3)
    assert recommended(activity) == [p.pk for p in people]
    return activity, people


def test_organiser_invites_the_top_n_with_scores_reasons_log_and_notifications(
    alice: User, scene: tuple[Activity, list[User]],
) -> None:
    activity, people = scene
    response = client_for(alice).post(f"{URL}{activity.pk}/invitations/", {"top": 2}, content_type="application/json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert [i["invitee"]["id"] for i in body] == [people[0].pk, people[1].pk]
    assert body[0]["status"] == "pending" and body[0]["score"] > 0 and body[0]["reasons"]["available"] is True
    logged = list(Interaction.objects.filter(kind="invite_sent").order_by("position")
                  .values_list("actor_id", "target_user_id", "target_activity_id", "position", "surface", "variant"))
    assert logged == [(alice.pk, people[0].pk, activity.pk, 0, "invite", "rules"),
                      (alice.pk, people[1].pk, activity.pk, 1, "invite", "rules")]
    inbox = client_for(people[0]).get("/api/v1/notifications/").json()
    assert inbox["unread"] == 1 and inbox["results"][0]["kind"] == "invitation"
    assert inbox["results"][0]["data"]["activity_id"] == activity.pk
    # The next "top 2" skips those already invited.
    again = client_for(alice).post(f"{URL}{activity.pk}/invitations/", {"top": 2}, content_type="application/json")
    assert [i["invitee"]["id"] for i in again.json()] == [people[2].pk, people[3].pk]


def test_chosen_people_must_be_recommended_and_are_invited_at_most_once(
    alice: User, carol: User, scene: tuple[Activity, list[User]],
) -> None:
    activity, people = scene
    client = client_for(alice)
    response = client.post(f"{URL}{activity.pk}/invitations/", {"user_ids": [people[4].pk, carol.pk]},
                           content_type="application/json")
    assert response.status_code == 400
    assert response.json()["user_ids"] == [errors.NOT_RECOMMENDED.format(ids=carol.pk)]
    assert not Invitation.objects.exists()  # all or nothing
    assert client.post(f"{URL}{activity.pk}/invitations/", {"user_ids": [people[4].pk]},
                       content_type="application/json").status_code == 201
    twice = client.post(f"{URL}{activity.pk}/invitations/", {"user_ids": [people[4].pk]},
                        content_type="application/json")
    assert twice.status_code == 400 and str(people[4].pk) in twice.json()["user_ids"][0]
    assert Invitation.objects.filter(invitee=people[4]).count() == 1


@pytest.mark.parametrize("body", [{}, {"top": 1, "user_ids": [1]}, {"top": 0}, {"user_ids": []}, {"user_ids": ["x"]}])
def test_bad_invitation_requests_are_400(alice: User, scene: tuple[Activity, list[User]], body: dict) -> None:
    activity, _ = scene
    response = client_for(alice).post(f"{URL}{activity.pk}/invitations/", body, content_type="application/json")
    assert response.status_code == 400
    assert not Invitation.objects.exists()


def test_the_daily_limit_refuses_the_whole_call_and_says_what_is_left(
    alice: User, scene: tuple[Activity, list[User]], settings: object,
) -> None:
    settings.INVITATIONS_PER_ORGANISER_PER_DAY = 3  # type: ignore[attr-defined]
    activity, _ = scene
    client = client_for(alice)
    assert client.post(f"{URL}{activity.pk}/invitations/", {"top": 2}, content_type="application/json").status_code == 201
    response = client.post(f"{URL}{activity.pk}/invitations/", {"top": 2}, content_type="application/json")
    assert response.status_code == 429
    assert response.json()["detail"] == errors.DAILY_LIMIT.format(limit=3, remaining=1)
    assert Invitation.objects.count() == 2
    # A day later the window has moved on.
    Invitation.objects.update(created_at=timezone.now() - dt.timedelta(hours=25))
    assert client.post(f"{URL}{activity.pk}/invitations/", {"top": 2}, content_type="application/json").status_code == 201


def test_accepting_joins_and_declining_does_not_and_both_are_logged(
    alice: User, scene: tuple[Activity, list[User]],
) -> None:
    activity, people = scene
    yes, no = invitations_send(actor=alice, activity=activity, top=2)
    response = client_for(people[0]).post(f"/api/v1/invitations/{yes.pk}/accept/")
    assert response.status_code == 200 and response.json()["status"] == "accepted"
    assert client_for(people[1]).post(f"/api/v1/invitations/{no.pk}/decline/").json()["status"] == "declined"
    assert set(Participation.objects.filter(activity=activity).values_list("user_id", flat=True)) == {people[0].pk}
    kinds = sorted(Interaction.objects.filter(target_activity=activity).values_list("kind", flat=True))
    assert kinds == ["invite_accepted", "invite_declined", "invite_sent", "invite_sent", "join"]
    answered = Notification.objects.filter(user=alice, kind="invitation_answered").count()
    assert answered == 2
    again = client_for(people[1]).post(f"/api/v1/invitations/{no.pk}/accept/")
    assert again.status_code == 409 and again.json()["detail"] == errors.ALREADY_ANSWERED.format(status="declined")


def test_accepting_a_full_activity_is_409_and_the_invitation_stays_open(
    alice: User, bob: User, scene: tuple[Activity, list[User]],
) -> None:
    activity, people = scene
    invitation = invitations_send(actor=alice, activity=activity, user_ids=[people[0].pk])[0]
    for filler in (bob, person("x"), person("y")):
        participation_join(actor=filler, activity=activity)
    response = client_for(people[0]).post(f"/api/v1/invitations/{invitation.pk}/accept/")
    assert response.status_code == 409
    assert response.json()["detail"] == errors.FULL_FOR_INVITATION.format(capacity=3)
    invitation.refresh_from_db()
    assert invitation.status == "pending"
    assert not Participation.objects.filter(user=people[0]).exists()


def test_permissions_for_every_invitation_action(
    alice: User, carol: User, staff: User, scene: tuple[Activity, list[User]],
) -> None:
    activity, people = scene
    invitee = people[0]
    # Inviting: the organiser only, not another user, not the invitee, not staff.
    for someone in (carol, invitee, staff):
        with pytest.raises(ActivityPermissionDenied, match=errors.ONLY_ORGANISER_INVITES):
            invitations_send(actor=someone, activity=activity, top=1)
        assert client_for(someone).post(f"{URL}{activity.pk}/invitations/", {"top": 1},
                                        content_type="application/json").status_code == 403
    invitation = invitations_send(actor=alice, activity=activity, user_ids=[invitee.pk])[0]
    # Seeing the invitations of the activity: the organiser and staff.
    assert client_for(alice).get(f"{URL}{activity.pk}/invitations/").status_code == 200
    assert client_for(staff).get(f"{URL}{activity.pk}/invitations/").status_code == 200
    assert client_for(carol).get(f"{URL}{activity.pk}/invitations/").status_code == 403
    assert client_for(invitee).get(f"{URL}{activity.pk}/invitations/").status_code == 403
    # Answering: the invitee only.
    for someone in (alice, carol, staff):
        for answer in (invitation_accept, invitation_decline):
            with pytest.raises(ActivityPermissionDenied, match=errors.ONLY_INVITEE):
                answer(actor=someone, invitation=invitation)
    assert client_for(alice).post(f"/api/v1/invitations/{invitation.pk}/accept/").status_code == 403
    assert client_for(staff).post(f"/api/v1/invitations/{invitation.pk}/decline/").status_code == 403
    assert client_for(carol).post(f"/api/v1/invitations/{invitation.pk}/accept/").status_code == 404
    # Cancelling: the organiser or staff, not the invitee or another user.
    for someone in (invitee, carol):
        with pytest.raises(ActivityPermissionDenied):
            invitation_cancel(actor=someone, invitation=invitation)
    assert client_for(staff).post(f"/api/v1/invitations/{invitation.pk}/cancel/").json()["status"] == "cancelled"
    invitation.refresh_from_db()
    assert invitation.status == "cancelled"
    with pytest.raises(InvitationClosed):
        invitation_accept(actor=invitee, invitation=invitation)


def test_the_invitees_inbox_lists_pending_first(alice: User, scene: tuple[Activity, list[User]]) -> None:
    activity, people = scene
    other = new_activity(alice, title="Second game")
    recommended(other)
    first = invitations_send(actor=alice, activity=activity, user_ids=[people[0].pk])[0]
    second = invitations_send(actor=alice, activity=other, user_ids=[people[0].pk])[0]
    invitation_decline(actor=people[0], invitation=second)
    body = client_for(people[0]).get("/api/v1/invitations/").json()
    assert [i["id"] for i in body["results"]] == [first.pk, second.pk]
    assert body["results"][0]["activity"]["title"] == activity.title
    assert [i["id"] for i in client_for(people[0]).get("/api/v1/invitations/", {"status": "declined"}).json()["results"]] == [second.pk]
    assert client_for(people[1]).get("/api/v1/invitations/").json()["results"] == []


def test_pending_invitations_expire_when_the_activity_starts(alice: User, scene: tuple[Activity, list[User]]) -> None:
    activity, people = scene
    pending, answered = invitations_send(actor=alice, activity=activity, top=2)
    invitation_decline(actor=people[1], invitation=answered)
    assert invitations_expire() == 0
    Activity.objects.filter(pk=activity.pk).update(starts_at=timezone.now() - dt.timedelta(minutes=1))
    assert invitations_expire() == 1
    assert invitations_expire() == 0  # idempotent
    pending.refresh_from_db()
    answered.refresh_from_db()
    assert (pending.status, answered.status) == ("expired", "declined")
    with pytest.raises(InvitationClosed, match=errors.INVITATION_EXPIRED):
        invitation_accept(actor=people[0], invitation=pending)


def test_accepting_after_the_start_expires_the_invitation_before_the_sweep(
    alice: User, scene: tuple[Activity, list[User]],
) -> None:
    activity, people = scene
    invitation = invitations_send(actor=alice, activity=activity, top=1)[0]
    Activity.objects.filter(pk=activity.pk).update(starts_at=timezone.now() - dt.timedelta(minutes=1))
    response = client_for(people[0]).post(f"/api/v1/invitations/{invitation.pk}/accept/")
    assert response.status_code == 409 and response.json()["detail"] == errors.INVITATION_EXPIRED
    invitation.refresh_from_db()
    assert invitation.status == "expired"
    assert not Participation.objects.filter(user=people[0]).exists()


def test_notifications_are_marked_read_only_for_their_owner(alice: User, scene: tuple[Activity, list[User]]) -> None:
    activity, people = scene
    invitations_send(actor=alice, activity=activity, top=2)
    mine = Notification.objects.get(user=people[0])
    theirs = Notification.objects.get(user=people[1])
    response = client_for(people[0]).post("/api/v1/notifications/read/", {"ids": [mine.pk, theirs.pk]},
                                          content_type="application/json")
    assert response.json() == {"marked": 1, "unread": 0}
    theirs.refresh_from_db()
    assert theirs.read_at is None


@pytest.mark.django_db(transaction=True)
def test_fifty_invitees_accepting_ten_places_at_once_leave_exactly_ten(settings: object) -> None:
    settings.ACTIVITY_RECOMMENDATION_LIMIT = 60  # type: ignore[attr-defined]
    organiser = person("organiser")
    people = [person(f"invitee{i:02d}", 0.0005 * (i + 1)) for i in range(50)]
    activity = new_activity(organiser, capacity=10)
    assert len(recommended(activity)) == 50
    invitations = invitations_send(actor=organiser, activity=activity, top=50)
    by_user = {i.invitee_id: i for i in invitations}
    outcomes = _at_once([lambda u=u: invitation_accept(actor=u, invitation=by_user[u.pk]) for u in people])
    joined = [o for o in outcomes if isinstance(o, Participation)]
    full = [o for o in outcomes if isinstance(o, ActivityFull)]
    assert len(joined) == 10 and len(full) == 40, [o for o in outcomes if not isinstance(o, Participation | ActivityFull)]
    assert Participation.objects.filter(activity=activity).count() == 10
    assert Invitation.objects.filter(activity=activity, status="accepted").count() == 10
    assert Invitation.objects.filter(activity=activity, status="pending").count() == 40
