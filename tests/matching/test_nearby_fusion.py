"""Nearby and the ranking configuration: fusion weights, A/B arms, passes."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import cache
from django.utils import timezone

from matching.models import Experiment, Interaction, RankingConfig
from matching.services.experiments import experiment_arm, experiment_start, ranking_config_create
from matching.services.feedback import match_pass
from matching.services.impressions import impressions_flush
from matching.services.nearby import nearby_matches
from tests.conftest import make_person
from users.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    cache.clear()


@pytest.fixture
def neighbourhood(alice: User) -> dict[str, User]:
    """Next door but unlike alice; further away and just like her."""
    return {
        "stranger": make_person("stranger", -79.9960, 40.4410, interests=["nightlife"], birth_year=1950),
        "twin": make_person("twin", -79.9490, 40.4406, interests=["sports", "music", "reading"]),
    }


def order(user: User) -> list[str]:
    return [m.display_name for m in nearby_matches(user=user, radius_km=5).matches]


def test_default_fusion_is_distance_heavy_and_a_similarity_heavy_default_flips_it(  # type: ignore[no-untyped-def]
    alice, neighbourhood, staff, django_capture_on_commit_callbacks,
) -> None:
    assert order(alice)[:2] == ["Stranger", "Twin"]  # 0.6 distance + 0.4 similarity
    with django_capture_on_commit_callbacks(execute=True):  # the commit forgets the cached default
        config = ranking_config_create(actor=staff, name="alike", make_default=True,
                                       objectives={"distance": {"weight": 0.1}, "similarity": {"weight": 0.9}})
    assert RankingConfig.objects.get(is_default=True) == config
    assert order(alice)[:2] == ["Twin", "Stranger"]


def test_an_experiment_arm_ranks_by_its_configuration_and_logs_its_variant(alice, neighbourhood, staff) -> None:  # type: ignore[no-untyped-def]
    alike = ranking_config_create(actor=staff, name="alike",
                                  objectives={"distance": {"weight": 0.1}, "similarity": {"weight": 0.9}})
    now = timezone.now()
    # Everyone in arm B (share 1.0): alice sees arm B's order.
    experiment = Experiment.objects.create(name="alike-vs-default", b_ranking=alike, b_share=1.0,
                                           starts_at=now - dt.timedelta(minutes=1), ends_at=now + dt.timedelta(days=1))
    experiment_start(actor=staff, experiment=experiment)
    assert experiment_arm(experiment_id=experiment.pk, experiment_name=experiment.name, share_b=1.0,
                          user_id=alice.pk) == "b"
    assert order(alice)[:2] == ["Twin", "Stranger"]
    impressions_flush()
    variants = set(Interaction.objects.filter(actor=alice, kind="impression").values_list("variant", flat=True))
    assert variants == {f"e{experiment.pk}:b"}


def test_a_person_passed_on_is_left_out_for_a_while(alice, neighbourhood, settings) -> None:  # type: ignore[no-untyped-def]
    passed = match_pass(actor=alice, target_user_id=neighbourhood["stranger"].pk)
    assert "Stranger" not in order(alice)
    Interaction.objects.filter(pk=passed.pk).update(
        occurred_at=timezone.now() - dt.timedelta(days=settings.NEARBY_PASS_DAYS + 1))
    assert "Stranger" in order(alice)


def test_freshness_favours_people_active_lately(alice, neighbourhood, staff, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    from users.models import Profile

    Profile.objects.filter(user=neighbourhood["twin"]).update(last_active_at=timezone.now())
    Profile.objects.filter(user=neighbourhood["stranger"]).update(last_active_at=timezone.now() - dt.timedelta(days=60))
    with django_capture_on_commit_callbacks(execute=True):
        ranking_config_create(actor=staff, name="fresh", make_default=True,
                              objectives={"distance": {"weight": 0.2}, "freshness": {"weight": 0.8}})
    assert order(alice)[0] == "Twin"
