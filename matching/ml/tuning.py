"""Hyper-parameter search for the towers on the evaluation split, never on the held-out pairs.

The held-out friendships of an evaluation are set aside first and never read. The remaining
(known) friendships are split again into tuning-train and tuning-validation; every trial trains
towers on tuning-train and is scored by retrieval recall@k on tuning-validation, with only
tuning-train as the friend input. Trials are drawn at random from a grid (seeded), which covers
the few parameters that matter here as well as a sequential optimiser would in so few trials.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from matching.ml.features import adjacency
from matching.ml.inputs import UserInputs
from matching.ml.lifecycle import retrieval_recall
from matching.ml.model import ModelConfig
from matching.ml.train import TrainConfig, TrainingData, train

SPACE: dict[str, tuple[object, ...]] = {
    "lr": (1e-3, 3e-3, 1e-2),
    "temperature": (0.05, 0.1, 0.2),
    "batch_size": (256, 1024),
    "weight_decay": (1e-6, 1e-5, 1e-4),
    "dnn_hidden": ((64, 128, 64), (128, 256, 128)),
}
MODEL_FIELDS = {"temperature", "dnn_hidden"}


@dataclass(frozen=True)
class Trial:
    params: dict[str, object]
    recall: float
    seconds: float


def trials_from_grid(n: int, seed: int) -> list[dict[str, object]]:
    grid = [dict(zip(SPACE, values, strict=True)) for values in itertools.product(*SPACE.values())]
    order = np.random.default_rng(seed).permutation(len(grid))
    return [grid[i] for i in order[:n]]


def tune(
    model_config: ModelConfig, train_config: TrainConfig, inputs: UserInputs, known: np.ndarray, pairs: object,
    lon: np.ndarray, lat: np.ndarray, *, trials: int, seed: int = 0, k: int = 20, validation_share: float = 0.2,
    log: Callable[[str], None] = lambda _m: None,
) -> list[Trial]:
    """Run ``trials`` configurations; results sorted best first. ``known`` excludes held-out pairs."""
    rng = np.random.default_rng(seed)
    val = rng.random(len(known)) < validation_share
    tune_train, tune_val = known[~val], known[val]
    tune_inputs = inputs.with_friends(adjacency(tune_train[:, 0], tune_train[:, 1], inputs.n_users))
    results = []
    for i, params in enumerate(trials_from_grid(trials, seed)):
        started = time.perf_counter()
        mc = replace(model_config, **{k_: v for k_, v in params.items() if k_ in MODEL_FIELDS})
        tc = replace(train_config, rank_folds=0, **{k_: v for k_, v in params.items() if k_ not in MODEL_FIELDS})
        data = TrainingData(inputs=tune_inputs, positives=tune_train, pairs=pairs, lon=lon, lat=lat, friend_edges=tune_train)
        model = train(mc, tc, data, build_featurizer=None).model
        recall = retrieval_recall(model, inputs, tune_train, tune_val, k=k, seed=seed)
        results.append(Trial(params=params, recall=recall, seconds=time.perf_counter() - started))
        log(f"trial {i + 1}/{trials}: recall@{k} {recall:.4f} {params}")
    return sorted(results, key=lambda t: -t.recall if np.isfinite(t.recall) else np.inf)
