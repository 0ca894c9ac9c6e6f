"""The request path's set operations return exactly what NumPy's do."""

from __future__ import annotations

import numpy as np
import pytest

from matching.ml.arrays import member, unique, unique_counts


def _samples() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [
        np.zeros(0, dtype=np.int64), np.array([7]), np.array([4, 4, 4]), np.array([-3, 2**40, -3, 0]),
        rng.integers(0, 50, 300), rng.integers(-10**12, 10**12, 3000), rng.random(200).round(1),
    ]


@pytest.mark.parametrize("values", _samples())
def test_unique_and_counts_equal_numpys(values: np.ndarray) -> None:
    np.testing.assert_array_equal(unique(values), np.unique(values))
    assert unique(values).dtype == values.dtype
    got, want = unique_counts(values), np.unique(values, return_counts=True)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_unique_leaves_its_input_alone() -> None:
    values = np.array([3, 1, 3, 2])
    unique(values)
    unique_counts(values)
    np.testing.assert_array_equal(values, [3, 1, 3, 2])


def test_membership_by_search_equals_numpys_isin() -> None:
    rng = np.random.default_rng(9)
    for n in (0, 1, 7, 300):
        universe = unique(rng.integers(0, 500, n))
        values = rng.integers(-5, 520, 400)
        np.testing.assert_array_equal(member(values, universe), np.isin(values, universe))
    assert member(np.zeros((2, 3), dtype=np.int64), np.array([0])).shape == (2, 3)
