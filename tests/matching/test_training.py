"""A short training run on the real yelp-small sample learns something (no database)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from matching.lbsn import read_lbsn, unique_friend_pairs
from matching.ml.features import user_features
from matching.ml.inputs import UserInputs
from matching.ml.lbsn_data import city_from_lbsn, dataset_now
from matching.ml.model import RALM, default_model_config
from matching.ml.pairs import PairFeaturizer
from matching.ml.train import TrainConfig, TrainingData, seed_everything, train_towers


@pytest.mark.parametrize("mode", ["listwise", "pointwise", "pairwise"])
def test_a_short_run_on_yelp_small_lowers_validation_loss(lbsn_dir: Path, mode: str) -> None:
    dataset = read_lbsn(lbsn_dir)
    city = city_from_lbsn(dataset)
    features = user_features(city, dataset_now(dataset))
    config = default_model_config(city.n_users, city.n_venues)
    friends = unique_friend_pairs(dataset)
    data = TrainingData(
        inputs=UserInputs.build(city, features, config), positives=friends,
        pairs=PairFeaturizer(city, features), lon=city.lon, lat=city.lat, friend_edges=friends,
    )
    negatives = "hard" if mode == "pairwise" else "popularity"
    train_config = TrainConfig(mode=mode, negatives=negatives, epochs=8, patience=10, seed=0)
    model = RALM(config)
    metrics, curves = train_towers(model, train_config, data, seed_everything(0))
    losses = curves["val_loss"]
    assert len(losses) == 8 and np.isfinite(losses).all()
    assert min(losses[1:]) < losses[0]
    assert metrics["tower_val_loss"] == pytest.approx(min(losses))
