"""generate_city: a deterministic city with community structure, written within the constraints."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from typing import Any

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from activities.models import Activity, Category, Participation, Venue
from matching import citygen
from matching.citygen import (
    GENDERS,
    OCCUPATIONS,
    City,
    CityConfig,
    city_generate,
    distance_km,
    username_for,
)
from matching.citygen_db import (
    PREFIX_INVALID,
    PREFIX_TAKEN,
    WRITTEN_MODELS,
    CityWriteError,
    city_write,
)
from matching.models import Interaction
from users import models as user_models
from users.models import (
    Availability,
    Connection,
    Gender,
    LocationPing,
    Occupation,
    Profile,
    User,
)

pytestmark = pytest.mark.django_db

NOW = "2026-01-01"
NOW_TS = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp())
SMALL = CityConfig(users=300, seed=11, now=NOW_TS)
# Big enough for stable statistics, still generated in a fraction of a second.
STRUCTURE = CityConfig(users=3000, seed=5)


@pytest.fixture(scope="module")
def city() -> City:
    return city_generate(STRUCTURE)


def generate_command(prefix: str, *extra: str) -> None:
    call_command(
        "generate_city", "--users", str(SMALL.users), "--seed", str(SMALL.seed),
        "--prefix", prefix, "--now", NOW, *extra, stdout=io.StringIO(),
    )


def arrays(city: City) -> dict[str, np.ndarray]:
    """Every array of a city, by dotted name."""
    found = {}
    for part in dataclasses.fields(city):
        value = getattr(city, part.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, CityConfig):
            for column in dataclasses.fields(value):
                found[f"{part.name}.{column.name}"] = getattr(value, column.name)
    return found


def table_counts() -> dict[str, int]:
    models = (
        User, Profile, LocationPing, Availability, Connection, Venue, Venue.categories.through,
        Category, Activity, Participation, Interaction,
    )
    return {m._meta.db_table: m.objects.count() for m in models}


def schema(tables: list[str]) -> list[tuple[str, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 'index', pg_get_indexdef(indexrelid) FROM pg_index "
            "WHERE indrelid = ANY(%s::regclass[]) "
            "UNION ALL SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = ANY(%s::regclass[]) ORDER BY 1, 2",
            [tables, tables],
        )
        return [tuple(row) for row in cursor.fetchall()]


# -- generation (no database) -----------------------------------------------------------------


def test_same_seed_gives_identical_arrays() -> None:
    first, second = arrays(city_generate(SMALL)), arrays(city_generate(SMALL))
    assert first.keys() == second.keys()
    for name in first:
        assert np.array_equal(first[name], second[name]), name


def test_different_seeds_give_different_cities() -> None:
    other = city_generate(dataclasses.replace(SMALL, seed=SMALL.seed + 1))
    mine = city_generate(SMALL)
    assert not np.array_equal(mine.people.lon, other.people.lon)
    assert not np.array_equal(mine.people.interests, other.people.interests)


def test_codes_match_the_models() -> None:
    assert GENDERS == tuple(Gender.values)
    assert OCCUPATIONS == tuple(Occupation.values)
    assert (citygen.BIRTH_YEAR_MIN, citygen.BIRTH_YEAR_MAX) == (
        user_models.BIRTH_YEAR_MIN, user_models.BIRTH_YEAR_MAX
    )


def test_people_in_a_community_share_more_interests_than_random_pairs(city: City) -> None:
    rng = np.random.default_rng(0)
    people = city.people
    members = {c: np.flatnonzero(people.community == c) for c in np.unique(people.community)}
    i = rng.integers(0, len(people), 4000)
    same = np.array([rng.choice(members[c]) for c in people.community[i]])
    other = rng.integers(0, len(people), 4000)

    def jaccard(a: np.ndarray, b: np.ndarray) -> float:
        x, y = people.interests[a], people.interests[b]
        return float(((x & y).sum(1) / (x | y).sum(1)).mean())

    assert jaccard(i, same) > 1.5 * jaccard(i, other)


def test_friendships_are_mostly_within_community(city: City) -> None:
    f, community = city.friendships, city.people.community
    assert (community[f.a] == community[f.b]).mean() > 0.7


def test_friends_live_closer_than_random_pairs(city: City) -> None:
    p, f = city.people, city.friendships
    friends = distance_km(STRUCTURE, p.lon[f.a], p.lat[f.a], p.lon[f.b], p.lat[f.b])
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, len(p), (2, len(f)))
    strangers = distance_km(STRUCTURE, p.lon[a], p.lat[a], p.lon[b], p.lat[b])
    assert np.median(friends) < 0.5 * np.median(strangers)


def test_friendships_are_distinct_pairs_with_six_to_ten_friends_each(city: City) -> None:
    f = city.friendships
    assert (f.a != f.b).all()
    n = len(city.people)
    pairs = np.minimum(f.a, f.b) * n + np.maximum(f.a, f.b)
    assert len(np.unique(pairs)) == len(f)
    assert 6.0 <= 2 * len(f) / n <= 10.0


def test_each_person_has_one_to_four_slots_and_pings(city: City) -> None:
    n = len(city.people)
    for rows in (city.slots.person, city.pings.person):
        per_person = np.bincount(rows, minlength=n)
        assert per_person.min() >= 1 and per_person.max() <= 4
    s = city.slots
    assert (s.end_minute > s.start_minute).all() and ((s.weekday >= 0) & (s.weekday <= 6)).all()


def test_visits_favour_the_visitors_community(city: City) -> None:
    # Share of a venue's visitors from its top community: far above what chance would give.
    v = city.visits
    k = city.communities.interest_pref.shape[0]
    table = np.zeros((len(city.venues), k))
    np.add.at(table, (v.venue, city.people.community[v.person]), 1)
    visited = table.sum(1) >= 10
    top_share = (table.max(1)[visited] / table.sum(1)[visited]).mean()
    chance = np.bincount(city.people.community).max() / len(city.people)
    assert top_share > 2 * chance


def test_activities_are_ahead_and_joined_by_the_organisers_community(city: City) -> None:
    a, part = city.activities, city.participations
    assert (a.starts_at > STRUCTURE.now).all() and (a.ends_at > a.starts_at).all()
    assert (a.capacity >= 1).all()
    assert (part.person != a.organiser[part.activity]).all()
    joined = np.bincount(part.activity, minlength=len(a))
    assert (joined <= a.capacity - 1).all()
    community = city.people.community
    assert (community[part.person] == community[a.organiser[part.activity]]).all()


# -- the command and the database -------------------------------------------------------------


def test_command_writes_the_expected_rows() -> None:
    expected = city_generate(SMALL)
    generate_command("gc")

    people = User.objects.filter(username__startswith="gc")
    assert people.count() == SMALL.users
    assert set(people.values_list("username", flat=True)) == {
        username_for("gc", i) for i in range(SMALL.users)
    }
    assert not people.filter(is_active=False).exists()
    assert not any(u.has_usable_password() for u in people[:20])
    assert Profile.objects.filter(user__in=people).count() == SMALL.users
    assert LocationPing.objects.filter(user__in=people).count() == len(expected.pings)
    assert Availability.objects.filter(user__in=people).count() == len(expected.slots.person)
    assert (
        Connection.objects.filter(from_user__in=people, status=Connection.Status.ACCEPTED).count()
        == len(expected.friendships)
    )
    venues = Venue.objects.filter(external_ref__startswith="citygen:gc:")
    assert venues.count() == len(expected.venues)
    assert (
        Venue.categories.through.objects.filter(venue__in=venues).count()
        == len(expected.venues.category_venue)
    )
    assert Category.objects.filter(source="citygen").count() == 20
    visits = Interaction.objects.filter(
        actor__in=people, kind=Interaction.Kind.VISIT, target_venue__in=venues
    )
    assert visits.count() == len(expected.visits)
    activities = Activity.objects.filter(organiser__in=people)
    assert activities.count() == len(expected.activities)
    now = dt.datetime.fromtimestamp(NOW_TS, dt.UTC)
    ahead = activities.filter(status=Activity.Status.PUBLISHED, starts_at__gt=now)
    assert ahead.count() == len(expected.activities)
    participations = Participation.objects.filter(activity__in=activities)
    assert participations.count() == len(expected.participations)


def test_written_rows_pass_model_validation() -> None:
    # COPY already enforced the database's CHECK, unique and foreign-key constraints; full_clean
    # adds the model's own validators (choices, ranges, the point field's coordinate check).
    generate_command("gv")
    people = User.objects.filter(username__startswith="gv")
    for rows in (
        Profile.objects.filter(user__in=people),
        Availability.objects.filter(user__in=people),
        LocationPing.objects.filter(user__in=people),
        Venue.objects.filter(external_ref__startswith="citygen:gv:"),
        Activity.objects.filter(organiser__in=people),
    ):
        for row in rows.order_by("pk")[:25]:
            row.full_clean()
    profile = Profile.objects.filter(user__in=people).earliest("pk")
    assert profile.birth_year is not None
    assert user_models.BIRTH_YEAR_MIN <= profile.birth_year <= user_models.BIRTH_YEAR_MAX
    assert profile.location is not None and profile.location.srid == 4326


def test_content_is_the_same_whatever_the_ids() -> None:
    generate_command("aa")
    generate_command("bb")

    def content(prefix: str) -> dict[str, Any]:
        cut = len(prefix)
        profiles = Profile.objects.filter(user__username__startswith=prefix).select_related("user")
        connections = Connection.objects.filter(
            from_user__username__startswith=prefix
        ).select_related("from_user", "to_user")
        visits = Interaction.objects.filter(
            actor__username__startswith=prefix
        ).select_related("actor", "target_venue")
        return {
            "profiles": sorted(
                (p.user.username[cut:], p.display_name, tuple(p.interests), p.birth_year,
                 p.location.coords)
                for p in profiles
            ),
            "friends": sorted(
                (c.from_user.username[cut:], c.to_user.username[cut:]) for c in connections
            ),
            "visits": sorted(
                (i.actor.username[cut:], getattr(i.target_venue, "name", None), i.occurred_at)
                for i in visits
            ),
        }

    first, second = content("aa"), content("bb")
    assert User.objects.get(username="aa0000000").pk != User.objects.get(username="bb0000000").pk
    assert first == second
    assert len(first["friends"]) > SMALL.users  # not vacuous


def test_second_run_with_the_same_prefix_is_refused_and_changes_nothing() -> None:
    generate_command("again")
    before = table_counts()
    with pytest.raises(CommandError) as refused:
        generate_command("again")
    assert str(refused.value) == PREFIX_TAKEN.format(prefix="again", example="again0000000")
    assert table_counts() == before


def test_writer_refuses_a_taken_prefix_under_its_lock() -> None:
    # The command checks first; the writer checks again inside its transaction, for the race.
    generate_command("race")
    before = table_counts()
    with pytest.raises(CityWriteError):
        city_write(city_generate(SMALL), prefix="race")
    assert table_counts() == before


def test_prefix_ending_in_a_digit_is_refused() -> None:
    with pytest.raises(CommandError) as refused:
        generate_command("demo1")
    assert str(refused.value) == PREFIX_INVALID.format(prefix="demo1")
    assert not User.objects.filter(username__startswith="demo1").exists()


def test_rollback_option_writes_nothing() -> None:
    before = table_counts()
    generate_command("dry", "--rollback")
    assert table_counts() == before


def test_rebuilding_indexes_restores_the_schema_exactly() -> None:
    tables = [m._meta.db_table for m in WRITTEN_MODELS]
    before = schema(tables)
    report = city_write(city_generate(SMALL), prefix="rb", rebuild_indexes=True)
    assert report.rebuilt_indexes
    assert schema(tables) == before
    assert User.objects.filter(username__startswith="rb").count() == SMALL.users
