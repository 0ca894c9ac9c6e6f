"""A/B tests: stable assignment, attribution to arms, the chi-square test, ending and promotion."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from matching.models import Experiment, Interaction, RankingConfig
from matching.services.experiments import (
    ALREADY_RUNNING,
    ARMS_IDENTICAL,
    chi_square_p,
    experiment_arm,
    experiment_end,
    experiment_results,
    experiment_start,
    ranking_config_create,
    ranking_default,
    serving_arm,
)
from matching.services.feedback import connection_answer, match_connect, person_view
from users.factories import ProfileFactory, UserFactory
from users.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    cache.clear()


def make_experiment(staff: User, **kwargs: object) -> Experiment:
    now = timezone.now()
    b = ranking_config_create(actor=staff, name=f"closer-{Experiment.objects.count()}",
                              objectives={"distance": {"weight": 0.8}, "similarity": {"weight": 0.2}})
    fields = {"name": f"exp-{Experiment.objects.count()}", "b_ranking": b, "starts_at": now - dt.timedelta(hours=1),
              "ends_at": now + dt.timedelta(days=7), **kwargs}
    return Experiment.objects.create(**fields)


def test_the_migration_stores_seed_000_weights_as_the_default() -> None:
    name, objectives = ranking_default()
    assert name == "default-1"
    assert {k: v.weight for k, v in objectives.items()} == {"distance": 0.6, "similarity": 0.4}


def test_assignment_is_stable_and_close_to_the_split() -> None:
    arms = [experiment_arm(experiment_id=7, experiment_name="x", share_b=0.3, user_id=u) for u in range(20_000)]
    again = [experiment_arm(experiment_id=7, experiment_name="x", share_b=0.3, user_id=u) for u in range(20_000)]
    assert arms == again
    assert abs(arms.count("b") / len(arms) - 0.3) < 0.015
    other = [experiment_arm(experiment_id=8, experiment_name="y", share_b=0.3, user_id=u) for u in range(20_000)]
    agreement = sum(a == b for a, b in zip(arms, other, strict=True)) / len(arms)
    assert agreement < 0.65  # another experiment splits people independently (0.3^2 + 0.7^2 = 0.58)


def test_chi_square_matches_a_hand_computed_table() -> None:
    # [[30, 970], [50, 950]]: expected 40 and 960 in each row; chi2 = 2 * (100/40 + 100/960) = 5.2083.
    chi2 = 2 * (100 / 40 + 100 / 960)
    expected_p = math.erfc(math.sqrt(chi2 / 2))  # survival function of chi-square with 1 dof
    assert chi_square_p((30, 50), (1000, 1000)) == pytest.approx(expected_p, rel=1e-9)
    assert expected_p == pytest.approx(0.02248, abs=1e-4)
    assert math.isnan(chi_square_p((0, 0), (100, 100)))


def test_actions_are_attributed_to_the_arm_that_served_them(staff: User) -> None:
    experiment = make_experiment(staff)
    experiment_start(actor=staff, experiment=experiment)
    target = ProfileFactory().user
    people = [ProfileFactory().user for _ in range(12)]
    arms = {p.pk: serving_arm(surface="nearby", user_id=p.pk).variant for p in people}
    assert set(arms.values()) == {f"e{experiment.pk}:a", f"e{experiment.pk}:b"}
    for person in people:
        Interaction.objects.create(actor=person, kind="impression", target_user=target, surface="nearby",
                                   variant=arms[person.pk], occurred_at=timezone.now())
        person_view(actor=person, user_id=target.pk)
        match_connect(actor=person, target_user_id=target.pk)
    connection_answer(actor=target, connection_id=people[0].connections_sent.get().pk, accept=True)
    results = experiment_results(experiment=experiment)
    in_b = sum(v.endswith(":b") for v in arms.values())
    assert results.arms["b"].impressions == in_b and results.arms["a"].impressions == 12 - in_b
    assert results.arms["b"].views == in_b and results.arms["b"].connects == in_b
    assert results.arms["a"].accepted + results.arms["b"].accepted == 1
    first_arm = arms[people[0].pk][-1]
    assert results.arms[first_arm].accepted == 1


def test_start_refuses_identical_arms_and_a_second_running_experiment(staff: User) -> None:
    same = make_experiment(staff, b_ranking=None)
    with pytest.raises(ValidationError, match=ARMS_IDENTICAL):
        experiment_start(actor=staff, experiment=same)
    first, second = make_experiment(staff), make_experiment(staff)
    experiment_start(actor=staff, experiment=first)
    with pytest.raises(ValidationError, match=ALREADY_RUNNING.format(surface="nearby")):
        experiment_start(actor=staff, experiment=second)
    assert Experiment.objects.get(pk=second.pk).status == "draft"


def test_only_staff_manage_experiments(alice: User, staff: User) -> None:
    with pytest.raises(PermissionDenied):
        experiment_start(actor=alice, experiment=make_experiment(staff))


def _log(experiment: Experiment, arm: str, impressions: int, connects: int) -> None:
    target = UserFactory()
    actor = UserFactory()
    now = timezone.now()
    Interaction.objects.bulk_create(
        [Interaction(actor=actor, kind="impression", target_user=target, variant=f"e{experiment.pk}:{arm}", occurred_at=now)
         for _ in range(impressions)]
        + [Interaction(actor=actor, kind="connect_request", target_user=target, variant=f"e{experiment.pk}:{arm}",
                       occurred_at=now) for _ in range(connects)]
    )


def test_ending_with_a_significant_winner_promotes_its_ranking(staff: User) -> None:
    experiment = make_experiment(staff)
    experiment_start(actor=staff, experiment=experiment)
    _log(experiment, "a", 1000, 30)
    _log(experiment, "b", 1000, 60)
    ended = experiment_end(actor=staff, experiment=experiment, promote=True)
    assert ended.status == "ended" and ended.winner == "b"
    assert RankingConfig.objects.get(is_default=True) == experiment.b_ranking
    assert ranking_default()[0] == experiment.b_ranking.name
    assert serving_arm(surface="nearby", user_id=1).variant == ""  # nothing runs any more


def test_ending_without_a_significant_difference_promotes_nothing(staff: User) -> None:
    experiment = make_experiment(staff)
    experiment_start(actor=staff, experiment=experiment)
    _log(experiment, "a", 1000, 30)
    _log(experiment, "b", 1000, 33)
    ended = experiment_end(actor=staff, experiment=experiment, promote=True)
    assert ended.winner == "" and RankingConfig.objects.get(is_default=True).name == "default-1"


def test_admin_shows_results_and_the_plot(staff: User) -> None:
    experiment = make_experiment(staff)
    experiment_start(actor=staff, experiment=experiment)
    _log(experiment, "a", 1000, 30)
    _log(experiment, "b", 1000, 60)
    client = Client()
    client.force_login(staff)
    page = client.get(reverse("admin:matching_experiment_change", args=[experiment.pk])).content.decode()
    assert "3.0%" in page and "6.0%" in page and "arm B converts better" in page
    plot = client.get(reverse("admin:matching_experiment_plot", args=[experiment.pk]))
    assert plot["Content-Type"] == "image/png" and plot.content[:4] == b"\x89PNG"


def test_ranking_configurations_are_validated_and_versioned_in_the_admin(staff: User) -> None:
    client = Client()
    client.force_login(staff)
    url = reverse("admin:matching_rankingconfig_add")
    bad = client.post(url, {"name": "neg", "objectives": '{"distance": {"weight": 1, "beta": -2}}'})
    assert "beta must be above zero" in bad.content.decode()
    assert not RankingConfig.objects.filter(name="neg").exists()
    good = client.post(url, {"name": "fresh", "objectives": '{"similarity": {"weight": 0.5}, "freshness": {"weight": 0.5}}'})
    assert good.status_code == 302
    created = RankingConfig.objects.get(name="fresh")
    assert created.created_by == staff and not created.is_default
    change = client.get(reverse("admin:matching_rankingconfig_change", args=[created.pk])).content.decode()
    assert 'name="objectives"' not in change  # a stored version is read-only


def test_a_process_keeps_the_ranking_default_for_two_seconds_and_its_own_changes_show_at_once(
    staff: User, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks,  # type: ignore[no-untyped-def]
) -> None:
    from matching.services import experiments

    assert experiments.ranking_default()[0] == "default-1"
    # Another process changed the default: Redis now says so, this process still serves its copy.
    cache.set("matching:ranking-default", ["from-elsewhere", {"distance": {"weight": 1.0}}], 60)
    assert experiments.ranking_default()[0] == "default-1"
    monkeypatch.setattr(experiments, "ARM_LOCAL_SECONDS", 0.0)  # ... until its copy expires
    assert experiments.ranking_default()[0] == "from-elsewhere"
    monkeypatch.setattr(experiments, "ARM_LOCAL_SECONDS", 60.0)
    with django_capture_on_commit_callbacks(execute=True):  # a change made here is seen at once
        ranking_config_create(actor=staff, name="alike", make_default=True,
                              objectives={"distance": {"weight": 0.1}, "similarity": {"weight": 0.9}})
    assert experiments.ranking_default()[0] == "alike"
