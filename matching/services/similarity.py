"""Pairwise similarity and look-alikes of one person, from the published embeddings.

Permissions are checked here as well as in the views: only staff, or the seed user themself,
may ask how similar two people are; only staff may list someone's look-alikes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from matching.ml.index import search
from matching.serving import store
from users.models import Profile, User

NOT_ALLOWED = "Only staff, or the seed user themself, may ask for this similarity."
STAFF_ONLY = "Only staff may list look-alikes."
UNKNOWN_USER = "No such user."


@dataclass
class Similarity:
    seed_user_id: int
    target_user_id: int
    similarity: float  # in [0, 1]
    cosine: float | None
    confidence: float
    model_version: str
    ranker: str
    timestamp: str


def similarity_between(*, actor: User, seed_user_id: int, target_user_id: int) -> Similarity:
    """How alike two people are: the cosine of the seed's seed embedding with the target's target
    embedding when a set is published, else the Jaccard of their interests.

    Confidence says how much that rests on: 1 with both embedded by the model, 0.3 with rules on
    two filled-in profiles, less with empty ones.
    """
    if not (actor.is_staff or actor.pk == seed_user_id):
        raise PermissionDenied(NOT_ALLOWED)
    profiles = {p.user_id: p for p in Profile.objects.filter(user_id__in=[seed_user_id, target_user_id])}
    if not User.objects.filter(pk__in=[seed_user_id, target_user_id]).count() == len({seed_user_id, target_user_id}):
        raise User.DoesNotExist(UNKNOWN_USER)
    now = timezone.now().isoformat()
    serving = store.current()
    if serving is not None:
        seed, seed_found = serving.vectors(np.array([seed_user_id]), "seed")
        target, target_found = serving.vectors(np.array([target_user_id]), "target")
        if seed_found[0] and target_found[0]:
            cosine = float(np.dot(seed[0], target[0]))
            return Similarity(seed_user_id, target_user_id, round((cosine + 1) / 2, 4), round(cosine, 4), 1.0,
                              serving.version, "model", now)
    a = set(getattr(profiles.get(seed_user_id), "interests", []) or [])
    b = set(getattr(profiles.get(target_user_id), "interests", []) or [])
    jaccard = len(a & b) / len(a | b) if a | b else 0.0
    confidence = 0.3 if a and b else 0.1
    return Similarity(seed_user_id, target_user_id, round(jaccard, 4), None, confidence, "", "rules", now)


def similar_users(*, actor: User, user_id: int, limit: int) -> tuple[str, list[tuple[int, float]]]:
    """(model version, [(user id, cosine)]) of the people most like ``user_id`` (staff only)."""
    if not actor.is_staff:
        raise PermissionDenied(STAFF_ONLY)
    if not User.objects.filter(pk=user_id).exists():
        raise User.DoesNotExist(UNKNOWN_USER)
    serving = store.current()
    if serving is None:
        return "", []
    target, found = serving.vectors(np.array([user_id]), "target")
    if not found[0]:
        return serving.version, []
    scores, ids = search(serving.index, target[0], limit + 1)
    pairs = [(int(i), round(float(s), 4)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0 and i != user_id]
    return serving.version, pairs[:limit]
