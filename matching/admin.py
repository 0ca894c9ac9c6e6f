from __future__ import annotations

from django.contrib import admin

from matching.models import Interaction


@admin.register(Interaction)
class InteractionAdmin(admin.ModelAdmin):
    list_display = ("actor", "kind", "target_user", "target_activity", "target_venue", "weight", "surface", "variant", "occurred_at")
    list_filter = ("kind", "surface", "variant")
    search_fields = ("actor__username", "target_user__username")
    raw_id_fields = ("actor", "target_user", "target_activity", "target_venue")
    list_select_related = ("actor", "target_user", "target_activity", "target_venue")
    date_hierarchy = "occurred_at"
    # The log has millions of rows: skip the unfiltered COUNT(*) on every page.
    show_full_result_count = False

    # The log is append-only evidence for training and A/B tests: staff read it, never edit it.
    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
