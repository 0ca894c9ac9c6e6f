"""The database itself rejects impossible rows, whatever code path writes them."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.gis.geos import Point
from django.db import IntegrityError, InternalError, transaction
from django.core.exceptions import ValidationError
from django.db.utils import DataError

from activities.factories import ActivityFactory, CategoryFactory, InvitationFactory, ParticipationFactory
from activities.models import Activity
from matching.models import Interaction
from users.factories import AvailabilityFactory, BlockFactory, ConnectionFactory, ProfileFactory, UserFactory
from users.models import Profile

pytestmark = pytest.mark.django_db

REJECTED = (IntegrityError, DataError, InternalError, ValidationError)


def rejects(make: object) -> None:
    with pytest.raises(REJECTED), transaction.atomic():
        make()  # type: ignore[operator]


def test_latitude_outside_range_is_rejected_on_every_orm_write() -> None:
    user = UserFactory()
    rejects(lambda: Profile.objects.create(user=user, display_name="x", location=Point(10.0, 95.0, srid=4326)))


def test_longitude_outside_range_is_rejected() -> None:
    rejects(lambda: ActivityFactory(location=Point(181.0, 10.0, srid=4326)))


def test_activity_must_end_after_it_starts() -> None:
    start = dt.datetime(2030, 1, 1, 10, tzinfo=dt.UTC)
    rejects(lambda: ActivityFactory(starts_at=start, ends_at=start))


@pytest.mark.parametrize("capacity", [0])
def test_activity_capacity_at_least_one(capacity: int) -> None:
    rejects(lambda: ActivityFactory(capacity=capacity))


@pytest.mark.parametrize("level", [0, 6])
def test_activity_skill_level_between_one_and_five(level: int) -> None:
    rejects(lambda: ActivityFactory(skill_level=level))


def test_activity_category_must_be_in_taxonomy() -> None:
    rejects(lambda: ActivityFactory(category="knitting"))


def test_activity_status_must_be_known() -> None:
    rejects(lambda: ActivityFactory(status="archived"))


def test_profile_interests_must_be_in_taxonomy() -> None:
    rejects(lambda: ProfileFactory(interests=["sports", "stamp-collecting"]))


def test_profile_birth_year_range() -> None:
    rejects(lambda: ProfileFactory(birth_year=1850))


def test_profile_city_tier_range() -> None:
    rejects(lambda: ProfileFactory(city_tier=0))


def test_availability_must_end_after_it_starts() -> None:
    rejects(lambda: AvailabilityFactory(start_time="18:00", end_time="17:00"))


def test_availability_weekday_range() -> None:
    rejects(lambda: AvailabilityFactory(weekday=7))


def test_connection_to_self_is_rejected() -> None:
    user = UserFactory()
    rejects(lambda: ConnectionFactory(from_user=user, to_user=user))


def test_connection_is_unique_per_pair_in_either_direction() -> None:
    alice, bob = UserFactory(), UserFactory()
    ConnectionFactory(from_user=alice, to_user=bob)
    rejects(lambda: ConnectionFactory(from_user=bob, to_user=alice))


def test_block_self_and_duplicate_are_rejected() -> None:
    alice, bob = UserFactory(), UserFactory()
    rejects(lambda: BlockFactory(blocker=alice, blocked=alice))
    BlockFactory(blocker=alice, blocked=bob)
    rejects(lambda: BlockFactory(blocker=alice, blocked=bob))


def test_invitation_is_unique_per_activity_and_invitee() -> None:
    invitation = InvitationFactory()
    rejects(lambda: InvitationFactory(activity=invitation.activity, invitee=invitation.invitee))


def test_participation_is_unique() -> None:
    participation = ParticipationFactory()
    rejects(lambda: ParticipationFactory(activity=participation.activity, user=participation.user))


def test_category_interest_must_be_in_taxonomy() -> None:
    rejects(lambda: CategoryFactory(interest="astrology"))


def test_interaction_needs_a_target_and_a_known_kind() -> None:
    user = UserFactory()
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    rejects(lambda: Interaction.objects.create(actor=user, kind="view", occurred_at=now))
    rejects(lambda: Interaction.objects.create(actor=user, kind="poke", target_user=UserFactory(), occurred_at=now))


def test_valid_rows_are_accepted() -> None:
    activity = ActivityFactory()
    assert Activity.objects.filter(pk=activity.pk, status="published").exists()
