"""Multi-objective fusion: the default is seed 000's 0.6/0.4, and bad weights are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from matching.ml.fusion import DEFAULT_OBJECTIVES, FusionError, fuse, parse_objectives


def test_default_reproduces_distance_and_similarity_weights() -> None:
    rng = np.random.default_rng(0)
    distance, similarity = rng.random(50), rng.random(50)
    fused = fuse({"distance": distance, "similarity": similarity}, parse_objectives(DEFAULT_OBJECTIVES))
    np.testing.assert_allclose(fused, 0.6 * distance + 0.4 * similarity)


def test_alpha_and_beta_follow_the_formula() -> None:
    objectives = parse_objectives({"similarity": {"weight": 2.0, "alpha": 0.5, "beta": 2.0},
                                   "freshness": {"weight": 1.0}})
    fused = fuse({"similarity": np.array([0.8]), "freshness": np.array([0.3])}, objectives)
    assert fused[0] == pytest.approx(2.0 * (0.5 * 0.8) ** 2 + 0.3)


def test_scores_are_clipped_and_missing_objectives_count_zero() -> None:
    objectives = parse_objectives({"similarity": {"weight": 1.0, "beta": 0.5}, "acceptance": {"weight": 1.0}})
    fused = fuse({"similarity": np.array([-0.5, np.nan, 2.0])}, objectives)
    assert np.all(np.isfinite(fused))
    np.testing.assert_allclose(fused, [0.0, 0.0, 1.0])


@pytest.mark.parametrize(("raw", "message"), [
    ({}, "at least one objective"),
    ({"charm": {"weight": 1}}, "Unknown objective 'charm'"),
    ({"distance": {"weight": -0.1}}, "weight must be zero or more"),
    ({"distance": {"weight": 1, "beta": -1}}, "beta must be above zero"),
    ({"distance": {"weight": 1, "beta": 0}}, "beta must be above zero"),
    ({"distance": {"weight": 1, "alpha": 0}}, "alpha must be above zero"),
    ({"distance": {"weight": math.nan}}, "weight must be finite"),
    ({"distance": {"weight": math.inf}}, "weight must be finite"),
    ({"distance": {"weight": "0.5"}}, "weight must be a number"),
    ({"distance": {"weight": True}}, "weight must be a number"),
    ({"distance": {"weight": 1, "beta": 11}}, "beta must be at most 10"),
    ({"distance": {"weight": 1, "gamma": 2}}, "unknown keys gamma"),
    ({"distance": {"weight": 0}, "similarity": {"weight": 0}}, "At least one weight must be above zero"),
    ({"distance": 0.6}, "give weight, alpha and beta as numbers"),
])
def test_bad_configurations_are_refused(raw: dict[str, object], message: str) -> None:
    with pytest.raises(FusionError, match=message):
        parse_objectives(raw)
