"""The LBSN reader on tiny hand-made directories and on the shared yelp-small sample (no DB)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from matching import lbsn
from matching.lbsn import (
    LbsnFormatError,
    busiest_area,
    category_shares,
    home_locations,
    read_lbsn,
    unique_check_ins,
    unique_friend_pairs,
    visit_totals,
)
from users.geo import haversine_m, robust_centre

# 3 users, 4 places (three in Pittsburgh, one in Las Vegas), 2 categories.
VALID: dict[str, str] = {
    "data_size": "3\t4\t2\n",
    "poi_coos": "0\t40.44\t-79.99\n1\t40.45\t-80.00\n2\t36.10\t-115.17\n3\t40.43\t-79.98\n",
    "social_relations": "0\t1\n1\t2\n",
    "train": "0\t0\t5\n0\t1\t2\n1\t2\t1\n",
    "tune": "0\t3\t1\n",
    "test": "1\t0\t3\n",
    "poi_categories": "0\t0\n0\t1\n1\t1\n3\t0\n",
    "check_ins": "0\t0\t1185638400.0\n0\t0\t1185724800.0\n0\t1\t1185638400\n",
}


def write_dataset(directory: Path, prefix: str = "Yelp_", **files: str | bytes | None) -> Path:
    """A dataset directory of VALID, with some files replaced (text or bytes) or left out (None)."""
    directory.mkdir(parents=True, exist_ok=True)
    for kind, content in {**VALID, **files}.items():
        path = directory / f"{prefix}{kind}.txt"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
    return directory


def at_line(file: str, line: int, problem: str) -> str:
    return lbsn.AT_LINE.format(file=file, line=line, problem=problem)


def test_every_file_is_read_into_arrays(tmp_path: Path) -> None:
    ds = read_lbsn(write_dataset(tmp_path))

    assert (ds.prefix, ds.n_users, ds.n_places, ds.n_categories) == ("Yelp_", 3, 4, 2)
    assert ds.place_lonlat[2].tolist() == [-115.17, 36.10]
    assert ds.friends.tolist() == [[0, 1], [1, 2]]
    assert ds.visits.tolist() == [[0, 0], [0, 1], [1, 2], [0, 3], [1, 0]]
    assert ds.visit_counts.tolist() == [5, 2, 1, 1, 3]
    assert [lbsn.SPLITS[s] for s in ds.visit_splits] == ["train"] * 3 + ["tune", "test"]
    assert ds.place_categories.tolist() == [[0, 0], [0, 1], [1, 1], [3, 0]]
    assert ds.check_ins.tolist() == [[0, 0], [0, 0], [0, 1]]
    assert ds.check_in_times.tolist() == [1185638400.0, 1185724800.0, 1185638400.0]
    assert ds.has_categories and ds.has_check_ins


def test_optional_files_may_be_absent(tmp_path: Path) -> None:
    ds = read_lbsn(
        write_dataset(tmp_path, tune=None, test=None, poi_categories=None, check_ins=None)
    )

    assert ds.present == frozenset()
    assert ds.visits.shape == (3, 2) and set(ds.visit_splits.tolist()) == {0}
    assert ds.n_categories == 0 and ds.place_categories.shape == (0, 2)
    assert ds.check_ins.shape == (0, 2) and ds.check_in_times.shape == (0,)
    assert not ds.has_categories and not ds.has_check_ins


def test_an_empty_train_split_is_accepted(tmp_path: Path) -> None:
    ds = read_lbsn(write_dataset(tmp_path, train=""))

    assert ds.visits.tolist() == [[0, 3], [1, 0]]


@pytest.mark.parametrize("prefix", ["Gowalla_", "Foursquare_", "NYC-", ""])
def test_the_prefix_is_detected_from_the_data_size_file(tmp_path: Path, prefix: str) -> None:
    ds = read_lbsn(write_dataset(tmp_path, prefix=prefix))

    assert ds.prefix == prefix
    assert ds.file_name("train") == f"{prefix}train.txt"


def test_a_directory_without_a_data_size_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(LbsnFormatError) as error:
        read_lbsn(tmp_path)

    assert str(error.value) == lbsn.SIZE_FILE_MISSING.format(directory=tmp_path)


def test_a_directory_with_two_datasets_is_rejected(tmp_path: Path) -> None:
    write_dataset(tmp_path, prefix="Yelp_")
    write_dataset(tmp_path, prefix="Gowalla_")

    with pytest.raises(LbsnFormatError) as error:
        read_lbsn(tmp_path)

    names = "Gowalla_data_size.txt, Yelp_data_size.txt"
    assert str(error.value) == lbsn.SIZE_FILE_AMBIGUOUS.format(directory=tmp_path, names=names)


def test_a_missing_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(LbsnFormatError) as error:
        read_lbsn(tmp_path / "nowhere")

    assert str(error.value) == lbsn.DIRECTORY_MISSING.format(directory=tmp_path / "nowhere")


@pytest.mark.parametrize("kind", ["poi_coos", "social_relations", "train"])
def test_a_missing_required_file_is_named(tmp_path: Path, kind: str) -> None:
    write_dataset(tmp_path, **{kind: None})

    with pytest.raises(LbsnFormatError) as error:
        read_lbsn(tmp_path)

    name = f"Yelp_{kind}.txt"
    assert str(error.value) == lbsn.FILE_MISSING.format(directory=tmp_path, name=name)
    assert error.value.file == name


MALFORMED = [
    pytest.param(
        "social_relations", "0\t1\n1\t2\t0\n", 2,
        lbsn.WRONG_COLUMNS.format(expected=2, found=3), id="too-many-columns",
    ),
    pytest.param(
        "train", "0\t0\t5\n0\t1\n", 2,
        lbsn.WRONG_COLUMNS.format(expected=3, found=2), id="too-few-columns",
    ),
    pytest.param(
        "poi_coos", "0\t40.44\t-79.99\n1 40.45 -80.00\n", 2,
        lbsn.WRONG_COLUMNS.format(expected=3, found=1), id="spaces-not-tabs",
    ),
    pytest.param(
        "train", "0\t0\t5\n0\tx\t1\n", 2,
        lbsn.NOT_A_NUMBER.format(column="place", value="x"), id="not-a-number",
    ),
    pytest.param(
        "test", "1\t0\t\n", 1,
        lbsn.NOT_A_NUMBER.format(column="count", value=""), id="empty-value",
    ),
    pytest.param(
        "poi_categories", "0\t0\n0\t1.5\n", 2,
        lbsn.NOT_AN_INTEGER.format(column="category", value="1.5"), id="non-integer-id",
    ),
    pytest.param(
        "social_relations", "0\t1\n3\t0\n", 2,
        lbsn.ID_OUT_OF_RANGE.format(column="user", value="3", count=3), id="user-too-large",
    ),
    pytest.param(
        "check_ins", "0\t0\t1\n-1\t0\t1\n", 2,
        lbsn.ID_OUT_OF_RANGE.format(column="user", value="-1", count=3), id="negative-id",
    ),
    pytest.param(
        "tune", "0\t4\t1\n", 1,
        lbsn.ID_OUT_OF_RANGE.format(column="place", value="4", count=4), id="place-too-large",
    ),
    pytest.param(
        "poi_categories", "0\t2\n", 1,
        lbsn.ID_OUT_OF_RANGE.format(column="category", value="2", count=2), id="category-too-large",
    ),
    pytest.param(
        "poi_coos", "0\t40.44\t-79.99\n1\t40.45\t-80.00\n2\t95\t-115.17\n3\t40.43\t-79.98\n", 3,
        lbsn.LATITUDE_OUT_OF_RANGE.format(value="95"), id="latitude",
    ),
    pytest.param(
        "poi_coos", "0\t40.44\t-79.99\n1\t40.45\t-180.5\n", 2,
        lbsn.LONGITUDE_OUT_OF_RANGE.format(value="-180.5"), id="longitude",
    ),
    pytest.param(
        "poi_coos", "0\tnan\t-79.99\n", 1,
        lbsn.NOT_FINITE.format(column="latitude", value="nan"), id="nan-latitude",
    ),
    pytest.param(
        "test", "1\t0\tinf\n", 1,
        lbsn.NOT_FINITE.format(column="count", value="inf"), id="infinite-count",
    ),
    pytest.param(
        "tune", "0\t3\t1\n0\t2\t-1\n", 2,
        lbsn.NEGATIVE.format(column="count", value="-1"), id="negative-count",
    ),
    pytest.param(
        "check_ins", "0\t0\t1e13\n", 1,
        lbsn.TIME_OUT_OF_RANGE.format(value="10000000000000"), id="time-out-of-range",
    ),
    pytest.param(
        "social_relations", "0\t1\n2\t2\n", 2,
        lbsn.SELF_FRIEND.format(value="2"), id="own-friend",
    ),
    pytest.param(
        "poi_coos", "0\t40.44\t-79.99\n1\t40.45\t-80.00\n2\t36.10\t-115.17\n1\t40.43\t-79.98\n", 4,
        lbsn.DUPLICATE_PLACE.format(value="1", first=2), id="place-twice",
    ),
    pytest.param(
        "data_size", "3\tx\t2\n", 1,
        lbsn.NOT_A_NUMBER.format(column="places count", value="x"), id="size-not-a-number",
    ),
    pytest.param(
        "data_size", "3\t-4\n", 1,
        lbsn.NEGATIVE.format(column="places count", value="-4"), id="size-negative",
    ),
    pytest.param(
        "data_size", "3\t4\t2\n3\t4\t2\n", 2, lbsn.SIZE_NOT_ONE_LINE, id="size-two-lines",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "content", "line", "problem"), MALFORMED)
def test_a_malformed_line_is_reported_with_file_and_line(
    tmp_path: Path, kind: str, content: str, line: int, problem: str
) -> None:
    write_dataset(tmp_path, **{kind: content})

    with pytest.raises(LbsnFormatError) as error:
        read_lbsn(tmp_path)

    file = f"Yelp_{kind}.txt"
    assert str(error.value) == at_line(file, line, problem)
    assert (error.value.file, error.value.line) == (file, line)


def test_the_first_bad_line_is_reported_whatever_its_problem(tmp_path: Path) -> None:
    # A range error on line 2 comes before an unreadable line 4, and the other way round.
    write_dataset(tmp_path, train="0\t0\t5\n0\t1\t-2\n1\t2\t1\n0\tx\t1\n")
    with pytest.raises(LbsnFormatError) as error:
        read_lbsn(tmp_path)
    assert error.value.line == 2

    write_dataset(tmp_path, train="0\t0\t5\n0\tx\t1\n1\t2\t1\n0\t1\t-2\n")
    with pytest.raises(LbsnFormatError) as error:
        read_lbsn(tmp_path)
    assert error.value.line == 2


def test_blank_lines_are_skipped_but_still_counted(tmp_path: Path) -> None:
    write_dataset(tmp_path, social_relations="0\t1\n\n  \n1\t2\n2\t2\n")

    with pytest.raises(LbsnFormatError) as error:
        read_lbsn(tmp_path)

    assert str(error.value) == at_line(
        "Yelp_social_relations.txt", 5, lbsn.SELF_FRIEND.format(value="2")
    )


def test_a_duplicate_place_after_blank_lines_names_both_true_lines(tmp_path: Path) -> None:
    write_dataset(tmp_path, poi_coos="\n0\t40.44\t-79.99\n\n0\t40.45\t-80.00\n")

    with pytest.raises(LbsnFormatError) as error:
        read_lbsn(tmp_path)

    assert str(error.value) == at_line(
        "Yelp_poi_coos.txt", 4, lbsn.DUPLICATE_PLACE.format(value="0", first=2)
    )


def test_blank_lines_crlf_and_a_missing_final_line_end_read_like_a_plain_file(
    tmp_path: Path,
) -> None:
    plain = read_lbsn(write_dataset(tmp_path / "plain"))
    messy = read_lbsn(
        write_dataset(
            tmp_path / "messy",
            poi_coos=VALID["poi_coos"].replace("\n", "\r\n").encode(),
            social_relations="\n0\t1\n\n1\t2",
            train=VALID["train"] + "\n\n",
            check_ins=VALID["check_ins"].rstrip("\n"),
        )
    )

    for name in (
        "place_lonlat",
        "friends",
        "visits",
        "visit_counts",
        "check_ins",
        "check_in_times",
    ):
        assert np.array_equal(getattr(plain, name), getattr(messy, name)), name


def test_ids_may_be_written_as_whole_floats(tmp_path: Path) -> None:
    ds = read_lbsn(write_dataset(tmp_path, social_relations="0.0\t1.0\n"))

    assert ds.friends.tolist() == [[0, 1]]
    assert ds.friends.dtype == np.int64


def test_places_without_coordinates_are_reported(tmp_path: Path) -> None:
    write_dataset(tmp_path, poi_coos="0\t40.44\t-79.99\n1\t40.45\t-80.00\n2\t36.10\t-115.17\n")

    with pytest.raises(LbsnFormatError) as error:
        read_lbsn(tmp_path)

    problem = lbsn.PLACES_WITHOUT_COORDINATES.format(missing=1, count=4, first=3)
    assert str(error.value) == lbsn.AT_FILE.format(file="Yelp_poi_coos.txt", problem=problem)


def test_without_a_declared_category_count_it_is_inferred(tmp_path: Path) -> None:
    ds = read_lbsn(write_dataset(tmp_path, data_size="3\t4\n", poi_categories="0\t7\n"))

    assert ds.n_categories == 8


def test_friendships_listed_both_ways_or_twice_collapse(tmp_path: Path) -> None:
    ds = read_lbsn(write_dataset(tmp_path, social_relations="1\t0\n0\t1\n1\t2\n1\t2\n"))

    assert unique_friend_pairs(ds).tolist() == [[1, 0], [1, 2]]


def test_visit_totals_add_splits_and_repeats_and_take_the_latest_check_in(
    tmp_path: Path,
) -> None:
    ds = read_lbsn(write_dataset(tmp_path, train="0\t0\t5\n0\t1\t2\n0\t0\t1\n", test="0\t0\t3\n"))

    totals = visit_totals(ds)

    assert totals.pairs.tolist() == [[0, 0], [0, 1], [0, 3]]
    assert totals.weights.tolist() == [9, 2, 1]
    assert totals.last_check_in[:2].tolist() == [1185724800.0, 1185638400.0]
    assert np.isnan(totals.last_check_in[2])


def test_repeated_check_ins_collapse(tmp_path: Path) -> None:
    ds = read_lbsn(write_dataset(tmp_path, check_ins="0\t0\t5\n0\t0\t5\n0\t0\t6\n1\t0\t5\n"))

    pairs, times = unique_check_ins(ds)

    assert pairs.tolist() == [[0, 0], [0, 0], [1, 0]]
    assert times.tolist() == [5, 6, 5]


def test_a_place_shares_its_visits_between_its_categories(tmp_path: Path) -> None:
    ds = read_lbsn(write_dataset(tmp_path))
    totals = visit_totals(ds)

    # Category 0 -> label 1, category 1 -> label 0. User 0: place 0 (5, both categories),
    # place 1 (2, category 1), place 3 (1, category 0): label 1 gets 2.5 + 1, label 0 2.5 + 2.
    shares = category_shares(ds, totals.pairs, totals.weights, np.array([1, 0]), 2)

    assert shares[0].tolist() == pytest.approx([4.5 / 8, 3.5 / 8])
    assert shares[1].tolist() == pytest.approx([0.5, 0.5])  # place 0 only; place 2 has none
    assert shares[2].tolist() == [0.0, 0.0]  # no visits


def test_a_home_is_in_the_busiest_area_not_between_two_cities() -> None:
    pittsburgh = np.array([[-79.99, 40.44], [-80.00, 40.45], [-79.98, 40.43]])
    las_vegas = np.array([[-115.17, 36.10], [-115.16, 36.11]])
    place_lonlat = np.concatenate([pittsburgh, las_vegas])
    pairs = np.array([[0, 0], [0, 1], [0, 2], [0, 3], [0, 4]])
    weights = np.array([1.0, 1.0, 1.0, 1.0, 1.0])

    home = home_locations(2, place_lonlat, pairs, weights)

    assert home[0].tolist() == pytest.approx(robust_centre(pittsburgh), abs=1e-9)
    assert np.isnan(home[1]).all()  # user 1 visited nothing


def test_homes_are_robust_centres_of_the_busiest_area_on_yelp_small(lbsn_dir: Path) -> None:
    ds = read_lbsn(lbsn_dir)
    totals = visit_totals(ds)
    homes = home_locations(ds.n_users, ds.place_lonlat, totals.pairs, totals.weights)
    users, points = totals.pairs[:, 0], ds.place_lonlat[totals.pairs[:, 1]]
    keep = busiest_area(users, points, totals.weights, ds.n_users)

    for user in range(0, ds.n_users, 7):
        mine = (users == user) & keep
        expected = robust_centre(points[mine], totals.weights[mine])
        assert homes[user].tolist() == pytest.approx(expected, abs=1e-9)
    distance = haversine_m(homes[users, 0], homes[users, 1], points[:, 0], points[:, 1])
    nearest = np.full(ds.n_users, np.inf)
    np.minimum.at(nearest, users, distance)
    assert nearest.max() < 10_000


def test_yelp_small_reads_with_the_documented_sizes(lbsn_dir: Path) -> None:
    ds = read_lbsn(lbsn_dir)

    assert (ds.prefix, ds.n_users, ds.n_places, ds.n_categories) == ("Yelp_", 1000, 5255, 425)
    assert len(ds.friends) == len(unique_friend_pairs(ds)) == 5666
    assert np.bincount(ds.visit_splits).tolist() == [23275, 3217, 7367]
    totals = visit_totals(ds)
    assert len(totals.pairs) == 33859  # the splits are disjoint
    assert not np.isnan(totals.last_check_in).any()  # every visit has a check-in
    assert len(ds.check_ins) == 35571
    assert len(unique_check_ins(ds)[0]) == 35559
    assert len(np.unique(ds.place_categories, axis=0)) == 16904
