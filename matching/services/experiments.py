"""A/B tests and ranking configurations.

Assignment is a stable hash of the experiment and the person, so a person sees one arm for the
whole test, on every device, with no state stored. Everything that a served list leads to is
logged with the arm (``Interaction.variant = "e<id>:<arm>"``): impressions, profile views,
connect requests; an acceptance counts for the arm whose request it answers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from matching.ml.fusion import DEFAULT_OBJECTIVES, FusionError, Objective, parse_objectives
from matching.models import Experiment, Interaction, RankingConfig
from users.models import Connection, User

ARM_CACHE_SECONDS = 15
# Each process also keeps what it read from Redis this long, so that a nearby request does not
# make two Redis round trips for settings that change a few times a year; a change made in this
# process is seen at once, one made in another within this many seconds.
ARM_LOCAL_SECONDS = 2.0
_local: dict[str, tuple[float, object]] = {}


def _cached(key: str, load: Callable[[], object]) -> object:
    """``key``'s value from this process, else Redis, else ``load()`` (stored in both)."""
    now = time.monotonic()
    hit = _local.get(key)
    if hit is not None and now - hit[0] < ARM_LOCAL_SECONDS:
        return hit[1]
    value = cache.get(key)
    if value is None:
        value = load()
        cache.set(key, value, ARM_CACHE_SECONDS)
    _local[key] = (now, value)
    return value


def _forget(key: str) -> None:
    cache.delete(key)
    _local.pop(key, None)


def arm_cache_reset() -> None:
    """Forget what this process keeps (tests, after clearing Redis)."""
    _local.clear()
STAFF_ONLY = "Only staff may manage experiments and ranking configurations."
ARMS_IDENTICAL = "The two arms are identical: give arm B another model version or ranking configuration."
ALREADY_RUNNING = "Another experiment is already running on {surface}: end it first."
NOT_DRAFT = "Only a draft experiment can be started."
NOT_RUNNING = "Only a running experiment can be ended."
WINDOW_OVER = "The experiment's time window is already over."


def _require_staff(actor: User) -> None:
    if not actor.is_staff:
        raise PermissionDenied(STAFF_ONLY)


# --- ranking configurations -----------------------------------------------------------------

def ranking_config_create(
    *, actor: User, name: str, objectives: dict[str, object], parent: RankingConfig | None = None,
    notes: str = "", make_default: bool = False,
) -> RankingConfig:
    _require_staff(actor)
    try:
        parse_objectives(objectives)
    except FusionError as exc:
        raise ValidationError({"objectives": str(exc)}) from None
    with transaction.atomic():
        config = RankingConfig(name=name, objectives=objectives, parent=parent, notes=notes, created_by=actor)
        config.full_clean()
        config.save()
        if make_default:
            ranking_config_make_default(actor=actor, config=config)
    return config


def ranking_config_make_default(*, actor: User, config: RankingConfig) -> RankingConfig:
    _require_staff(actor)
    with transaction.atomic():
        RankingConfig.objects.select_for_update().filter(is_default=True).exclude(pk=config.pk).update(is_default=False)
        RankingConfig.objects.filter(pk=config.pk).update(is_default=True)
        transaction.on_commit(lambda: _forget(_ARM_KEY_DEFAULT))
    config.is_default = True
    return config


_ARM_KEY_DEFAULT = "matching:ranking-default"


def ranking_default() -> tuple[str, dict[str, Objective]]:
    """The default configuration's name and objectives (seed 000's 0.6/0.4 when none is stored)."""
    def load() -> list[object]:
        config = RankingConfig.objects.filter(is_default=True).values_list("name", "objectives").first()
        return list(config or ("", DEFAULT_OBJECTIVES))

    name, raw = _cached(_ARM_KEY_DEFAULT, load)  # type: ignore[misc]
    return name, parse_objectives(raw)


# --- experiments ----------------------------------------------------------------------------

def experiment_arm(*, experiment_id: int, experiment_name: str, share_b: float, user_id: int) -> str:
    """"a" or "b" for this person, the same on every call: sha256 of experiment and person."""
    digest = hashlib.sha256(f"{experiment_id}:{experiment_name}:{user_id}".encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64
    return "b" if unit < share_b else "a"


@dataclass(frozen=True)
class Arm:
    """What one request is served with."""

    variant: str  # "" outside experiments
    model_version: str  # "" = the active version
    ranking_name: str
    objectives: dict[str, Objective] = field(default_factory=dict)


def _running(surface: str) -> dict[str, object] | None:
    def load() -> dict[str, object]:
        now = timezone.now()
        row = (
            Experiment.objects.filter(surface=surface, status=Experiment.Status.RUNNING, starts_at__lte=now, ends_at__gt=now)
            .values("pk", "name", "b_share", "a_model__name", "b_model__name", "a_ranking__name", "a_ranking__objectives",
                    "b_ranking__name", "b_ranking__objectives", "ends_at")
            .first()
        )
        return row or {}

    cached: dict[str, object] = _cached(f"matching:experiment:{surface}", load)  # type: ignore[assignment]
    if not cached or cached["ends_at"] <= timezone.now():
        return None
    return cached


def serving_arm(*, surface: str, user_id: int) -> Arm:
    """The arm a person is in on ``surface`` (or the defaults when no experiment runs there)."""
    default_name, default_objectives = ranking_default()
    running = _running(surface)
    if running is None:
        return Arm(variant="", model_version="", ranking_name=default_name, objectives=default_objectives)
    arm = experiment_arm(experiment_id=running["pk"], experiment_name=running["name"], share_b=running["b_share"],
                         user_id=user_id)
    ranking = running[f"{arm}_ranking__objectives"]
    return Arm(
        variant=f"e{running['pk']}:{arm}",
        model_version=running[f"{arm}_model__name"] or "",
        ranking_name=running[f"{arm}_ranking__name"] or default_name,
        objectives=parse_objectives(ranking) if ranking else default_objectives,
    )


def experiment_start(*, actor: User, experiment: Experiment) -> Experiment:
    _require_staff(actor)
    if experiment.status != Experiment.Status.DRAFT:
        raise ValidationError(NOT_DRAFT)
    if (experiment.a_model_id, experiment.a_ranking_id) == (experiment.b_model_id, experiment.b_ranking_id):
        raise ValidationError(ARMS_IDENTICAL)
    if experiment.ends_at <= timezone.now():
        raise ValidationError(WINDOW_OVER)
    try:
        with transaction.atomic():
            experiment.status = Experiment.Status.RUNNING
            experiment.save(update_fields=["status"])
    except IntegrityError:
        experiment.status = Experiment.Status.DRAFT
        raise ValidationError(ALREADY_RUNNING.format(surface=experiment.surface)) from None
    _forget(f"matching:experiment:{experiment.surface}")
    return experiment


def experiment_end(*, actor: User, experiment: Experiment, promote: bool = False) -> Experiment:
    """End the test; with ``promote``, a significant winner's model and ranking become the defaults."""
    _require_staff(actor)
    if experiment.status != Experiment.Status.RUNNING:
        raise ValidationError(NOT_RUNNING)
    results = experiment_results(experiment=experiment)
    with transaction.atomic():
        experiment.status = Experiment.Status.ENDED
        experiment.winner = results.winner
        experiment.save(update_fields=["status", "winner"])
        if promote and results.winner:
            from matching.services.registry import model_version_activate

            model = experiment.b_model if results.winner == "b" else experiment.a_model
            ranking = experiment.b_ranking if results.winner == "b" else experiment.a_ranking
            if model is not None and not model.is_active:
                model_version_activate(version=model, note=f"winner of experiment {experiment.name}")
            if ranking is not None and not ranking.is_default:
                ranking_config_make_default(actor=actor, config=ranking)
    _forget(f"matching:experiment:{experiment.surface}")
    return experiment


@dataclass
class ArmResult:
    people: int = 0
    impressions: int = 0
    views: int = 0
    connects: int = 0
    accepted: int = 0

    @property
    def ctr(self) -> float:
        return self.views / self.impressions if self.impressions else 0.0

    @property
    def conversion(self) -> float:
        return self.connects / self.impressions if self.impressions else 0.0


@dataclass
class ExperimentResults:
    arms: dict[str, ArmResult]
    ctr_p_value: float
    conversion_p_value: float
    significance: float
    daily: list[dict[str, object]]

    @property
    def significant(self) -> bool:
        return math.isfinite(self.conversion_p_value) and self.conversion_p_value < self.significance

    @property
    def winner(self) -> str:
        if not self.significant:
            return ""
        return "b" if self.arms["b"].conversion > self.arms["a"].conversion else "a"


def chi_square_p(successes: tuple[int, int], trials: tuple[int, int]) -> float:
    """Pearson's chi-square test (no continuity correction) of two proportions; NaN when undefined."""
    from scipy.stats import chi2_contingency

    table = [[successes[0], trials[0] - successes[0]], [successes[1], trials[1] - successes[1]]]
    if min(trials) <= 0 or any(sum(col) == 0 for col in zip(*table, strict=True)):
        return math.nan
    return float(chi2_contingency(table, correction=False).pvalue)


def experiment_results(*, experiment: Experiment) -> ExperimentResults:
    variants = {f"e{experiment.pk}:a": "a", f"e{experiment.pk}:b": "b"}
    logged = Interaction.objects.filter(variant__in=variants)
    arms = {"a": ArmResult(), "b": ArmResult()}
    for row in logged.values("variant").annotate(
        people=Count("actor", distinct=True, filter=Q(kind="impression")),
        impressions=Count("pk", filter=Q(kind="impression")),
        views=Count("pk", filter=Q(kind="view")),
        connects=Count("pk", filter=Q(kind="connect_request")),
    ):
        arm = arms[variants[row["variant"]]]
        arm.people, arm.impressions, arm.views, arm.connects = row["people"], row["impressions"], row["views"], row["connects"]
    # An acceptance counts for the arm whose request it answered.
    for variant, arm_name in variants.items():
        asked = logged.filter(variant=variant, kind="connect_request", actor_id=OuterRef("from_user_id"),
                              target_user_id=OuterRef("to_user_id"))
        arms[arm_name].accepted = Connection.objects.filter(Exists(asked), status=Connection.Status.ACCEPTED).count()
    daily = list(
        logged.annotate(day=TruncDate("occurred_at")).values("day", "variant")
        .annotate(impressions=Count("pk", filter=Q(kind="impression")), views=Count("pk", filter=Q(kind="view")),
                  connects=Count("pk", filter=Q(kind="connect_request")))
        .order_by("day", "variant")
    )
    for row in daily:
        row["arm"] = variants[row.pop("variant")]
    a, b = arms["a"], arms["b"]
    return ExperimentResults(
        arms=arms,
        ctr_p_value=chi_square_p((a.views, b.views), (a.impressions, b.impressions)),
        conversion_p_value=chi_square_p((a.connects, b.connects), (a.impressions, b.impressions)),
        significance=experiment.significance, daily=daily,
    )


def experiment_plot_png(*, experiment: Experiment) -> bytes:
    """Daily click-through and connect rates per arm."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    results = experiment_results(experiment=experiment)
    figure = Figure(figsize=(9, 3.2), dpi=100, layout="constrained")
    axes = figure.subplots(1, 2)
    for arm, colour in (("a", "tab:blue"), ("b", "tab:orange")):
        rows = [r for r in results.daily if r["arm"] == arm and r["impressions"]]
        days = [r["day"] for r in rows]
        axes[0].plot(days, [r["views"] / r["impressions"] for r in rows], marker="o", color=colour, label=f"arm {arm.upper()}")
        axes[1].plot(days, [r["connects"] / r["impressions"] for r in rows], marker="o", color=colour, label=f"arm {arm.upper()}")
    for ax, title in ((axes[0], "Profile views per impression"), (axes[1], "Connect requests per impression")):
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    figure.suptitle(f"{experiment.name}: conversion p = {results.conversion_p_value:.3g}")
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def experiment_window_default() -> tuple[dt.datetime, dt.datetime]:
    now = timezone.now()
    return now, now + dt.timedelta(days=14)
