"""Places and the things people do there together."""

from __future__ import annotations

from django.conf import settings
from django.contrib.gis.db import models
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import F, Q

from users.fields import LonLatPointField
from users.taxonomy import (
    ACTIVITY_TYPE_CHOICES,
    ACTIVITY_TYPES,
    INTEREST_CHOICES,
    INTERESTS,
    PLACE_TYPE_CHOICES,
    PLACE_TYPES,
)


class Category(models.Model):
    """A venue category as a data source names it, mapped onto one interest of the taxonomy.

    Imported datasets bring their own categories (LBSN files only number them); the mapping to an
    interest is what turns "visited places of category 17" into a preference feature, and staff
    may correct it in the admin.
    """

    source = models.CharField(max_length=60, help_text="Dataset or 'taxonomy'.")
    external_id = models.CharField(max_length=60)
    name = models.CharField(max_length=120)
    interest = models.CharField(max_length=24, choices=INTEREST_CHOICES)

    class Meta:
        verbose_name_plural = "categories"
        constraints = [
            models.UniqueConstraint(fields=["source", "external_id"], name="category_unique_ref"),
            models.CheckConstraint(
                condition=Q(interest__in=list(INTERESTS)), name="category_interest_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Venue(models.Model):
    name = models.CharField(max_length=200)
    # Geography for metre distances; the GiST index comes with the spatial field.
    location = LonLatPointField()
    categories = models.ManyToManyField(Category, blank=True, related_name="venues")
    place_type = models.CharField(max_length=24, choices=PLACE_TYPE_CHOICES, blank=True)
    # Id of this place in an imported dataset ("yelp-small:17"); re-imports match on it.
    external_ref = models.CharField(max_length=120, unique=True, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(place_type="") | Q(place_type__in=list(PLACE_TYPES)),
                name="venue_place_type_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Activity(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"
        CANCELLED = "cancelled", "Cancelled"
        COMPLETED = "completed", "Completed"

    organiser = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="organised_activities"
    )
    title = models.CharField(max_length=140)
    description = models.TextField(blank=True, max_length=5000)
    category = models.CharField(max_length=24, choices=ACTIVITY_TYPE_CHOICES)
    subtype = models.CharField(max_length=24, choices=INTEREST_CHOICES, blank=True)
    skill_level = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    # Where it happens: a public place, unlike the organiser's own location.
    location = LonLatPointField()
    venue = models.ForeignKey(
        Venue, null=True, blank=True, on_delete=models.SET_NULL, related_name="activities"
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    capacity = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1)])
    # How far away the organiser wants to recruit participants from.
    recruit_radius_km = models.FloatField(
        default=10.0, validators=[MinValueValidator(0.1), MaxValueValidator(200.0)]
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    is_featured = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The stored participant recommendations (``Recommendation``): when they were computed, by
    # which ranker ("model" or "rules") and model version, and how many times in all (the
    # debounce keeps a burst of joins to one run). Database defaults, because bulk COPY loads
    # (generate_city, imports) name only the columns they fill.
    recommended_at = models.DateTimeField(null=True, blank=True)
    recommendation_ranker = models.CharField(max_length=8, blank=True, default="", db_default="")
    recommendation_model_version = models.CharField(max_length=40, blank=True, default="", db_default="")
    recommendation_runs = models.PositiveIntegerField(default=0, db_default=0)

    class Meta:
        verbose_name_plural = "activities"
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=F("starts_at")), name="activity_ends_after_start"
            ),
            models.CheckConstraint(condition=Q(capacity__gte=1), name="activity_capacity_positive"),
            models.CheckConstraint(
                condition=Q(skill_level__gte=1, skill_level__lte=5), name="activity_skill_range"
            ),
            models.CheckConstraint(
                condition=Q(category__in=list(ACTIVITY_TYPES)), name="activity_category_valid"
            ),
            models.CheckConstraint(
                condition=Q(subtype="") | Q(subtype__in=list(INTERESTS)),
                name="activity_subtype_valid",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["draft", "published", "cancelled", "completed"]),
                name="activity_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(recruit_radius_km__gte=0.1, recruit_radius_km__lte=200.0),
                name="activity_radius_range",
            ),
        ]
        indexes = [
            # Browsing lists published activities by start time.
            models.Index(fields=["status", "starts_at"], name="activity_status_start"),
            models.Index(fields=["organiser", "-starts_at"], name="activity_organiser_recent"),
        ]

    def __str__(self) -> str:
        return self.title


class Participation(models.Model):
    activity = models.ForeignKey(Activity, on_delete=models.CASCADE, related_name="participations")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="participations"
    )
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["activity", "user"], name="participation_unique"),
        ]
        indexes = [
            # "Activities I joined" and co-participation features read by user.
            models.Index(fields=["user", "-joined_at"], name="participation_user_recent"),
            # People nearby ask who joined anything since an embedding set was built.
            models.Index(fields=["joined_at"], name="participation_joined_at"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.activity_id}"


class Invitation(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACCEPTED = "accepted", "Accepted"
        DECLINED = "declined", "Declined"
        EXPIRED = "expired", "Expired"
        CANCELLED = "cancelled", "Cancelled"

    activity = models.ForeignKey(Activity, on_delete=models.CASCADE, related_name="invitations")
    invitee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="invitations"
    )
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="invitations_sent",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # What the recommender said when the invitation was sent.
    score = models.FloatField(null=True, blank=True)
    reasons = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    responded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # A person is invited to an activity at most once.
            models.UniqueConstraint(fields=["activity", "invitee"], name="invitation_unique"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "accepted", "declined", "expired", "cancelled"]),
                name="invitation_status_valid",
            ),
        ]
        indexes = [
            # The invitee's inbox: pending first, newest first.
            models.Index(fields=["invitee", "status", "-created_at"], name="invitation_inbox"),
            # Expiry sweeps find pending invitations of activities about to start.
            models.Index(fields=["status", "activity"], name="invitation_status_activity"),
        ]

    def __str__(self) -> str:
        return f"{self.invitee_id} to {self.activity_id} ({self.status})"


class WaitlistEntry(models.Model):
    """Someone waiting for a place in a full activity; the earliest is promoted when one frees."""

    activity = models.ForeignKey(Activity, on_delete=models.CASCADE, related_name="waitlist")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="waitlist_entries"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "waitlist entries"
        constraints = [
            models.UniqueConstraint(fields=["activity", "user"], name="waitlist_unique"),
        ]
        indexes = [
            # Promotion takes the earliest entry of an activity.
            models.Index(fields=["activity", "created_at"], name="waitlist_activity_order"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} waiting for {self.activity_id}"


class Recommendation(models.Model):
    """One recommended participant of an activity, as the recommender last ranked them.

    Rewritten as a whole list each time the recommendations are recomputed; what the organiser
    acted on is kept on the ``Invitation`` (score and reasons) and in the interaction log.
    """

    activity = models.ForeignKey(Activity, on_delete=models.CASCADE, related_name="recommendations")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    rank = models.PositiveIntegerField()
    score = models.FloatField()
    # Why, in words a person can check: shared interests, distance bucket, friends taking part ...
    reasons = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["activity", "user"], name="recommendation_unique"),
            models.UniqueConstraint(fields=["activity", "rank"], name="recommendation_unique_rank"),
            models.CheckConstraint(condition=Q(rank__gte=1), name="recommendation_rank_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.activity_id}: #{self.rank} {self.user_id}"
