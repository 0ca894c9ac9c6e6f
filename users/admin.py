"""Staff curation of people: search, filters, and bulk actions on the changelist."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.gis.admin import GISModelAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from socialmatch.widgets import OfflineMapWidget
from users import services
from users.models import Availability, Block, Connection, LocationPing, Notification, Profile, User


class MapAdmin(GISModelAdmin):
    gis_widget = OfflineMapWidget


class ProfileInline(admin.StackedInline):
    model = Profile
    can_delete = False
    extra = 0
    fields = ("display_name", "discoverable", "birth_year", "gender", "interests", "location_updated_at")
    readonly_fields = ("location_updated_at",)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = (
        "username", "display_name", "email", "is_featured", "is_hidden", "is_suspended",
        "is_staff", "date_joined", "last_login",
    )
    list_filter = ("is_featured", "is_hidden", "is_suspended", "is_staff", "is_active")
    search_fields = ("username", "email", "first_name", "last_name", "profile__display_name", "external_ref")
    list_select_related = ("profile",)
    inlines = (ProfileInline,)
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        ("Curation", {"fields": ("is_featured", "is_hidden", "is_suspended", "external_ref")}),
    )
    actions = ("feature", "unfeature", "hide", "unhide", "suspend", "unsuspend")

    @admin.display(description="Display name", ordering="profile__display_name")
    def display_name(self, user: User) -> str:
        profile = getattr(user, "profile", None)
        return profile.display_name if profile else ""

    def _report(self, request: HttpRequest, count: int, what: str) -> None:
        self.message_user(request, f"{count} user(s) {what}.", messages.SUCCESS)

    @admin.action(description="Feature selected users")
    def feature(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._report(request, services.users_set_featured(users=queryset, featured=True), "featured")

    @admin.action(description="Unfeature selected users")
    def unfeature(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._report(request, services.users_set_featured(users=queryset, featured=False), "unfeatured")

    @admin.action(description="Hide selected users from discovery")
    def hide(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._report(request, services.users_set_hidden(users=queryset, hidden=True), "hidden")

    @admin.action(description="Show selected users in discovery again")
    def unhide(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._report(request, services.users_set_hidden(users=queryset, hidden=False), "shown again")

    @admin.action(description="Suspend selected users (staff are skipped)")
    def suspend(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._report(request, services.users_set_suspended(users=queryset, suspended=True), "suspended")

    @admin.action(description="Lift suspension of selected users")
    def unsuspend(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        self._report(request, services.users_set_suspended(users=queryset, suspended=False), "reinstated")


@admin.register(Profile)
class ProfileAdmin(MapAdmin):
    list_display = ("display_name", "user", "birth_year", "gender", "occupation", "discoverable", "last_active_at")
    list_filter = ("discoverable", "gender", "occupation", "education", "city_tier")
    search_fields = ("display_name", "user__username", "user__email")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    readonly_fields = ("created_at", "updated_at")


@admin.register(LocationPing)
class LocationPingAdmin(MapAdmin):
    list_display = ("user", "recorded_at", "source", "source_ref")
    list_filter = ("source",)
    search_fields = ("user__username", "source_ref")
    raw_id_fields = ("user",)
    date_hierarchy = "recorded_at"
    list_select_related = ("user",)
    show_full_result_count = False


@admin.register(Availability)
class AvailabilityAdmin(admin.ModelAdmin):
    list_display = ("user", "weekday", "start_time", "end_time")
    list_filter = ("weekday",)
    search_fields = ("user__username",)
    raw_id_fields = ("user",)
    list_select_related = ("user",)


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    list_display = ("from_user", "to_user", "status", "created_at", "responded_at")
    list_filter = ("status",)
    search_fields = ("from_user__username", "to_user__username")
    raw_id_fields = ("from_user", "to_user")
    list_select_related = ("from_user", "to_user")
    date_hierarchy = "created_at"


@admin.register(Block)
class BlockAdmin(admin.ModelAdmin):
    list_display = ("blocker", "blocked", "created_at")
    search_fields = ("blocker__username", "blocked__username")
    raw_id_fields = ("blocker", "blocked")
    list_select_related = ("blocker", "blocked")


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("user", "kind", "message", "created_at", "read_at")
    list_filter = ("kind",)
    search_fields = ("user__username", "message")
    raw_id_fields = ("user",)
    list_select_related = ("user",)
    date_hierarchy = "created_at"
