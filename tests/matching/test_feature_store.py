"""Features loaded from PostGIS equal those computed from the files, and one person's online
vector equals their row of the batch matrix."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from django.contrib.gis.geos import Point
from django.db import transaction

from activities.factories import ActivityFactory, ParticipationFactory, VenueFactory
from activities.models import Category, Venue
from matching.feature_store import circle_of, load_city
from matching.lbsn import read_lbsn
from matching.lbsn_import import lbsn_import
from matching.ml.features import SCHEMA, user_features
from matching.ml.lbsn_data import city_from_lbsn, dataset_now
from matching.models import Interaction
from tests.conftest import LBSN_DIR
from users.factories import AvailabilityFactory, ConnectionFactory, ProfileFactory
from users.models import LocationPing, User

pytestmark = pytest.mark.django_db

SOURCE = "fs-yelp"


@pytest.fixture(scope="module")
def imported(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    with django_db_blocker.unblock():
        lbsn_import(directory=LBSN_DIR / "yelp-small", source=SOURCE)
    yield
    with django_db_blocker.unblock(), transaction.atomic():
        User.objects.filter(external_ref__startswith=f"{SOURCE}:").delete()
        Venue.objects.filter(external_ref__startswith=f"{SOURCE}:").delete()
        Category.objects.filter(source=SOURCE).delete()


def test_files_and_database_give_the_same_user_features(imported: None) -> None:
    dataset = read_lbsn(LBSN_DIR / "yelp-small")
    now = dataset_now(dataset)
    from_files = user_features(city_from_lbsn(dataset), now)
    city = load_city()
    from_db = user_features(city, now)
    refs = dict(User.objects.filter(external_ref__startswith=f"{SOURCE}:").values_list("id", "external_ref"))
    rows = np.array([int(refs[int(uid)].split(":")[1]) for uid in city.user_ids])
    assert len(rows) == dataset.n_users
    np.testing.assert_allclose(from_db, from_files[rows], atol=1e-5)
    # The comparison is not vacuous: the features vary across people.
    assert from_db.std(axis=0).max() > 0.1


def make_small_city() -> list[User]:
    """Six people with pings, visits, likes, a triangle of friends, an activity and free time."""
    now = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    people = [ProfileFactory(location=Point(-79.99 + 0.01 * i, 40.44, srid=4326), birth_year=1980 + i,
                             languages=["en"] * (i % 3)).user for i in range(6)]
    venue = VenueFactory()
    venue.categories.add(Category.objects.create(source="t", external_id="1", name="Books", interest="reading"))
    for i, person in enumerate(people):
        for d in range(i + 1):
            LocationPing.objects.create(user=person, point=Point(-79.99 + 0.003 * d, 40.44, srid=4326),
                                        recorded_at=now - dt.timedelta(days=d, hours=i))
        Interaction.objects.create(actor=person, kind="visit", target_venue=venue, weight=i + 1,
                                   occurred_at=now - dt.timedelta(days=i))
        AvailabilityFactory(user=person, weekday=i % 7)
    for a, b in ((0, 1), (1, 2), (0, 2), (2, 3), (4, 5)):
        ConnectionFactory(from_user=people[a], to_user=people[b])
    ConnectionFactory(from_user=people[3], to_user=people[5], status="pending")
    Interaction.objects.create(actor=people[4], kind="like", target_user=people[0], occurred_at=now)
    Interaction.objects.create(actor=people[0], kind="message", target_user=people[1], occurred_at=now)
    ParticipationFactory(user=people[1], activity=ActivityFactory(subtype="music"))
    return people


def test_online_vector_equals_the_batch_row() -> None:
    people = make_small_city()
    now = dt.datetime(2026, 6, 2, tzinfo=dt.UTC).timestamp()
    city = load_city()
    batch = user_features(city, now)
    for person in people:
        circle = load_city(circle_of(person.pk))
        online = user_features(circle, now)[list(circle.user_ids).index(person.pk)]
        np.testing.assert_allclose(online, batch[list(city.user_ids).index(person.pk)], atol=1e-6)
    # Person 0 is liked by person 4 (not a friend): influence reaches the online path too.
    influence = SCHEMA.names.index("influence")
    assert batch[list(city.user_ids).index(people[0].pk), influence] > 0


def test_empty_profile_and_user_without_profile_load_without_nan(alice: User) -> None:
    nobody = User.objects.create(username="nobody")
    city = load_city([alice.pk, nobody.pk])
    features = user_features(city, dt.datetime(2026, 6, 2, tzinfo=dt.UTC).timestamp())
    assert features.shape == (2, SCHEMA.dim) and np.isfinite(features).all()
    assert city.has_profile.tolist() == [True, False]


def test_online_service_matches_batch_service_and_context_is_neutral_by_default() -> None:
    from matching.services.features import request_context, user_features_batch, user_features_online

    people = make_small_city()
    when = dt.datetime(2026, 6, 2, 18, tzinfo=dt.UTC)
    ids, batch = user_features_batch(now=when)
    online = user_features_online(user_id=people[2].pk, now=when)
    np.testing.assert_allclose(online, batch[list(ids).index(people[2].pk)], atol=1e-6)
    with pytest.raises(ValueError, match="does not exist"):
        user_features_online(user_id=10**9, now=when)
    context = request_context(lon=-79.99, lat=40.44, when=when, nearby_activity_types=[0, 0, 3])
    assert context.shape == (8,) and np.isfinite(context).all()
    assert context[0] == pytest.approx(18 / 24) and context[5] == pytest.approx(0.3)
    assert context[6] == pytest.approx(0.2)  # two distinct activity types of ten
