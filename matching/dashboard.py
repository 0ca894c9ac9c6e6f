"""What staff see first in the admin: the product's vital signs and the model that is serving.

Reads only (a selector). Counts are cached for a minute; the model and embedding lines are read on
every visit, since staff look at them right after activating a version or starting a rebuild.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass

from django.core.cache import cache
from django.db.models import Count, Q
from django.utils import timezone

from activities.models import Activity, Invitation
from matching.models import EmbeddingSet, ModelVersion
from users.models import Profile, User

CACHE_KEY = "matching:dashboard"
CACHE_SECONDS = 60
ACTIVE_DAYS = 7


@dataclass(frozen=True)
class Dashboard:
    users: int
    active_users: int
    located_users: int
    activities_upcoming: int
    activities_total: int
    invitations: int
    invitations_answered: int
    invitations_accepted: int
    model_version: str
    model_version_id: int | None
    model_headline: dict[str, float]
    embedding_status: str
    embedding_users: int
    embedding_progress: str
    index_kind: str
    embeddings_finished_at: dt.datetime | None

    @property
    def acceptance_percent(self) -> float | None:
        return 100.0 * self.invitations_accepted / self.invitations_answered if self.invitations_answered else None


def _counts() -> dict[str, int]:
    """The counting part: cached for a minute, so a busy admin index does not count millions of rows."""
    cached = cache.get(CACHE_KEY)
    if isinstance(cached, dict):
        return cached
    now = timezone.now()
    recent = now - dt.timedelta(days=ACTIVE_DAYS)
    users = User.objects.aggregate(
        users=Count("pk"),
        active_users=Count("pk", filter=Q(last_login__gte=recent) | Q(profile__last_active_at__gte=recent)),
    )
    activities = Activity.objects.aggregate(
        activities_total=Count("pk"),
        activities_upcoming=Count("pk", filter=Q(status=Activity.Status.PUBLISHED, starts_at__gte=now)),
    )
    invitations = Invitation.objects.aggregate(
        invitations=Count("pk"),
        invitations_answered=Count("pk", filter=Q(status__in=[Invitation.Status.ACCEPTED, Invitation.Status.DECLINED])),
        invitations_accepted=Count("pk", filter=Q(status=Invitation.Status.ACCEPTED)),
    )
    counts = {**users, **activities, **invitations,
              "located_users": Profile.objects.filter(location__isnull=False).count()}
    cache.set(CACHE_KEY, counts, CACHE_SECONDS)
    return counts


def dashboard_summary(*, fresh: bool = False) -> Dashboard:
    """Counts (cached) and the serving model and embedding set (always current: staff act on them)."""
    if fresh:
        cache.delete(CACHE_KEY)
    version = ModelVersion.objects.filter(is_active=True).first()
    latest = EmbeddingSet.objects.select_related("model_version").order_by("-created_at").first()
    headline_keys = ("rank_val_recall@20", "tower_val_loss", "tower_pairs_per_second")
    return Dashboard(
        **_counts(),
        model_version=version.name if version else "",
        model_version_id=version.pk if version else None,
        model_headline={k: float(v) for k, v in (version.metrics if version else {}).items()
                        if k in headline_keys and isinstance(v, int | float)},
        embedding_status=f"{latest.get_status_display()} (model {latest.model_version.name})" if latest else "none",
        embedding_users=latest.users if latest else 0,
        embedding_progress=f"{latest.chunks_done}/{latest.chunks_total} chunks" if latest else "",
        index_kind=latest.index_kind if latest else "",
        embeddings_finished_at=latest.finished_at if latest else None,
    )


def training_curves_png(version: ModelVersion) -> bytes:
    """The version's training curves as a PNG: losses on the left, validation recall on the right."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    curves = {k: v for k, v in (version.curves or {}).items() if isinstance(v, list) and v}
    losses = {k: v for k, v in curves.items() if "loss" in k}
    others = {k: v for k, v in curves.items() if "loss" not in k}
    figure = Figure(figsize=(9, 3.4), dpi=100, layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, group, title in ((axes[0], losses, "Loss"), (axes[1], others, "Validation recall")):
        for name, values in sorted(group.items()):
            ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if group:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    figure.suptitle(f"Model {version.name}")
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
