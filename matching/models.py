"""What people did: the event log the matcher learns from and A/B tests are measured on.

It lives in ``matching`` rather than ``users`` because it points at activities and venues, which
sit above ``users`` in the app layering; lower apps record events through signals.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q


class Interaction(models.Model):
    class Kind(models.TextChoices):
        IMPRESSION = "impression", "Impression"
        VIEW = "view", "Profile view"
        LIKE = "like", "Like"
        PASS = "pass", "Pass"
        CONNECT_REQUEST = "connect_request", "Connect request"
        ACCEPT = "accept", "Connection accepted"
        MESSAGE = "message", "Message"
        INVITE_SENT = "invite_sent", "Invitation sent"
        INVITE_ACCEPTED = "invite_accepted", "Invitation accepted"
        INVITE_DECLINED = "invite_declined", "Invitation declined"
        JOIN = "join", "Joined an activity"
        VISIT = "visit", "Visited a venue"

    # No single-column index on any of the four keys: impressions are most of this table's rows
    # (about fifteen an answer of people nearby), and every index costs each of them an insert.
    # ``interaction_actor_recent`` and ``interaction_target_user`` serve the lookups by actor
    # and by target person (cascading deletes included); the activity and venue keys, null in
    # every impression, are indexed only where set.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="interactions", db_index=False,
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    target_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="interactions_received",
        db_index=False,
    )
    target_activity = models.ForeignKey(
        "activities.Activity", null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_index=False,
    )
    target_venue = models.ForeignKey(
        "activities.Venue", null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_index=False,
    )
    # Strength of the event: a visit count, a rating; 1 for a plain event.
    weight = models.FloatField(default=1.0)
    # Where it was shown: rank in the list (0-based) and which surface ("nearby", "invite" ...).
    position = models.PositiveIntegerField(null=True, blank=True)
    surface = models.CharField(max_length=24, blank=True)
    model_version = models.CharField(max_length=40, blank=True)
    variant = models.CharField(max_length=40, blank=True, help_text="A/B experiment arm.")
    occurred_at = models.DateTimeField(db_index=False)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=[
                    "impression", "view", "like", "pass", "connect_request", "accept", "message",
                    "invite_sent", "invite_accepted", "invite_declined", "join", "visit",
                ]),
                name="interaction_kind_valid",
            ),
            models.CheckConstraint(
                condition=Q(target_user__isnull=False)
                | Q(target_activity__isnull=False)
                | Q(target_venue__isnull=False),
                name="interaction_has_target",
            ),
            models.CheckConstraint(condition=Q(weight__gte=0), name="interaction_weight_nonneg"),
            # Imported visits are keyed by person, venue and day: re-imports add nothing.
            models.UniqueConstraint(
                fields=["actor", "target_venue", "occurred_at"],
                condition=Q(kind="visit"),
                name="interaction_unique_visit",
            ),
        ]
        indexes = [
            # "Recent events of a user": behaviour features and the activity feed.
            models.Index(fields=["actor", "-occurred_at"], name="interaction_actor_recent"),
            # Training extracts scan one kind over a time window.
            models.Index(fields=["kind", "occurred_at"], name="interaction_kind_time"),
            # Reciprocity and "who viewed me" read by target.
            models.Index(
                fields=["target_user", "kind"],
                condition=Q(target_user__isnull=False),
                name="interaction_target_user",
            ),
            # Nearby leaves out the people the asker passed on: read on every request.
            models.Index(fields=["actor", "target_user", "occurred_at"], condition=Q(kind="pass"),
                         name="interaction_passes"),
            models.Index(fields=["target_activity"], condition=Q(target_activity__isnull=False),
                         name="interaction_target_activity"),
            models.Index(fields=["target_venue"], condition=Q(target_venue__isnull=False),
                         name="interaction_target_venue"),
        ]

    def __str__(self) -> str:
        return f"{self.actor_id} {self.kind} @ {self.occurred_at:%Y-%m-%d}"


class ModelVersion(models.Model):
    """A trained matcher: its weights file, how it was trained, how good it was. One is active.

    The weights are a PyTorch state dict (loaded with ``weights_only=True``, never arbitrary
    pickles) stored under MEDIA_ROOT; ``sha256`` guards against a tampered or truncated file.
    """

    name = models.CharField(max_length=40, unique=True, help_text='"v3", or "v3.2" for an update.')
    weights = models.CharField(max_length=255, help_text="Path of the state dict under MEDIA_ROOT.")
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveBigIntegerField(default=0)
    config = models.JSONField(help_text="Model and training configuration.")
    feature_schema = models.JSONField()
    feature_schema_version = models.CharField(max_length=40)
    metrics = models.JSONField(default=dict, blank=True)
    curves = models.JSONField(default=dict, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children",
        help_text="The version this one was warm-started from.",
    )
    is_active = models.BooleanField(default=False)
    activated_at = models.DateTimeField(null=True, blank=True)
    notes = models.TextField(blank=True, help_text="Why it was or was not activated.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Exactly one version serves at a time.
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="modelversion_one_active"),
        ]

    def __str__(self) -> str:
        return f"{self.name}{' (active)' if self.is_active else ''}"


class EmbeddingSet(models.Model):
    """The seed and target embeddings of every user under one model version, and their index.

    Files live in ``MEDIA_ROOT/embeddings/<version>/<set id>/``: ``ids.npy``, ``seed.npy``,
    ``target.npy`` (float32, saved without pickles), ``index.faiss`` and the serving extras
    (``pref.npy``, venue visitors, ``person_rows/``). The tower inputs (``inputs/``) are deleted
    once the chunks are done, and a set's files when a newer set of its version is ready
    (``embedding_sets_retire``).
    """

    class Status(models.TextChoices):
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        # A newer set of the same version replaced it and its files were deleted (they hold every
        # person's features and pinged spots, which should not outlive their use).
        RETIRED = "retired", "Retired"

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="embedding_sets")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.BUILDING)
    users = models.PositiveIntegerField(default=0)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    index_kind = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # Serving looks up the newest ready set of the active version.
            models.Index(fields=["model_version", "status", "-created_at"], name="embeddingset_lookup"),
        ]

    def __str__(self) -> str:
        return f"{self.model_version.name} #{self.pk} ({self.status})"


class Audience(models.Model):
    """A look-alike audience: people most like a seed list, scored by RALM's seed-set attention."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    name = models.CharField(max_length=120, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    seed_user_ids = ArrayField(models.BigIntegerField())
    target_size = models.PositiveIntegerField()
    exclude_seeds = models.BooleanField(default=True)
    min_score = models.FloatField(default=-1.0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    progress = models.FloatField(default=0.0)
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(target_size__gte=1), name="audience_target_size_positive"),
            models.CheckConstraint(condition=Q(progress__gte=0, progress__lte=1), name="audience_progress_range"),
        ]

    def __str__(self) -> str:
        return self.name or f"Audience #{self.pk}"


class AudienceMember(models.Model):
    audience = models.ForeignKey(Audience, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    rank = models.PositiveIntegerField()
    score = models.FloatField()

    class Meta:
        ordering = ["audience", "rank"]
        constraints = [
            models.UniqueConstraint(fields=["audience", "user"], name="audiencemember_unique"),
        ]
        indexes = [
            # Members are read in rank order, a page at a time.
            models.Index(fields=["audience", "rank"], name="audiencemember_rank"),
        ]

    def __str__(self) -> str:
        return f"{self.audience_id}: #{self.rank} {self.user_id}"


class RankingConfig(models.Model):
    """A version of the multi-objective fusion weights (``matching.ml.fusion``). Never edited:
    a change is a new version, so an impression's ranking can always be traced to its weights."""

    name = models.CharField(max_length=60, unique=True)
    objectives = models.JSONField(help_text='{"distance": {"weight": 0.6, "alpha": 1, "beta": 1}, ...}')
    is_default = models.BooleanField(default=False, help_text="Used wherever no experiment says otherwise.")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="rankingconfig_one_default"),
        ]

    def __str__(self) -> str:
        return self.name


class Experiment(models.Model):
    """An A/B test on one surface: arm A and arm B each name a model version and/or a ranking
    configuration (empty = what serves by default); a stable hash of experiment and person picks the arm."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        RUNNING = "running", "Running"
        ENDED = "ended", "Ended"

    name = models.CharField(max_length=80, unique=True)
    description = models.TextField(blank=True)
    surface = models.CharField(max_length=24, default="nearby")
    a_model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                verbose_name="arm A model version")
    a_ranking = models.ForeignKey(RankingConfig, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                  verbose_name="arm A ranking configuration")
    b_model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                verbose_name="arm B model version")
    b_ranking = models.ForeignKey(RankingConfig, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                  verbose_name="arm B ranking configuration")
    b_share = models.FloatField(default=0.5, help_text="Share of people in arm B (0-1).")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.DRAFT)
    winner = models.CharField(max_length=1, blank=True, choices=[("a", "A"), ("b", "B")])
    significance = models.FloatField(default=0.05, help_text="p-value below which a difference counts.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(b_share__gte=0, b_share__lte=1), name="experiment_share_range"),
            models.CheckConstraint(condition=Q(ends_at__gt=models.F("starts_at")), name="experiment_ends_after_start"),
            models.CheckConstraint(condition=Q(significance__gt=0, significance__lt=1), name="experiment_alpha_range"),
            # Two experiments splitting the same people on the same surface would confound each other.
            models.UniqueConstraint(fields=["surface"], condition=Q(status="running"), name="experiment_one_running"),
        ]

    def __str__(self) -> str:
        return self.name
