"""Keeping the model good: the gate slice, the evaluation gate, incremental updates, compression."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from django.utils import timezone

from matching.feature_store import load_city
from matching.ml.lifecycle import (
    LabelledPairs,
    finetune_head,
    gate,
    gate_slice,
    quantise,
    retrieval_recall,
)
from matching.ml.model import RALM
from matching.models import EmbeddingSet, Interaction, ModelVersion
from matching.services.lifecycle import (
    gate_metric,
    model_retrain_scheduled,
    model_update_incremental,
)
from matching.services.registry import (
    model_version_activate,
    model_version_create,
    model_version_load,
)
from matching.services.training import model_train, training_city
from matching.serving import store
from tests.matching.test_refresh import served_city
from users.models import Connection

pytestmark = pytest.mark.django_db

# Small batches, so that a few epochs over a hundred people are enough steps to learn the groups.
SMALL = {"batch_size": 32, "rank_epochs": 5}


@pytest.fixture(autouse=True)
def media(fresh_serving: None, settings: object) -> None:
    settings.MODEL_GATE_K = 5  # type: ignore[attr-defined]  # the test towns have 100-odd people


def test_gate_slice_is_a_stable_tenth_whichever_way_the_pair_is_written() -> None:
    rng = np.random.default_rng(0)
    u, v = rng.integers(1, 10**7, 200_000), rng.integers(1, 10**7, 200_000)
    mask = gate_slice(u, v)
    assert np.array_equal(mask, gate_slice(v, u))
    assert abs(mask.mean() - 0.1) < 0.005


def test_gate_accepts_better_or_slightly_worse_and_refuses_worse() -> None:
    assert gate(candidate=0.30, active=0.25, margin=0.01).accept
    assert gate(candidate=0.245, active=0.25, margin=0.01).accept
    refused = gate(candidate=0.20, active=0.25, margin=0.01)
    assert not refused.accept and "worse than the active 0.2500 by more than 0.0100" in refused.reason
    assert gate(candidate=0.2, active=float("nan"), margin=0.01).accept  # nothing to compare with
    assert not gate(candidate=float("nan"), active=0.2, margin=0.01).accept


def _two_towns(groups: int = 6, size: int = 16) -> None:
    """Friend groups with distinct interests and places, enough pairs for a gate slice."""
    from django.contrib.gis.geos import Point

    from users.factories import ConnectionFactory, ProfileFactory

    interests = [["sports", "music"], ["art", "reading"], ["gaming", "technology"], ["food", "travel"],
                 ["nature", "pets"], ["dance", "nightlife"]]
    for g in range(groups):
        members = [ProfileFactory(location=Point(-80.1 + 0.08 * g + 0.001 * i, 40.44, srid=4326),
                                  interests=interests[g % 6], birth_year=1970 + 8 * g).user for i in range(size)]
        for i in range(size):
            for step in (1, 2, 3):
                ConnectionFactory(from_user=members[i], to_user=members[(i + step) % size], status="accepted")


def test_the_gate_refuses_a_worse_candidate_and_keeps_the_active_version(settings: object) -> None:
    _two_towns()
    trained = model_train(epochs=8, folds=1, activate=True, overrides=SMALL)
    # A constructed worse candidate: the trained towers with their weights scrambled.
    scrambled = model_version_load(trained)
    with torch.no_grad():
        for name, p in scrambled.named_parameters():
            if "tower" in name:
                p.copy_(torch.randn_like(p))
    worse = model_version_create(model=scrambled, config=trained.config, metrics={}, curves={})
    good, bad = gate_metric(trained), gate_metric(worse)
    assert good > bad
    decision = gate(candidate=bad, active=good, margin=0.01)
    assert not decision.accept


def test_nightly_retraining_activates_a_better_candidate_over_an_untrained_active_version() -> None:
    _two_towns()
    first = model_train(epochs=1, folds=1)
    torch.manual_seed(1)
    untrained = RALM(model_version_load(first).config)  # a constructed worse model: random weights
    active = model_version_create(model=untrained, config=first.config, metrics={}, curves={})
    model_version_activate(version=active)
    candidate = model_retrain_scheduled(margin=0.0, epochs=8, overrides=SMALL)
    candidate.refresh_from_db()
    assert candidate.is_active, candidate.notes
    assert candidate.parent_id == active.pk
    assert candidate.metrics["gate_recall@5"] > candidate.metrics["gate_active_recall@5"]
    assert candidate.notes.startswith("Activated by the nightly gate")


def test_nightly_retraining_refuses_with_the_reason_when_the_margin_cannot_be_met() -> None:
    _two_towns()
    active = model_train(epochs=8, folds=1, activate=True, overrides=SMALL)
    # A margin below zero demands a strictly better candidate by 1.0 recall: impossible.
    candidate = model_retrain_scheduled(margin=-1.0, epochs=1, overrides=SMALL)
    candidate.refresh_from_db()
    assert not candidate.is_active and ModelVersion.objects.get(is_active=True) == active
    assert candidate.notes.startswith("Not activated by the nightly gate: recall@5")


def test_no_version_trains_on_the_gate_slice() -> None:
    _two_towns()
    city = load_city()
    train, held = training_city(city)
    assert len(held) > 0 and len(train.friend_u) + len(held) == len(city.friend_u)
    ids = city.user_ids
    assert gate_slice(ids[held[:, 0]], ids[held[:, 1]]).all()
    assert not gate_slice(ids[train.friend_u], ids[train.friend_v]).any()


def test_incremental_update_changes_only_the_ranking_head(django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    embedding_set = served_city()
    active = ModelVersion.objects.get(is_active=True)
    people = list(Connection.objects.values_list("from_user_id", "to_user_id")[:6])
    now = timezone.now()
    for i, (a, b) in enumerate(people):
        Interaction.objects.create(actor_id=a, target_user_id=b, kind="pass" if i % 2 else "connect_request", occurred_at=now)
    before = {k: v.clone() for k, v in model_version_load(active).state_dict().items()}
    with django_capture_on_commit_callbacks(execute=True):
        version = model_update_incremental(epochs=5, lr=1e-2)
    assert version is not None and version.name == "v1.1" and version.parent == active and version.is_active
    after = model_version_load(version).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("ranker.mlp.") for k in changed)
    # Same towers: the new version serves from its parent's embeddings, shared, not recomputed.
    shared = EmbeddingSet.objects.get(model_version=version)
    assert shared.status == "ready" and shared.users == embedding_set.users
    store._checked = 0.0
    assert store.current().version == "v1.1"
    # ... with the parent's per-person rows, as of when the parent read them.
    from matching.serving import serving_set_load

    served, parent = store.current().person_rows, serving_set_load(embedding_set).person_rows
    assert served is not None and parent is not None
    assert served.taken_at == parent.taken_at > 0
    assert served.visit_venue.tolist() == parent.visit_venue.tolist()


def test_incremental_update_with_nothing_new_makes_no_version() -> None:
    served_city()
    assert model_update_incremental() is None
    assert ModelVersion.objects.count() == 1


def test_finetune_with_last_tower_layers_moves_those_and_nothing_else() -> None:
    _two_towns(groups=2, size=10)
    version = model_train(epochs=1, folds=1)
    model = model_version_load(version)
    city = load_city()
    from matching.ml.features import user_features
    from matching.ml.inputs import UserInputs
    from matching.ml.pairs import PairFeaturizer

    features = user_features(city, timezone.now().timestamp())
    inputs = UserInputs.build(city, features, model.config)
    u, v = np.array([0, 1, 2, 3]), np.array([1, 2, 13, 14])
    featurizer = PairFeaturizer(city, features)
    pf = featurizer.for_pairs(u, v)
    before = {k: p.clone() for k, p in model.named_parameters()}
    finetune_head(model, inputs, LabelledPairs(u, v, pf, np.array([1, 1, 0, 0], np.float32)), lr=1e-2,
                  last_tower_layers=True)
    changed = {k for k, p in model.named_parameters() if not torch.equal(before[k], p)}
    towers = {k.split(".")[0] for k in changed if "tower" in k}
    assert towers == {"seed_tower", "target_tower"}
    assert all(k.startswith("ranker.") or k.count(".") <= 4 for k in changed)
    assert any(k.startswith("ranker.") for k in changed)


def test_quantised_model_scores_stay_close_to_the_float_model() -> None:
    _two_towns(groups=2, size=10)
    version = model_train(epochs=2, folds=1)
    model = model_version_load(version)
    city = load_city()
    from matching.ml.features import user_features
    from matching.ml.inputs import UserInputs
    from matching.ml.train import embed_users

    inputs = UserInputs.build(city, user_features(city, timezone.now().timestamp()), model.config)
    seed_f, target_f = embed_users(model, inputs)
    seed_q, target_q = embed_users(quantise(model), inputs)
    cosine = (target_f * target_q).sum(1)
    assert cosine.min() > 0.98
    scores_f, scores_q = seed_f @ target_f.T, seed_q @ target_q.T
    assert np.abs(scores_f - scores_q).max() < 0.1
    known = np.column_stack([city.friend_u, city.friend_v])
    assert retrieval_recall(quantise(model), inputs, known[:-4], known[-4:]) == pytest.approx(
        retrieval_recall(model, inputs, known[:-4], known[-4:]), abs=0.26)


def test_compress_model_registers_a_quantised_variant_and_a_student() -> None:
    from django.core.management import call_command

    _two_towns(groups=2, size=10)
    active = model_train(epochs=2, folds=1, activate=True, overrides=SMALL)
    call_command("compress_model", "--active", "--student-epochs", "2")
    quantised = ModelVersion.objects.get(name="v1.1")
    student = ModelVersion.objects.get(name="v2")
    assert quantised.config["serving"] == {"quantise": "dynamic-int8"} and quantised.parent == active
    loaded = model_version_load(quantised)
    assert "quantized" in type(loaded.ranker.mlp[0]).__module__
    assert student.config["distilled_from"] == "v1" and not student.is_active
    assert student.size_bytes < active.size_bytes
    model_version_activate(version=student)  # a student serves like any version


def test_distillation_brings_the_student_towards_the_teacher() -> None:
    from matching.ml.features import user_features
    from matching.ml.inputs import UserInputs
    from matching.ml.lifecycle import distill, student_config
    from matching.ml.train import embed_users

    _two_towns(groups=3, size=10)
    teacher = model_version_load(model_train(epochs=15, folds=1, overrides=SMALL))
    city = load_city()
    inputs = UserInputs.build(city, user_features(city, timezone.now().timestamp()), teacher.config)
    positives = np.column_stack([city.friend_u, city.friend_v])
    torch.manual_seed(0)
    student = RALM(student_config(teacher.config))
    t_seed, t_target = embed_users(teacher, inputs)

    def divergence() -> float:
        """Mean KL(teacher || student) of each person's softmax over everyone, at temperature 2:
        what distillation minimises, measured on the whole town rather than in-batch."""
        s_seed, s_target = embed_users(student, inputs)
        t = torch.log_softmax(torch.from_numpy(t_seed @ t_target.T) / teacher.config.temperature / 2, dim=1)
        s_ = torch.log_softmax(torch.from_numpy(s_seed @ s_target.T) / student.config.temperature / 2, dim=1)
        return float(torch.nn.functional.kl_div(s_, t, log_target=True, reduction="batchmean"))

    before = divergence()
    # The soft term alone: the student learns the teacher's whole distribution, not the labels.
    distill(teacher, student, inputs, positives, epochs=15, batch=32, soft_weight=1.0)
    after = divergence()
    assert after < 0.5 * before
