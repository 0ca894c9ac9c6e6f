"""Nearby with a served model: pair features from one statement equal the whole-city ones, the
request costs a fixed number of queries, and one vectorised pass ranks like the per-pair loop."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest
from django.contrib.gis.geos import Point
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from activities.factories import ActivityFactory, ParticipationFactory, VenueFactory
from activities.models import Participation
from matching.feature_store import load_city
from matching.ml.features import user_features
from matching.ml.pairs import PAIR_NAMES, PairFeaturizer
from matching.models import Interaction
from matching.services.nearby import (
    nearby_candidates,
    nearby_matches,
    pair_context_load,
    pair_features_served,
    rank_speed,
    recently_active,
)
from matching.serving import store
from tests.conftest import make_person
from tests.matching.test_refresh import served_city
from users.factories import AvailabilityFactory
from users.models import LocationPing, Profile, User

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_serving")]


def richer_city() -> list[User]:
    """The small social city plus visits, activities, availability and pings shared by some."""
    from tests.matching.test_registry import small_social_city

    small_social_city()
    people = list(User.objects.filter(profile__isnull=False).order_by("pk"))
    venues = [VenueFactory() for _ in range(3)]
    now = timezone.now()
    for i, person in enumerate(people):
        for venue in venues[: 1 + i % 3]:
            Interaction.objects.create(actor=person, kind="visit", target_venue=venue,
                                       occurred_at=now - dt.timedelta(days=1 + i))
        AvailabilityFactory(user=person, weekday=i % 3, start_time="09:00",
                            end_time=f"{10 + i % 5}:00")
        spot = Point(-79.99 + 0.01 * (i % 2), 40.44, srid=4326)
        when = now - dt.timedelta(days=i % 2, hours=1)
        LocationPing.objects.create(user=person, point=spot, recorded_at=when)
    for activity_members in (people[:5], people[3:9]):
        activity = ActivityFactory(organiser=activity_members[0])
        for member in activity_members:
            ParticipationFactory(activity=activity, user=member)
    return people


def test_pair_features_from_one_statement_equal_the_whole_city_featurizer() -> None:
    people = richer_city()
    served_city_from_existing()
    serving = store.current()
    me = people[0]
    others = np.array([p.pk for p in people[1:]], dtype=np.int64)
    city = load_city()
    features = user_features(city, timezone.now().timestamp())
    reference = PairFeaturizer(city, features).pair_features(
        int(np.searchsorted(city.user_ids, me.pk)), np.searchsorted(city.user_ids, others),
    )
    years = np.array([float(p.profile.birth_year) for p in people[1:]])
    served = pair_features_served(
        pair_context_load(me=me.pk, candidates=others, serving=serving), serving,
        distance_km=np.zeros(len(others)), my_birth_year=me.profile.birth_year, birth_years=years,
    )
    # The set's per-person rows give exactly what the statement alone reads.
    assert serving.person_rows is not None
    all_from_the_database = pair_features_served(
        pair_context_load(me=me.pk, candidates=others), serving,
        distance_km=np.zeros(len(others)), my_birth_year=me.profile.birth_year, birth_years=years,
    )
    np.testing.assert_array_equal(served, all_from_the_database)
    # Distances come from snapped positions and co-location counts visitors among the loaded
    # people (see pair_features_served); every other column is the whole-city value.
    differ = ("distance_km", "distance_score", "co_located")
    same = [i for i, name in enumerate(PAIR_NAMES) if name not in differ]
    for column in same:
        assert np.allclose(served[:, column], reference[:, column], atol=1e-4), PAIR_NAMES[column]
    assert reference[:, PAIR_NAMES.index("mutual_friends")].any()
    assert reference[:, PAIR_NAMES.index("common_venues")].any()
    assert reference[:, PAIR_NAMES.index("co_participation")].any()
    assert reference[:, PAIR_NAMES.index("availability_overlap")].any()
    assert reference[:, PAIR_NAMES.index("paths3")].any()
    co_located = PAIR_NAMES.index("co_located")
    assert np.array_equal(served[:, co_located] > 0, reference[:, co_located] > 0)


def test_the_set_serves_rows_as_of_its_build_with_what_people_did_since_read_live() -> None:
    from matching.services.embeddings import user_embedding_refresh

    people = richer_city()
    served_city_from_existing()
    serving = store.current()
    me, newcomer, leaver = people[0], people[8], people[3]  # leaver shares the first activity with me
    others = np.array([p.pk for p in people[1:]], dtype=np.int64)
    years = np.array([float(p.profile.birth_year) for p in people[1:]])
    co_participation = PAIR_NAMES.index("co_participation")
    co_located = PAIR_NAMES.index("co_located")
    at = {p.pk: int(np.flatnonzero(others == p.pk)[0]) for p in (newcomer, leaver)}

    def features(**options: object) -> np.ndarray:
        return pair_features_served(
            pair_context_load(me=me.pk, candidates=others, **options), serving,
            distance_km=np.zeros(len(others)), my_birth_year=me.profile.birth_year, birth_years=years,
        )

    before = features(serving=serving)
    # Since the set was built: the newcomer joined an activity of mine and was where I was today.
    activity = ActivityFactory(organiser=me)
    ParticipationFactory(activity=activity, user=me)
    ParticipationFactory(activity=activity, user=newcomer)
    mine = LocationPing.objects.filter(user=me).first().point
    cafe, today = Point(mine.x + 0.0123, mine.y + 0.0045, srid=4326), timezone.now()
    for person in (me, newcomer):
        LocationPing.objects.create(user=person, point=cafe, recorded_at=today)
    now = features(serving=serving)
    assert now[at[newcomer.pk], co_participation] > before[at[newcomer.pk], co_participation]
    assert now[at[newcomer.pk], co_located] > before[at[newcomer.pk], co_located]
    np.testing.assert_array_equal(now, features())  # the same as reading everyone live
    # Leaving counts only once the person is refreshed (or the set rebuilt).
    Participation.objects.filter(user=leaver).exclude(activity=activity).filter(
        activity__participations__user=me).delete()
    assert features(serving=serving)[at[leaver.pk], co_participation] > features()[at[leaver.pk], co_participation]
    assert user_embedding_refresh(user_id=leaver.pk)
    serving.apply_refreshes()
    np.testing.assert_array_equal(features(serving=serving), features())


def served_city_from_existing() -> None:
    """Train, embed and publish on whatever city the test made (no worker)."""
    from matching.services.embeddings import (
        embeddings_chunk,
        embeddings_finish,
        embeddings_rebuild_start,
    )
    from matching.services.training import model_train

    version = model_train(epochs=1, folds=1, activate=True)
    embedding_set = embeddings_rebuild_start(version=version)
    embeddings_chunk(set_id=embedding_set.pk, start=0, end=embedding_set.users)
    embeddings_finish(set_id=embedding_set.pk)


def test_a_ranked_request_costs_the_same_queries_whatever_the_number_of_candidates() -> None:
    served_city()
    me = Profile.objects.order_by("user_id").first()
    assert store.current() is not None
    nearby_matches(user=me.user)  # loads the set's model once per process
    counts = []

    def ask(radius_km: float) -> None:
        # The 2-second check of the serving key, and the 1-second one of who was active since
        # the set, are not per request.
        store._checked = time.monotonic()
        recently_active._checked = time.monotonic()
        with CaptureQueriesContext(connection) as queries:
            result = nearby_matches(user=me.user, radius_km=radius_km)
        assert result.ranker == "model"
        counts.append((len(result.matches), len(queries)))

    for radius_km in (0.5, 30.0):  # one candidate, then everyone
        ask(radius_km)
    # A newcomer the set does not hold: their rows, and the asker's, are read from the database.
    make_person("newcomer", me.location.x + 0.001, me.location.y)
    ask(30.0)
    (few, few_queries), (many, many_queries), (more, with_newcomer) = counts
    assert few == 1 and many == 11 and more == 12  # 16 people, minus the asker and their 4 friends
    # the asker's profile and exclusions, and the names and interests of those shown (candidates
    # and friendships come from the people map, everyone else's rows from the set, impressions go
    # to a Redis buffer); with someone the set does not hold, the pair-context statement too
    assert (few_queries, many_queries, with_newcomer) == (2, 2, 3)


def test_mutual_friends_reason_matches_with_and_without_the_model() -> None:
    served_city()
    me = Profile.objects.order_by("user_id").first().user
    ranked = nearby_matches(user=me, radius_km=30, include_connected=True)
    with_model = {m.user_id: m.mutual_friends for m in ranked.matches}
    store.reset()
    cache.clear()
    by_rules = nearby_matches(user=me, radius_km=30, include_connected=True)
    assert ranked.ranker == "model" and by_rules.ranker == "rules"
    rules = {m.user_id: m.mutual_friends for m in by_rules.matches}
    assert with_model == rules and any(with_model.values())


def test_one_vectorised_pass_scores_like_the_per_pair_loop() -> None:
    served_city()
    store.current()
    figures = rank_speed(candidates=15, repeat=1)
    assert figures["candidates"] == 15
    assert figures["max_abs_difference"] < 1e-4
    assert figures["vectorised_ms"] > 0 and figures["loop_ms"] > 0


def test_candidates_are_nearest_first_and_capped() -> None:
    served_city()
    me = Profile.objects.order_by("user_id").first()
    found = nearby_candidates(me=me.user_id, lon=me.location.x, lat=me.location.y, radius_km=30, cap=5)
    distances = found.distance_m.tolist()
    assert len(found) == 5 and distances == sorted(distances)
    assert me.user_id not in found.ids.tolist()


def test_who_was_active_since_the_set_is_read_once_a_second_and_at_once_after_own_writes(
    alice: User, bob: User, carol: User,
) -> None:
    since = timezone.now() - dt.timedelta(minutes=1)
    long_ago = since - dt.timedelta(days=1)
    LocationPing.objects.bulk_create([LocationPing(user=alice, point=Point(0, 0, srid=4326), recorded_at=long_ago)])
    assert recently_active.ids(since).tolist() == []
    # Another process's write sends no signal here: seen within a second, not before.
    LocationPing.objects.bulk_create([LocationPing(user=bob, point=Point(0, 0, srid=4326), recorded_at=timezone.now())])
    assert recently_active.ids(since).tolist() == []
    recently_active._checked -= recently_active.REFRESH_SECONDS
    assert recently_active.ids(since).tolist() == [bob.pk]
    # This process's own write: at once.
    ParticipationFactory(user=carol)
    assert recently_active.ids(since).tolist() == sorted([bob.pk, carol.pk])


def test_distinct_rows_by_packing_equal_numpys() -> None:
    from matching.services.nearby import _unique_rows

    rng = np.random.default_rng(5)
    for high in (3, 1_000, 2**40):  # the last too wide to pack: numpy's own way
        pairs = rng.integers(0, high, size=(300, 2))
        np.testing.assert_array_equal(_unique_rows(pairs), np.unique(pairs, axis=0))
    assert _unique_rows(np.zeros((0, 2), dtype=np.int64)).shape == (0, 2)


def test_set_rows_by_table_equal_the_binary_search() -> None:
    """``ServingSet.rows``: the id-indexed table where ids are dense, the search where they are
    sparse, the same rows and found masks either way (unknown, negative and too-large ids too)."""
    import faiss

    from matching.serving import ServingSet

    rng = np.random.default_rng(3)
    asked = np.array([-5, 0, 1, 2, 7, 10**9, *rng.integers(0, 3000, 200)], dtype=np.int64)
    for ids in (np.unique(rng.integers(1, 3000, 1500)), np.array([1, 5, 10**8, 2 * 10**8])):
        served = ServingSet(set_id=1, version="v", ids=ids, seed=np.zeros((len(ids), 2), dtype=np.float32),
                            target=np.zeros((len(ids), 2), dtype=np.float32), index=faiss.IndexFlatIP(2))
        rows, found = served.rows(asked)
        want_found = np.isin(asked, ids)
        np.testing.assert_array_equal(found, want_found)
        np.testing.assert_array_equal(ids[rows[found]], asked[found])
        assert (len(served._row_of) > 0) == (ids[-1] < 10**6)  # table for dense ids only
