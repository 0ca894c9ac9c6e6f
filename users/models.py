"""People: accounts, profiles, where they are and when they are free, and who they know."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.contrib.gis.db import models
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import Q
from django.db.models.functions import Greatest, Least

from users.fields import LonLatPointField
from users.taxonomy import (
    ACTIVITY_TYPE_CHOICES,
    ACTIVITY_TYPES,
    INTEREST_CHOICES,
    INTERESTS,
    PLACE_TYPE_CHOICES,
    PLACE_TYPES,
    TIME_PREFERENCE_CHOICES,
    TIME_PREFERENCES,
)

# The oldest and youngest birth years a profile may state; the product is for adults.
BIRTH_YEAR_MIN = 1900
BIRTH_YEAR_MAX = 2015


class User(AbstractUser):
    """An account. Curation flags live here because they gate login and discovery alike."""

    # Id of this person in an imported dataset ("yelp-small:17"); re-imports match on it.
    external_ref = models.CharField(max_length=120, unique=True, null=True, blank=True)
    is_featured = models.BooleanField(default=False, help_text="Promoted by staff.")
    is_hidden = models.BooleanField(default=False, help_text="Hidden from discovery by staff.")
    is_suspended = models.BooleanField(default=False, help_text="Suspended: cannot log in or be shown.")

    class Meta:
        indexes = [
            # Candidate queries exclude hidden and suspended people on every request.
            models.Index(fields=["is_hidden", "is_suspended"], name="user_discovery_flags"),
            # The people who may be shown, for the nearby candidates' join: an index-only probe
            # per candidate instead of a read of the (wide) user row. At 1,000,000 people: 500
            # probes 2.5 ms, against about 8 ms for the rows.
            models.Index(fields=["id"], condition=Q(is_active=True, is_hidden=False, is_suspended=False),
                         name="user_visible"),
        ]

    def __str__(self) -> str:
        return self.username


class Gender(models.TextChoices):
    UNSPECIFIED = "unspecified", "Prefer not to say"
    FEMALE = "female", "Female"
    MALE = "male", "Male"
    NONBINARY = "nonbinary", "Non-binary"


class Occupation(models.TextChoices):
    # The five occupation types of seed 000 section 3.1.4.
    STUDENT = "student", "Student"
    PROFESSIONAL = "professional", "Professional"
    SERVICE = "service", "Service"
    BUSINESS = "business", "Business"
    OTHER = "other", "Other"


class MaritalStatus(models.IntegerChoices):
    UNSPECIFIED = 0, "Prefer not to say"
    SINGLE = 1, "Single"
    PARTNERED = 2, "In a relationship"
    MARRIED = 3, "Married"
    DIVORCED_OR_WIDOWED = 4, "Divorced or widowed"


class Profile(models.Model):
    """What a person says about themselves, and where they are now."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="profile")
    display_name = models.CharField(max_length=80)
    bio = models.TextField(blank=True, max_length=2000)
    birth_year = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(BIRTH_YEAR_MIN), MaxValueValidator(BIRTH_YEAR_MAX)],
    )
    gender = models.CharField(max_length=16, choices=Gender.choices, default=Gender.UNSPECIFIED)
    # Levels 0 (unknown) to 5, as seed 000 section 3.1.4 normalises them by 5.
    education = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(5)])
    income_band = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(5)])
    occupation = models.CharField(max_length=16, choices=Occupation.choices, default=Occupation.OTHER)
    marital_status = models.PositiveSmallIntegerField(
        choices=MaritalStatus.choices, default=MaritalStatus.UNSPECIFIED
    )
    city_tier = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    years_in_city = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    # ISO 639-1 codes.
    languages = ArrayField(models.CharField(max_length=8), default=list, blank=True)
    interests = ArrayField(
        models.CharField(max_length=24, choices=INTEREST_CHOICES), default=list, blank=True
    )
    activity_types = ArrayField(
        models.CharField(max_length=24, choices=ACTIVITY_TYPE_CHOICES), default=list, blank=True
    )
    place_types = ArrayField(
        models.CharField(max_length=24, choices=PLACE_TYPE_CHOICES), default=list, blank=True
    )
    time_preferences = ArrayField(
        models.CharField(max_length=16, choices=TIME_PREFERENCE_CHOICES), default=list, blank=True
    )
    discoverable = models.BooleanField(default=True, help_text="Shown to people nearby.")
    # Geography: distances in metres and ST_DWithin in metres. Django gives every spatial field a
    # GiST index (spatial_index=True), which nearest-first candidate queries use.
    location = LonLatPointField(null=True, blank=True)
    location_updated_at = models.DateTimeField(null=True, blank=True)
    last_active_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(birth_year__isnull=True)
                | Q(birth_year__gte=BIRTH_YEAR_MIN, birth_year__lte=BIRTH_YEAR_MAX),
                name="profile_birth_year_range",
            ),
            models.CheckConstraint(condition=Q(education__lte=5), name="profile_education_range"),
            models.CheckConstraint(condition=Q(income_band__lte=5), name="profile_income_range"),
            models.CheckConstraint(
                condition=Q(marital_status__lte=4), name="profile_marital_status_range"
            ),
            models.CheckConstraint(
                condition=Q(city_tier__gte=1, city_tier__lte=5), name="profile_city_tier_range"
            ),
            models.CheckConstraint(
                condition=Q(years_in_city__lte=100), name="profile_years_in_city_range"
            ),
            models.CheckConstraint(
                condition=Q(gender__in=Gender.values), name="profile_gender_valid"
            ),
            models.CheckConstraint(
                condition=Q(occupation__in=Occupation.values), name="profile_occupation_valid"
            ),
            # The taxonomy is a feature layout: a value outside it would be a silent zero column.
            models.CheckConstraint(
                condition=Q(interests__contained_by=list(INTERESTS)), name="profile_interests_valid"
            ),
            models.CheckConstraint(
                condition=Q(activity_types__contained_by=list(ACTIVITY_TYPES)),
                name="profile_activity_types_valid",
            ),
            models.CheckConstraint(
                condition=Q(place_types__contained_by=list(PLACE_TYPES)),
                name="profile_place_types_valid",
            ),
            models.CheckConstraint(
                condition=Q(time_preferences__contained_by=list(TIME_PREFERENCES)),
                name="profile_time_preferences_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.display_name or self.user.username


class LocationPing(models.Model):
    """One observed position of a person, kept for location stability and activity radius."""

    class Source(models.TextChoices):
        DEVICE = "device", "Device"
        MANUAL = "manual", "Set by hand"
        VISIT = "visit", "Venue visit"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="location_pings")
    point = LonLatPointField()
    recorded_at = models.DateTimeField()
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.DEVICE)
    # What produced the ping ("yelp-small:venue:17"): makes re-imports idempotent.
    source_ref = models.CharField(max_length=120, blank=True, default="")

    class Meta:
        indexes = [
            # Features read a person's recent history: newest first.
            models.Index(fields=["user", "-recorded_at"], name="ping_user_recent"),
            # People nearby ask who pinged since an embedding set was built (few, recent rows).
            models.Index(fields=["recorded_at"], name="ping_recorded_at"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "recorded_at", "source_ref"],
                condition=~Q(source_ref=""),
                name="ping_unique_per_source",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} at {self.recorded_at:%Y-%m-%d %H:%M}"


class Availability(models.Model):
    """A weekly slot in which a person is free (local time of the city)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="availability")
    weekday = models.PositiveSmallIntegerField(
        validators=[MaxValueValidator(6)], help_text="0 = Monday, 6 = Sunday."
    )
    start_time = models.TimeField()
    end_time = models.TimeField()

    class Meta:
        verbose_name_plural = "availability"
        ordering = ["user", "weekday", "start_time"]
        constraints = [
            models.CheckConstraint(condition=Q(weekday__lte=6), name="availability_weekday_range"),
            models.CheckConstraint(
                condition=Q(end_time__gt=models.F("start_time")), name="availability_ends_after_start"
            ),
            models.UniqueConstraint(
                fields=["user", "weekday", "start_time"], name="availability_unique_slot"
            ),
        ]
        indexes = [
            # Participant recommendation filters by "free on this weekday at this time".
            models.Index(fields=["weekday", "start_time", "end_time"], name="availability_slot"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} day {self.weekday} {self.start_time:%H:%M}-{self.end_time:%H:%M}"


class Connection(models.Model):
    """A request from one person to another, and its answer. Accepted means friends."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACCEPTED = "accepted", "Accepted"
        DECLINED = "declined", "Declined"

    from_user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="connections_sent")
    to_user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="connections_received")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    responded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~Q(from_user=models.F("to_user")), name="connection_not_self"
            ),
            # One connection per pair whichever way it was asked: A->B forbids a second B->A.
            models.UniqueConstraint(
                Least("from_user", "to_user"), Greatest("from_user", "to_user"),
                name="connection_unique_pair",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "accepted", "declined"]),
                name="connection_status_valid",
            ),
        ]
        indexes = [
            # "Friends of X" reads both directions filtered by status.
            models.Index(fields=["from_user", "status"], name="connection_from_status"),
            models.Index(fields=["to_user", "status"], name="connection_to_status"),
            # Friendships of a hundred people per nearby request, read from the index alone:
            # the other side is included and only accepted rows are kept. At 1,000,000 people
            # this took the statement from 8 ms (heap reads) to about 3 ms, and made the planner
            # drop the parallel workers it had been starting for it (12 ms more).
            models.Index(fields=["from_user"], include=["to_user"], condition=Q(status="accepted"),
                         name="connection_accepted_from"),
            models.Index(fields=["to_user"], include=["from_user"], condition=Q(status="accepted"),
                         name="connection_accepted_to"),
        ]

    def __str__(self) -> str:
        return f"{self.from_user_id} -> {self.to_user_id} ({self.status})"


class Block(models.Model):
    """One person never sees, nor is seen by, another."""

    blocker = models.ForeignKey(User, on_delete=models.CASCADE, related_name="blocks_made")
    blocked = models.ForeignKey(User, on_delete=models.CASCADE, related_name="blocks_received")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(blocker=models.F("blocked")), name="block_not_self"),
            models.UniqueConstraint(fields=["blocker", "blocked"], name="block_unique_pair"),
        ]
        indexes = [
            # Exclusion "blocked either way" looks up the reverse direction too.
            models.Index(fields=["blocked"], name="block_blocked"),
        ]

    def __str__(self) -> str:
        return f"{self.blocker_id} blocks {self.blocked_id}"


class Notification(models.Model):
    """An in-app message to one person: an invitation, a place freed from the waitlist ..."""

    class Kind(models.TextChoices):
        INVITATION = "invitation", "Invitation"
        INVITATION_ANSWERED = "invitation_answered", "Invitation answered"
        WAITLIST_PROMOTED = "waitlist_promoted", "Promoted from the waitlist"
        ACTIVITY_CANCELLED = "activity_cancelled", "Activity cancelled"
        ACTIVITY_CHANGED = "activity_changed", "Activity changed"
        CONNECTION_REQUEST = "connection_request", "Connection request"
        CONNECTION_ACCEPTED = "connection_accepted", "Connection accepted"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    message = models.CharField(max_length=300)
    # Ids the client links to ({"activity_id": 3, "invitation_id": 9}); never coordinates.
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=[
                    "invitation", "invitation_answered", "waitlist_promoted", "activity_cancelled",
                    "activity_changed", "connection_request", "connection_accepted",
                ]),
                name="notification_kind_valid",
            ),
        ]
        indexes = [
            # A person's list, newest first.
            models.Index(fields=["user", "-created_at"], name="notification_user_recent"),
            # The unread badge counts unread rows of one person.
            models.Index(
                fields=["user"], condition=Q(read_at__isnull=True), name="notification_user_unread"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.kind}"
