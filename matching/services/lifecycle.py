"""The model after its first training: nightly retraining behind an evaluation gate, hourly
incremental updates of the ranking head, and compressed variants for CPU serving.

Full retraining stays the backbone (seed 001): it relearns the towers from the whole graph, so
the embedding space follows how people actually connect. Incremental updates only move the
ranking head (and, when asked, the towers' output layers) on the labels of the last hours: cheap
and quick to react to what people accept or pass, but they cannot fix the embedding space, and
errors can pile up between nights; each nightly version starts again from a full pass.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from matching.feature_store import load_city
from matching.ml.data import CityData
from matching.ml.features import user_features
from matching.ml.inputs import UserInputs
from matching.ml.lifecycle import LabelledPairs, finetune_head, gate, retrieval_recall
from matching.ml.model import ModelConfig
from matching.ml.pairs import PairFeaturizer
from matching.models import EmbeddingSet, Interaction, ModelVersion
from matching.services.registry import (
    model_version_activate,
    model_version_create,
    model_version_load,
)
from matching.services.training import model_train, training_city
from matching.serving import PERSON_ROWS_DIR, SERVING_SET_KEY, set_dir

logger = logging.getLogger(__name__)

NO_ACTIVE = "No active model version: train one first (train_model --activate)."
NO_NEW_LABELS = "No new labelled pairs since {since:%Y-%m-%d %H:%M}: nothing to update."


@dataclass(frozen=True)
class GateData:
    """What every version is judged on: the city without the gate slice (its features, its
    friendships as input) and the slice's pairs. Built once, for any number of versions."""

    city: CityData
    held: np.ndarray
    features: np.ndarray

    @classmethod
    def of(cls, full: CityData) -> GateData:
        train_city, held = training_city(full)
        return cls(city=train_city, held=held, features=user_features(train_city, timezone.now().timestamp()))


def gate_metric(version: ModelVersion, *, data: GateData | None = None, k: int | None = None) -> float:
    """Recall@k (``MODEL_GATE_K``) of ``version`` on the gate slice, the rest of the graph as input."""
    data = data if data is not None else GateData.of(load_city())
    if not len(data.held):
        return float("nan")
    model = model_version_load(version)
    inputs = UserInputs.build(data.city, data.features, ModelConfig.from_dict(version.config["model"]))
    known = np.column_stack([data.city.friend_u, data.city.friend_v])
    return retrieval_recall(model, inputs, known, data.held, k=k or settings.MODEL_GATE_K)


def model_retrain_scheduled(
    *, margin: float | None = None, epochs: int | None = None, overrides: dict[str, object] | None = None,
) -> ModelVersion:
    """The nightly job: warm start from the active version, one shuffled pass, then the gate.

    1. Train a candidate (warm from the active version when there is one) on everything but the
       gate slice, for ``MODEL_RETRAIN_EPOCHS`` shuffled passes (1 by default).
    2. Measure candidate and active version on the gate slice, with the same inputs.
    3. Activate the candidate if it is not worse by more than ``MODEL_GATE_MARGIN``, and queue
       its embeddings; otherwise keep it, inactive, with the reason in its notes (shown in admin).
    """
    margin = settings.MODEL_GATE_MARGIN if margin is None else margin
    epochs = settings.MODEL_RETRAIN_EPOCHS if epochs is None else epochs
    active = ModelVersion.objects.filter(is_active=True).first()
    data = GateData.of(load_city())
    candidate = model_train(epochs=epochs, warm_start=active is not None, folds=1, city=data.city,
                            overrides=overrides)
    candidate_metric = gate_metric(candidate, data=data)
    active_metric = gate_metric(active, data=data) if active is not None else float("nan")
    metric = f"recall@{settings.MODEL_GATE_K}"
    decision = gate(candidate=candidate_metric, active=active_metric, margin=margin, metric=metric)
    candidate.metrics = {**candidate.metrics,
                         f"gate_{metric}": candidate_metric if np.isfinite(candidate_metric) else None,
                         f"gate_active_{metric}": active_metric if np.isfinite(active_metric) else None}
    candidate.notes = ("Activated by the nightly gate: " if decision.accept else "Not activated by the nightly gate: ") \
        + decision.reason
    candidate.save(update_fields=["metrics", "notes"])
    logger.info("nightly retraining: %s", candidate.notes)
    if decision.accept:
        candidate = model_version_activate(version=candidate, note=candidate.notes)
        from matching.tasks import embeddings_rebuild_task

        transaction.on_commit(lambda: embeddings_rebuild_task.delay(candidate.pk))
    return candidate


def labelled_pairs_since(since: dt.datetime) -> list[tuple[int, int, float]]:
    """(served person, shown person, label) from what people did with whom they were shown.

    A connect request or a like is a 1 for (asker, asked); a pass is a 0; an accepted request is a
    1 for (the one who asked, the one who accepted), as the asker was shown the other. Views and
    impressions carry no label: seeing is not choosing.
    """
    rows = Interaction.objects.filter(
        occurred_at__gt=since, target_user__isnull=False,
        kind__in=[Interaction.Kind.CONNECT_REQUEST, Interaction.Kind.LIKE, Interaction.Kind.PASS, Interaction.Kind.ACCEPT],
    ).values_list("actor_id", "target_user_id", "kind")
    labels: dict[tuple[int, int], float] = {}
    for actor, target, kind in rows.order_by("occurred_at"):
        if kind == Interaction.Kind.ACCEPT:
            labels[(target, actor)] = 1.0
        else:
            labels[(actor, target)] = 0.0 if kind == Interaction.Kind.PASS else 1.0
    return [(u, v, y) for (u, v), y in labels.items()]


def model_update_incremental(*, since: dt.datetime | None = None, lr: float | None = None, epochs: int = 3,
                             last_tower_layers: bool = False) -> ModelVersion | None:
    """The hourly job: fine-tune the active version on new labels into a minor version (vN.M).

    With the head alone the towers are unchanged, so the new version serves from a copy of its
    parent's embedding set (hard links: no recomputation); people whose own data changed keep
    being refreshed by their debounced per-person tasks. With ``last_tower_layers`` every
    embedding moves, so the whole set is recomputed. Returns None when there is nothing new.
    """
    active = ModelVersion.objects.filter(is_active=True).first()
    if active is None:
        raise RuntimeError(NO_ACTIVE)
    since = since or active.created_at
    labelled = labelled_pairs_since(since)
    city = load_city()
    index = {int(uid): row for row, uid in enumerate(city.user_ids)}
    labelled = [(index[u], index[v], y) for u, v, y in labelled if u in index and v in index]
    if not labelled:
        logger.info(NO_NEW_LABELS.format(since=since))
        return None
    features = user_features(city, timezone.now().timestamp())
    config = ModelConfig.from_dict(active.config["model"])
    inputs = UserInputs.build(city, features, config)
    featurizer = PairFeaturizer(city, features)
    u = np.array([p[0] for p in labelled], dtype=np.int64)
    v = np.array([p[1] for p in labelled], dtype=np.int64)
    pair_features = featurizer.for_pairs(u, v)
    pairs = LabelledPairs(u=u, v=v, pair_features=pair_features, labels=np.array([p[2] for p in labelled], np.float32))
    model = model_version_load(active)
    metrics = finetune_head(model, inputs, pairs, lr=lr or settings.MODEL_INCREMENTAL_LR, epochs=epochs,
                            last_tower_layers=last_tower_layers)
    version = model_version_create(
        model=model, config={**active.config, "incremental": {"since": since.isoformat(), "last_tower_layers": last_tower_layers}},
        metrics={**active.metrics, **metrics}, curves=active.curves, parent=active, minor=True,
    )
    model_version_activate(version=version, note=f"incremental update of {active.name} on {len(labelled)} new labels")
    if last_tower_layers:
        from matching.tasks import embeddings_rebuild_task

        transaction.on_commit(lambda: embeddings_rebuild_task.delay(version.pk))
    else:
        embeddings_share(parent=active, version=version)
    return version


def embeddings_share(*, parent: ModelVersion, version: ModelVersion) -> EmbeddingSet | None:
    """Serve ``version`` from its parent's newest ready set (same towers): hard-linked files."""
    source = EmbeddingSet.objects.filter(model_version=parent, status=EmbeddingSet.Status.READY).order_by("-created_at").first()
    if source is None:
        return None
    shared = EmbeddingSet.objects.create(
        model_version=version, status=EmbeddingSet.Status.READY, users=source.users, chunks_total=source.chunks_total,
        chunks_done=source.chunks_total, index_kind=source.index_kind, finished_at=timezone.now(),
    )
    src, dst = set_dir(source), set_dir(shared)
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():  # the arrays, the index and the serving extras; not the inputs
        if path.is_file():
            os.link(path, dst / path.name)
    if (src / PERSON_ROWS_DIR).is_dir():  # each person's rows, as of when the parent read them
        (dst / PERSON_ROWS_DIR).mkdir()
        for path in (src / PERSON_ROWS_DIR).iterdir():
            os.link(path, dst / PERSON_ROWS_DIR / path.name)
    transaction.on_commit(lambda: cache.set(SERVING_SET_KEY, f"{shared.pk}:{version.name}:{timezone.now().timestamp():.0f}",
                                            timeout=None))
    return shared

