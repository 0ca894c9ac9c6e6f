"""Joining and leaving under the capacity rule, the waitlist, and 50 people joining at once."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from activities import errors
from activities.errors import ActivityConflict, ActivityFull, ActivityPermissionDenied
from activities.models import Participation, WaitlistEntry
from activities.services import participation_join, participation_leave, waitlist_join
from matching.models import Interaction
from tests.activities.helpers import new_activity, person
from tests.conftest import client_for
from users.factories import BlockFactory, UserFactory
from users.models import Notification, User

pytestmark = pytest.mark.django_db
URL = "/api/v1/activities/"


def test_join_and_leave(alice: User, bob: User) -> None:
    activity = new_activity(alice)
    response = client_for(bob).post(f"{URL}{activity.pk}/join/")
    assert response.status_code == 201
    assert response.json()["viewer"]["joined"] is True and response.json()["participant_count"] == 1
    assert client_for(bob).post(f"{URL}{activity.pk}/join/").status_code == 201  # idempotent
    assert Participation.objects.filter(activity=activity).count() == 1
    assert Interaction.objects.filter(actor=bob, kind="join", target_activity=activity).count() == 1
    assert client_for(bob).post(f"{URL}{activity.pk}/leave/").json()["viewer"]["joined"] is False
    response = client_for(bob).post(f"{URL}{activity.pk}/leave/")
    assert response.status_code == 409 and response.json()["detail"] == errors.NOT_PARTICIPANT


def test_a_full_activity_answers_409_and_offers_the_waitlist(alice: User, bob: User, carol: User) -> None:
    activity = new_activity(alice, capacity=1)
    participation_join(actor=bob, activity=activity)
    response = client_for(carol).post(f"{URL}{activity.pk}/join/")
    assert response.status_code == 409
    assert response.json() == {"detail": errors.FULL.format(capacity=1), "waitlist": True}
    assert client_for(carol).post(f"{URL}{activity.pk}/waitlist/").json()["viewer"]["waitlist_position"] == 1


def test_the_first_person_waiting_is_promoted_and_told_when_someone_leaves(alice: User, bob: User) -> None:
    activity = new_activity(alice, capacity=1)
    participation_join(actor=bob, activity=activity)
    first, second = person("first"), person("second")
    waitlist_join(actor=first, activity=activity)
    waitlist_join(actor=second, activity=activity)
    assert participation_leave(actor=bob, activity=activity) == [first.pk]
    assert set(Participation.objects.filter(activity=activity).values_list("user_id", flat=True)) == {first.pk}
    assert list(WaitlistEntry.objects.filter(activity=activity).values_list("user_id", flat=True)) == [second.pk]
    told = Notification.objects.get(user=first)
    assert told.kind == "waitlist_promoted" and told.data == {"activity_id": activity.pk}
    assert not Notification.objects.filter(user=second).exists()


def test_a_larger_capacity_promotes_people_waiting(alice: User, bob: User, carol: User) -> None:
    activity = new_activity(alice, capacity=1)
    participation_join(actor=bob, activity=activity)
    waitlist_join(actor=carol, activity=activity)
    client_for(alice).patch(f"{URL}{activity.pk}/", {"capacity": 2}, content_type="application/json")
    assert Participation.objects.filter(activity=activity, user=carol).exists()


def test_the_waitlist_is_refused_while_places_are_free(alice: User, bob: User) -> None:
    activity = new_activity(alice)
    with pytest.raises(ActivityConflict, match=errors.HAS_PLACES):
        waitlist_join(actor=bob, activity=activity)


def test_organiser_blocked_suspended_and_closed_cannot_join(alice: User, bob: User, carol: User) -> None:
    activity = new_activity(alice)
    with pytest.raises(ActivityConflict, match=errors.ORGANISER_JOINS):
        participation_join(actor=alice, activity=activity)
    BlockFactory(blocker=alice, blocked=bob)
    with pytest.raises(ActivityPermissionDenied, match=errors.BLOCKED):
        participation_join(actor=bob, activity=activity)
    suspended = UserFactory(username="suspended", is_suspended=True)
    with pytest.raises(ActivityPermissionDenied, match=errors.SUSPENDED):
        participation_join(actor=suspended, activity=activity)
    response = client_for(carol).post(f"{URL}{new_activity(alice, publish=False).pk}/join/")
    assert response.status_code == 404  # someone else's draft does not exist for carol


def test_only_staff_remove_someone_else(alice: User, bob: User, carol: User, staff: User) -> None:
    activity = new_activity(alice)
    participation_join(actor=bob, activity=activity)
    assert client_for(carol).delete(f"{URL}{activity.pk}/participants/{bob.pk}/").status_code == 403
    assert client_for(alice).delete(f"{URL}{activity.pk}/participants/{bob.pk}/").status_code == 403
    assert client_for(staff).delete(f"{URL}{activity.pk}/participants/{bob.pk}/").status_code == 204
    assert not Participation.objects.filter(activity=activity).exists()


def _at_once(actions: list, timeout: float = 60.0) -> list[object]:
    """Run each action in its own thread (its own database connection), released together."""
    barrier = threading.Barrier(len(actions))
    outcomes: list[object] = [None] * len(actions)

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=timeout)
            outcomes[i] = actions[i]()
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_fifty_people_joining_ten_places_at_once_leave_exactly_ten() -> None:
    organiser = person("organiser")
    activity = new_activity(organiser, capacity=10)
    people = [UserFactory(username=f"racer{i}") for i in range(50)]
    outcomes = _at_once([lambda u=u: participation_join(actor=u, activity=activity) for u in people])
    joined = [o for o in outcomes if isinstance(o, Participation)]
    full = [o for o in outcomes if isinstance(o, ActivityFull)]
    assert len(joined) == 10 and len(full) == 40, [o for o in outcomes if not isinstance(o, Participation | ActivityFull)]
    assert Participation.objects.filter(activity=activity).count() == 10
    assert Interaction.objects.filter(kind="join", target_activity=activity).count() == 10


@pytest.mark.django_db(transaction=True)
def test_concurrent_leaves_promote_each_waiting_person_once() -> None:
    organiser = person("organiser")
    activity = new_activity(organiser, capacity=5)
    members = [UserFactory(username=f"member{i}") for i in range(5)]
    for member in members:
        participation_join(actor=member, activity=activity)
    waiting = [UserFactory(username=f"waiting{i}") for i in range(8)]
    for user in waiting:
        waitlist_join(actor=user, activity=activity)
    _at_once([lambda u=u: participation_leave(actor=u, activity=activity) for u in members])
    ids = set(Participation.objects.filter(activity=activity).values_list("user_id", flat=True))
    assert ids == {u.pk for u in waiting[:5]}
    assert WaitlistEntry.objects.filter(activity=activity).count() == 3
    assert Notification.objects.filter(kind="waitlist_promoted").count() == 5
