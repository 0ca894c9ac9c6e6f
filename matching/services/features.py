"""Feature vectors for the web app: everyone in batch, one person online, a request's context."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np
from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from matching.feature_store import circle_of, load_city
from matching.ml.features import ConditionsProvider, context_features, user_features


def user_features_batch(*, now: dt.datetime | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, (n, D) float32 features) of every user."""
    when = (now or timezone.now()).timestamp()
    city = load_city()
    return city.user_ids, user_features(city, when)


def user_features_online(*, user_id: int, now: dt.datetime | None = None) -> np.ndarray:
    """One person's feature vector, equal to their row of the batch matrix at the same time."""
    when = (now or timezone.now()).timestamp()
    city = load_city(circle_of(user_id))
    row = int(np.searchsorted(city.user_ids, user_id))
    if row >= len(city.user_ids) or city.user_ids[row] != user_id:
        raise ValueError(f"user {user_id} does not exist")
    return user_features(city, when)[row]


@lru_cache(maxsize=1)
def conditions_provider() -> ConditionsProvider:
    """The weather and traffic source named by MATCHING_CONDITIONS_PROVIDER (neutral by default)."""
    return import_string(settings.MATCHING_CONDITIONS_PROVIDER)()


def request_context(*, lon: float, lat: float, when: dt.datetime, nearby_activity_types: list[int]) -> np.ndarray:
    """The 8 context features of a request at a place and time."""
    return context_features(when, conditions_provider().conditions(lon, lat, when), nearby_activity_types)
