"""Storing an activity's ranked participant recommendations (computed in ``matching``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import F

from activities.models import Activity, Recommendation


@dataclass
class RankedCandidate:
    user_id: int
    score: float
    reasons: dict[str, object] = field(default_factory=dict)


def activity_recommendations_store(
    *, activity_id: int, ranked: list[RankedCandidate], ranker: str, model_version: str,
    computed_at: dt.datetime,
) -> int:
    """Replace an activity's recommendations with ``ranked`` (best first) in one transaction.

    A computation that started before the one already stored (two runs overlapping) is dropped,
    so an older list never overwrites a newer one. Returns how many were stored (0 when dropped
    or when the activity is gone).
    """
    with transaction.atomic():
        activity = Activity.objects.select_for_update().filter(pk=activity_id).first()
        if activity is None or (activity.recommended_at is not None and activity.recommended_at > computed_at):
            return 0
        Recommendation.objects.filter(activity_id=activity_id).delete()
        Recommendation.objects.bulk_create([
            Recommendation(activity_id=activity_id, user_id=c.user_id, rank=rank, score=round(float(c.score), 6),
                           reasons=c.reasons)
            for rank, c in enumerate(ranked, start=1)
        ])
        Activity.objects.filter(pk=activity_id).update(
            recommended_at=computed_at, recommendation_ranker=ranker, recommendation_model_version=model_version,
            recommendation_runs=F("recommendation_runs") + 1,
        )
    return len(ranked)
