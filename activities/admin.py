"""Staff curation of venues and activities."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from activities import services
from activities.models import (
    Activity,
    Category,
    Invitation,
    Participation,
    Recommendation,
    Venue,
    WaitlistEntry,
)
from users.admin import MapAdmin


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ("name", "source", "external_id", "interest")
    list_filter = ("source", "interest")
    list_editable = ("interest",)
    search_fields = ("name", "external_id")


@admin.register(Venue)
class VenueAdmin(MapAdmin):
    list_display = ("name", "place_type", "external_ref", "created_at")
    list_filter = ("place_type",)
    search_fields = ("name", "external_ref")
    filter_horizontal = ("categories",)


class ParticipationInline(admin.TabularInline):
    model = Participation
    extra = 0
    raw_id_fields = ("user",)
    readonly_fields = ("joined_at",)


@admin.register(Activity)
class ActivityAdmin(MapAdmin):
    list_display = (
        "title", "organiser", "category", "status", "starts_at", "capacity", "participants",
        "is_featured", "recommended_at", "recommendation_ranker",
    )
    list_filter = ("status", "category", "is_featured", "skill_level")
    search_fields = ("title", "description", "organiser__username")
    raw_id_fields = ("organiser", "venue")
    date_hierarchy = "starts_at"
    list_select_related = ("organiser",)
    inlines = (ParticipationInline,)
    readonly_fields = (
        "recommended_at", "recommendation_ranker", "recommendation_model_version", "recommendation_runs",
    )
    actions = ("feature", "unfeature", "cancel")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Activity]:
        return super().get_queryset(request).annotate(participant_count=Count("participations"))

    @admin.display(description="Participants", ordering="participant_count")
    def participants(self, activity: Activity) -> int:
        return activity.participant_count  # type: ignore[attr-defined]

    @admin.action(description="Feature selected activities")
    def feature(self, request: HttpRequest, queryset: QuerySet[Activity]) -> None:
        count = services.activities_set_featured(activities=queryset, featured=True)
        self.message_user(request, f"{count} activity(ies) featured.", messages.SUCCESS)

    @admin.action(description="Unfeature selected activities")
    def unfeature(self, request: HttpRequest, queryset: QuerySet[Activity]) -> None:
        count = services.activities_set_featured(activities=queryset, featured=False)
        self.message_user(request, f"{count} activity(ies) unfeatured.", messages.SUCCESS)

    @admin.action(description="Cancel selected activities")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Activity]) -> None:
        count = services.activities_cancel(activities=queryset)
        self.message_user(request, f"{count} activity(ies) cancelled.", messages.SUCCESS)


@admin.register(Participation)
class ParticipationAdmin(admin.ModelAdmin):
    list_display = ("activity", "user", "joined_at")
    search_fields = ("activity__title", "user__username")
    raw_id_fields = ("activity", "user")
    list_select_related = ("activity", "user")


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ("activity", "invitee", "status", "score", "created_at", "responded_at")
    list_filter = ("status",)
    search_fields = ("activity__title", "invitee__username")
    raw_id_fields = ("activity", "invitee", "invited_by")
    list_select_related = ("activity", "invitee")
    date_hierarchy = "created_at"


@admin.register(WaitlistEntry)
class WaitlistEntryAdmin(admin.ModelAdmin):
    list_display = ("activity", "user", "created_at")
    search_fields = ("activity__title", "user__username")
    raw_id_fields = ("activity", "user")
    list_select_related = ("activity", "user")


@admin.register(Recommendation)
class RecommendationAdmin(admin.ModelAdmin):
    """Read-only: the recommender rewrites these lists; staff look, they do not edit."""

    list_display = ("activity", "rank", "user", "score")
    search_fields = ("activity__title", "user__username")
    raw_id_fields = ("activity", "user")
    list_select_related = ("activity", "user")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
