"""Multi-objective score fusion (seed 002 section 2.5): ``sum_i w_i * (alpha_i * s_i) ** beta_i``.

Each objective score ``s_i`` is in [0, 1] (clipped); ``alpha`` rescales it and ``beta`` bends it
(``beta`` > 1 rewards only high scores, < 1 flattens differences). Weights are not normalised:
what matters is the order of the fused scores, and ratios between weights say the trade-off.

Objectives (the names the serving code provides):
- ``distance``: 1 at the asker's position, 0 at the edge of the radius;
- ``similarity``: the model's match score (or the rules' score without a model);
- ``acceptance``: the ranking head's P(connect), when a model serves;
- ``freshness``: how recently the person was active (1 = now, 0 = a month or more);
- ``reciprocity``: the chance the other person connects back (the head scored the other way).
The default ``{distance: 0.6, similarity: 0.4}`` reproduces seed 000 section 5.1 exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

OBJECTIVES: tuple[str, ...] = ("distance", "similarity", "acceptance", "freshness", "reciprocity")
MAX_WEIGHT = 100.0
MAX_ALPHA = 100.0
MAX_BETA = 10.0


class FusionError(ValueError):
    pass


@dataclass(frozen=True)
class Objective:
    weight: float
    alpha: float = 1.0
    beta: float = 1.0


def parse_objectives(raw: Mapping[str, object]) -> dict[str, Objective]:
    """Validate ``{"name": {"weight": w, "alpha": a, "beta": b}}`` (alpha and beta default to 1).

    Refuses unknown objectives, non-numbers, non-finite values, negative weights, non-positive
    alphas and betas (a negative exponent would turn a low score into a huge one), values above
    the maxima, and configurations whose weights are all zero.
    """
    if not isinstance(raw, Mapping) or not raw:
        raise FusionError("Give at least one objective.")
    out: dict[str, Objective] = {}
    for name, spec in raw.items():
        if name not in OBJECTIVES:
            raise FusionError(f"Unknown objective {name!r}; known: {', '.join(OBJECTIVES)}.")
        if not isinstance(spec, Mapping):
            raise FusionError(f"{name}: give weight, alpha and beta as numbers.")
        unknown = set(spec) - {"weight", "alpha", "beta"}
        if unknown:
            raise FusionError(f"{name}: unknown keys {', '.join(sorted(unknown))}.")
        values = {}
        for key, default, low_ok, high in (("weight", None, True, MAX_WEIGHT), ("alpha", 1.0, False, MAX_ALPHA),
                                           ("beta", 1.0, False, MAX_BETA)):
            value = spec.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FusionError(f"{name}: {key} must be a number.")
            value = float(value)
            if not math.isfinite(value):
                raise FusionError(f"{name}: {key} must be finite.")
            if value < 0 or (value == 0 and not low_ok):
                raise FusionError(f"{name}: {key} must be {'zero or more' if low_ok else 'above zero'}.")
            if value > high:
                raise FusionError(f"{name}: {key} must be at most {high:g}.")
            values[key] = value
        out[name] = Objective(**values)
    if not any(o.weight > 0 for o in out.values()):
        raise FusionError("At least one weight must be above zero.")
    return out


def fuse(scores: Mapping[str, np.ndarray], objectives: Mapping[str, Objective]) -> np.ndarray:
    """Fused score per candidate. An objective with no score for this request counts as 0."""
    n = len(next(iter(scores.values()))) if scores else 0
    total = np.zeros(n, dtype=np.float64)
    for name, objective in objectives.items():
        if objective.weight == 0 or name not in scores:
            continue
        s = np.clip(np.nan_to_num(np.asarray(scores[name], dtype=np.float64), nan=0.0), 0.0, 1.0)
        total += objective.weight * np.power(objective.alpha * s, objective.beta)
    return total


DEFAULT_OBJECTIVES: dict[str, dict[str, float]] = {
    "distance": {"weight": 0.6, "alpha": 1.0, "beta": 1.0},
    "similarity": {"weight": 0.4, "alpha": 1.0, "beta": 1.0},
}
