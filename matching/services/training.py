"""Training the matcher on the people in the database, and recording the result as a version."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict

import numpy as np
from django.utils import timezone

from matching.feature_store import load_city
from matching.ml.data import KIND_CODE, CityData
from matching.ml.features import user_features
from matching.ml.inputs import UserInputs
from matching.ml.lifecycle import gate_slice
from matching.ml.model import ModelConfig, default_model_config
from matching.ml.pairs import PairFeaturizer
from matching.ml.train import TrainConfig, TrainingData, train
from matching.models import ModelVersion
from matching.services.registry import (
    model_version_activate,
    model_version_create,
    model_version_load,
)

logger = logging.getLogger(__name__)

# People in one activity beyond this many are not all paired with each other as positives:
# a 500-person concert says little about who would befriend whom.
MAX_CO_PARTICIPANTS = 30


def positive_pairs(city: CityData) -> np.ndarray:
    """Who matched whom, as user-row pairs: friendships, co-participation, mutual likes.

    Impressions without a click are not negatives here, and they are not positives either.
    """
    pairs = [np.column_stack([city.friend_u, city.friend_v])]
    # Co-participation: every pair within an activity of at most MAX_CO_PARTICIPANTS people.
    if len(city.join_user):
        order = np.argsort(city.join_activity, kind="stable")
        activity, users = city.join_activity[order], city.join_user[order]
        starts = np.flatnonzero(np.r_[True, activity[1:] != activity[:-1]])
        for start, end in zip(starts, np.r_[starts[1:], len(activity)], strict=True):
            members = np.unique(users[start:end])
            if 2 <= len(members) <= MAX_CO_PARTICIPANTS:
                a, b = np.triu_indices(len(members), k=1)
                pairs.append(np.column_stack([members[a], members[b]]))
    # Mutual likes: a liked b and b liked a.
    likes = (city.event_kind == KIND_CODE["like"]) & (city.event_target >= 0)
    if likes.any():
        n = city.n_users
        directed = set((city.event_user[likes] * n + city.event_target[likes]).tolist())
        mutual = [(k // n, k % n) for k in directed if (k % n) * n + k // n in directed and k // n < k % n]
        if mutual:
            pairs.append(np.array(mutual, dtype=np.int64))
    allpairs = np.concatenate(pairs).astype(np.int64)
    allpairs = allpairs[allpairs[:, 0] != allpairs[:, 1]]
    low, high = allpairs.min(axis=1), allpairs.max(axis=1)
    unique = np.unique(low * city.n_users + high)
    return np.column_stack([unique // city.n_users, unique % city.n_users])


def training_city(city: CityData) -> tuple[CityData, np.ndarray]:
    """The city without the gate slice of friendships, and those pairs (as rows).

    The gate slice (``matching.ml.lifecycle.gate_slice``, a fixed hash of the two user ids) is
    never trained on by any version, so the evaluation gate can compare any two versions on it.
    """
    held = gate_slice(city.user_ids[city.friend_u], city.user_ids[city.friend_v])
    train = dataclasses.replace(city, friend_u=city.friend_u[~held], friend_v=city.friend_v[~held])
    return train, np.column_stack([city.friend_u[held], city.friend_v[held]])


def model_train(
    *, mode: str = "listwise", epochs: int | None = None, warm_start: bool = False,
    activate: bool = False, seed: int = 0, progress: bool = False, folds: int | None = None,
    city: CityData | None = None, overrides: dict[str, object] | None = None,
) -> ModelVersion:
    """Train on everyone in the database and record a new version (activated when asked).

    1. Load every user (less the gate slice of friendships) and compute their features now.
    2. Positives: accepted connections, co-participation, mutual likes.
    3. With ``warm_start``, start from the active version's weights (and its sizes).
    4. Train towers and ranking head; save the weights and metrics as a new ModelVersion.
    """
    now = timezone.now().timestamp()
    city = city if city is not None else training_city(load_city())[0]
    features = user_features(city, now)
    parent = ModelVersion.objects.filter(is_active=True).first() if warm_start else None
    model = model_version_load(parent) if parent is not None else None
    model_config = (
        ModelConfig.from_dict(parent.config["model"]) if parent is not None
        else default_model_config(city.n_users, city.n_venues)
    )
    train_config = TrainConfig(mode=mode, seed=seed, progress=progress)
    if epochs is not None:
        train_config.epochs = epochs
    if folds is not None:
        train_config.rank_folds = folds
    for name, value in (overrides or {}).items():
        if not hasattr(train_config, name):
            raise TypeError(f"TrainConfig has no field {name!r}")
        setattr(train_config, name, value)
    friends = np.column_stack([city.friend_u, city.friend_v])

    def build_featurizer(edges: np.ndarray) -> PairFeaturizer:
        # Degrees of the known graph only: a held-back edge must not count in anyone's degree.
        degree = np.bincount(edges.ravel(), minlength=city.n_users).astype(np.float64)
        sub = dataclasses.replace(city, friend_u=edges[:, 0], friend_v=edges[:, 1],
                                  requests_total=degree, requests_accepted=degree)
        return PairFeaturizer(sub, features)

    inputs = UserInputs.build(city, features, model_config)
    data = TrainingData(
        inputs=inputs, positives=positive_pairs(city), pairs=PairFeaturizer(city, features),
        lon=city.lon, lat=city.lat, friend_edges=friends,
    )
    logger.info("training on %d users, %d positive pairs", city.n_users, len(data.positives))
    result = train(model_config, train_config, data, build_featurizer, model=model)
    version = model_version_create(
        model=result.model,
        config={"model": model_config.to_dict(), "train": asdict(train_config)},
        metrics={**result.metrics, "users": float(city.n_users), "positives": float(len(data.positives))},
        curves=result.curves, parent=parent,
    )
    if activate:
        version = model_version_activate(version=version, note="activated after training")
    return version
