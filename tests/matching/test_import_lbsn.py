"""``manage.py import_lbsn`` against real PostGIS, on the shared yelp-small sample.

One import of yelp-small is committed once for the module (``imported``) and read by the tests
that only look; it is deleted again after the last of them. Tests that write import under
other labels inside their own (rolled back) transaction, so they never disturb it.
"""

from __future__ import annotations

import io
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.gis.db.models.functions import Distance
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.db.models import F, Max, Min

from activities.models import Category, Venue
from matching import lbsn
from matching.lbsn_import import (
    SOURCE_INVALID,
    UNDATED_VISIT_AT,
    USERNAMES_TAKEN,
    lbsn_import,
)
from matching.models import Interaction
from tests.conftest import LBSN_DIR
from users.factories import UserFactory
from users.models import Connection, LocationPing, Profile, User
from users.taxonomy import INTERESTS

pytestmark = pytest.mark.django_db

SOURCE = "yelp-small"
MODELS: dict[str, Any] = {
    "users": User,
    "profiles": Profile,
    "categories": Category,
    "venues": Venue,
    "venue_categories": Venue.categories.through,
    "connections": Connection,
    "visits": Interaction,
    "location_pings": LocationPing,
}


def read_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines() if line.strip()]


def expected_counts(directory: Path) -> dict[str, int]:
    """What the files hold, counted with plain Python rather than with the reader under test."""
    sizes = read_rows(directory / "Yelp_data_size.txt")[0]
    visits = {
        (row[0], row[1])
        for split in ("train", "tune", "test")
        for row in read_rows(directory / f"Yelp_{split}.txt")
    }
    check_ins = {(u, p, float(t)) for u, p, t in read_rows(directory / "Yelp_check_ins.txt")}
    return {
        "users": int(sizes[0]),
        "profiles": int(sizes[0]),
        "categories": int(sizes[2]),
        "venues": len(read_rows(directory / "Yelp_poi_coos.txt")),
        "venue_categories": len(
            {tuple(r) for r in read_rows(directory / "Yelp_poi_categories.txt")}
        ),
        "connections": len(
            {frozenset(r) for r in read_rows(directory / "Yelp_social_relations.txt")}
        ),
        "visits": len(visits),
        "location_pings": len(check_ins),
    }


def source_counts(source: str) -> dict[str, int]:
    ref = f"{source}:"
    return {
        "users": User.objects.filter(external_ref__startswith=ref).count(),
        "profiles": Profile.objects.filter(user__external_ref__startswith=ref).count(),
        "categories": Category.objects.filter(source=source).count(),
        "venues": Venue.objects.filter(external_ref__startswith=ref).count(),
        "venue_categories": Venue.categories.through.objects.filter(
            venue__external_ref__startswith=ref
        ).count(),
        "connections": Connection.objects.filter(
            from_user__external_ref__startswith=ref, status=Connection.Status.ACCEPTED
        ).count(),
        "visits": Interaction.objects.filter(
            kind=Interaction.Kind.VISIT, actor__external_ref__startswith=ref
        ).count(),
        "location_pings": LocationPing.objects.filter(
            source_ref__startswith=f"{ref}venue:"
        ).count(),
    }


def database_state() -> dict[str, tuple[int, int | None]]:
    """Row count and largest id of every table the import writes."""
    return {
        name: (model.objects.count(), model.objects.aggregate(top=Max("id"))["top"])
        for name, model in MODELS.items()
    }


def import_lbsn(directory: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("import_lbsn", str(directory), *args, stdout=out)
    return out.getvalue()


def writable_copy(source: Path, target: Path, *, leave_out: tuple[str, ...] = ()) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*leave_out))
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def replace_line(path: Path, line: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def imported(django_db_setup: None, django_db_blocker: Any) -> Iterator[str]:
    """yelp-small imported and committed once; its output; deleted after the module."""
    with django_db_blocker.unblock():
        output = import_lbsn(LBSN_DIR / "yelp-small")
    yield output
    with django_db_blocker.unblock(), transaction.atomic():
        User.objects.filter(external_ref__startswith=f"{SOURCE}:").delete()
        Venue.objects.filter(external_ref__startswith=f"{SOURCE}:").delete()
        Category.objects.filter(source=SOURCE).delete()


# -- reading the shared import ----------------------------------------------------------------


def test_every_record_of_the_files_becomes_one_row(imported: str, lbsn_dir: Path) -> None:
    expected = expected_counts(lbsn_dir)

    assert expected == {
        "users": 1000,
        "profiles": 1000,
        "categories": 425,
        "venues": 5255,
        "venue_categories": 16904,
        "connections": 5666,
        "visits": 33859,
        "location_pings": 35559,  # 35,571 check-in lines, 12 of them repeated
    }
    assert source_counts(SOURCE) == expected
    assert "  location pings: 35559 created, 0 already present" in imported


def test_people_get_named_accounts_without_a_password(imported: str) -> None:
    user = User.objects.select_related("profile").get(external_ref="yelp-small:17")

    assert user.username == "yelp-small-17"
    assert not user.has_usable_password()
    assert user.profile.display_name == "Yelp-small user 17"
    assert user.profile.discoverable
    assert User.objects.filter(external_ref__startswith="yelp-small:", password="").count() == 0


def test_homes_are_near_the_venues_people_visited(imported: str) -> None:
    assert not Profile.objects.filter(user__external_ref__startswith="yelp-small:", location=None)
    nearest = (
        Interaction.objects.filter(kind="visit", actor__external_ref__startswith="yelp-small:")
        .annotate(distance=Distance("target_venue__location", F("actor__profile__location")))
        .values("actor")
        .annotate(nearest=Min("distance"))
    )
    distances_m = sorted(row["nearest"].m for row in nearest)

    assert len(distances_m) == 1000
    assert distances_m[len(distances_m) // 2] < 1_000
    assert distances_m[-1] < 10_000


def test_categories_map_to_interests_and_profiles_take_theirs(imported: str) -> None:
    categories = Category.objects.filter(source=SOURCE)
    assert all(c.interest == INTERESTS[int(c.external_id) % 20] for c in categories)
    assert Category.objects.get(source=SOURCE, external_id="17").name == "yelp-small category 17"

    visited: dict[int, set[str]] = defaultdict(set)
    rows = Interaction.objects.filter(
        kind="visit", actor__external_ref__startswith="yelp-small:"
    ).values_list("actor_id", "target_venue__categories__interest")
    for actor, interest in rows:
        visited[actor].add(interest)
    profiles = Profile.objects.filter(user__external_ref__startswith="yelp-small:")

    assert all(set(p.interests) <= visited[p.user_id] for p in profiles)
    assert all(1 <= len(p.interests) <= 5 for p in profiles)


def test_venues_are_placed_and_categorised_as_the_files_say(imported: str, lbsn_dir: Path) -> None:
    place, latitude, longitude = read_rows(lbsn_dir / "Yelp_poi_coos.txt")[0]
    categories = {c for p, c in read_rows(lbsn_dir / "Yelp_poi_categories.txt") if p == place}

    venue = Venue.objects.get(external_ref=f"yelp-small:{place}")

    assert venue.name == f"yelp-small place {place}"
    assert (venue.location.x, venue.location.y) == pytest.approx(
        (float(longitude), float(latitude))
    )
    assert {c.external_id for c in venue.categories.all()} == categories


def test_friendships_become_accepted_connections(imported: str, lbsn_dir: Path) -> None:
    a, b = read_rows(lbsn_dir / "Yelp_social_relations.txt")[0]

    connection = Connection.objects.get(
        from_user__external_ref=f"yelp-small:{a}", to_user__external_ref=f"yelp-small:{b}"
    )

    assert connection.status == Connection.Status.ACCEPTED


def test_visits_are_dated_by_the_latest_check_in_and_every_check_in_is_a_ping(
    imported: str, lbsn_dir: Path
) -> None:
    days: dict[tuple[str, str], set[float]] = defaultdict(set)
    for user, place, when in read_rows(lbsn_dir / "Yelp_check_ins.txt"):
        days[(user, place)].add(float(when))
    (user, place), times = max(days.items(), key=lambda item: (len(item[1]), item[0]))
    assert len(times) > 1

    visit = Interaction.objects.get(
        kind="visit",
        actor__external_ref=f"yelp-small:{user}",
        target_venue__external_ref=f"yelp-small:{place}",
    )
    pings = LocationPing.objects.filter(
        user__external_ref=f"yelp-small:{user}", source_ref=f"yelp-small:venue:{place}"
    )

    assert visit.occurred_at.timestamp() == max(times)
    assert sorted(p.recorded_at.timestamp() for p in pings) == sorted(times)
    assert {(p.source, p.point.coords) for p in pings} == {
        ("visit", visit.target_venue.location.coords)
    }


# -- importing again and failing --------------------------------------------------------------


def test_importing_again_changes_nothing(imported: str, lbsn_dir: Path) -> None:
    before = database_state()

    report = lbsn_import(directory=lbsn_dir, source=SOURCE)

    assert database_state() == before
    assert report.created == 0
    assert report.location_pings.present == 35559


def test_a_staff_correction_of_a_category_survives_a_reimport(
    imported: str, lbsn_dir: Path
) -> None:
    Category.objects.filter(source=SOURCE, external_id="0").update(interest="wellness")

    import_lbsn(lbsn_dir)

    assert Category.objects.get(source=SOURCE, external_id="0").interest == "wellness"


@pytest.mark.parametrize(
    ("kind", "line", "text", "problem"),
    [
        ("social_relations", 100, "5\t5", lbsn.SELF_FRIEND.format(value="5")),
        ("poi_coos", 2000, "17\t95.5\t-80.0", lbsn.LATITUDE_OUT_OF_RANGE.format(value="95.5")),
        (
            "check_ins",
            35571,
            "999\t8899\tyesterday",
            lbsn.NOT_A_NUMBER.format(column="time", value="yesterday"),
        ),
    ],
)
def test_a_malformed_line_aborts_naming_file_and_line_and_writes_nothing(
    imported: str, lbsn_dir: Path, tmp_path: Path, kind: str, line: int, text: str, problem: str
) -> None:
    copy = writable_copy(lbsn_dir, tmp_path / "yelp-broken")
    replace_line(copy / f"Yelp_{kind}.txt", line, text)
    before = database_state()

    with pytest.raises(CommandError) as error:
        import_lbsn(copy)

    assert str(error.value) == lbsn.AT_LINE.format(
        file=f"Yelp_{kind}.txt", line=line, problem=problem
    )
    assert database_state() == before
    assert sum(source_counts("yelp-broken").values()) == 0


def test_a_clash_found_while_writing_rolls_back_everything_written_before(
    imported: str, lbsn_dir: Path
) -> None:
    # Categories and venues are written before users: the clash must undo them too.
    UserFactory(username="yelp-other-3")
    before = database_state()

    with pytest.raises(CommandError) as error:
        import_lbsn(lbsn_dir, "--source", "yelp-other")

    assert str(error.value) == USERNAMES_TAKEN.format(source="yelp-other", names="yelp-other-3")
    assert database_state() == before


def test_a_source_label_that_cannot_name_users_is_refused(lbsn_dir: Path) -> None:
    with pytest.raises(CommandError) as error:
        import_lbsn(lbsn_dir, "--source", "yelp small")

    assert str(error.value) == SOURCE_INVALID.format(source="yelp small")


def test_without_check_ins_categories_and_extra_splits_visits_are_undated(
    imported: str, lbsn_dir: Path, tmp_path: Path
) -> None:
    copy = writable_copy(
        lbsn_dir,
        tmp_path / "yelp-bare",
        leave_out=(
            "Yelp_check_ins.txt",
            "Yelp_poi_categories.txt",
            "Yelp_tune.txt",
            "Yelp_test.txt",
        ),
    )
    train_pairs = {(u, p) for u, p, _ in read_rows(copy / "Yelp_train.txt")}

    import_lbsn(copy)

    counts = source_counts("yelp-bare")
    assert counts["categories"] == counts["venue_categories"] == 0
    assert counts["visits"] == counts["location_pings"] == len(train_pairs)
    visits = Interaction.objects.filter(actor__external_ref__startswith="yelp-bare:")
    pings = LocationPing.objects.filter(user__external_ref__startswith="yelp-bare:")
    assert set(visits.values_list("occurred_at", flat=True)) == {UNDATED_VISIT_AT}
    assert set(pings.values_list("recorded_at", flat=True)) == {UNDATED_VISIT_AT}
    profiles = Profile.objects.filter(user__external_ref__startswith="yelp-bare:")
    assert len(profiles) == 1000
    assert all(profile.interests == [] for profile in profiles)
