from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from matching.models import Audience, AudienceMember, EmbeddingSet, Interaction, ModelVersion

# The registry imports PyTorch; admin actions import it when used, so that starting Django (every
# manage.py command, every web process) does not pay for it.


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


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "is_active", "parent", "feature_schema_version", "headline", "created_at", "activated_at")
    list_filter = ("is_active", "feature_schema_version")
    search_fields = ("name", "notes")
    readonly_fields = (
        "name", "weights", "sha256", "size_bytes", "config", "feature_schema", "feature_schema_version",
        "metrics", "curves", "parent", "is_active", "activated_at", "created_at",
    )
    actions = ("activate", "rollback", "start_training")

    @admin.display(description="Ranking recall@20 (validation)")
    def headline(self, version: ModelVersion) -> str:
        value = (version.metrics or {}).get("rank_val_recall@20")
        return f"{value:.3f}" if isinstance(value, float) else "-"

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False  # versions come from training, not from a form

    @admin.action(description="Activate the selected version")
    def activate(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        from matching.services.registry import ModelVersionError, model_version_activate

        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.", messages.ERROR)
            return
        try:
            version = model_version_activate(version=queryset.get(), note=f"activated by {request.user}")
        except ModelVersionError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"{version.name} is now active.", messages.SUCCESS)

    @admin.action(description="Roll back to the previous version")
    def rollback(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        from matching.services.registry import ModelVersionError, model_version_rollback

        try:
            version = model_version_rollback()
        except ModelVersionError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"Rolled back: {version.name} is now active.", messages.SUCCESS)

    @admin.action(description="Start training a new version (warm start from the active one)")
    def start_training(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        from matching.tasks import model_train_task

        result = model_train_task.delay(warm_start=True)
        self.message_user(request, f"Training queued (task {result.id}).", messages.INFO)


@admin.register(EmbeddingSet)
class EmbeddingSetAdmin(admin.ModelAdmin):
    list_display = ("pk", "model_version", "status", "users", "chunks_done", "chunks_total", "index_kind", "created_at", "finished_at")
    list_filter = ("status",)
    list_select_related = ("model_version",)
    readonly_fields = [f.name for f in EmbeddingSet._meta.fields]
    actions = ("rebuild",)

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    @admin.action(description="Recompute embeddings and the index for the active version")
    def rebuild(self, request: HttpRequest, queryset: QuerySet[EmbeddingSet]) -> None:
        from matching.tasks import embeddings_rebuild_task

        result = embeddings_rebuild_task.delay()
        self.message_user(request, f"Re-embedding queued (task {result.id}).", messages.INFO)


class AudienceMemberInline(admin.TabularInline):
    model = AudienceMember
    extra = 0
    fields = ("rank", "user", "score")
    readonly_fields = fields
    ordering = ("rank",)
    can_delete = False

    def get_queryset(self, request):  # type: ignore[no-untyped-def]
        return super().get_queryset(request).select_related("user")


@admin.register(Audience)
class AudienceAdmin(admin.ModelAdmin):
    list_display = ("__str__", "status", "progress", "target_size", "model_version", "created_by", "created_at")
    list_filter = ("status",)
    readonly_fields = ("status", "progress", "model_version", "error", "created_by", "created_at", "finished_at", "csv")
    inlines = (AudienceMemberInline,)

    @admin.display(description="Members as CSV")
    def csv(self, audience: Audience) -> str:
        from django.utils.html import format_html

        return format_html('<a href="/api/v1/audiences/{}/export.csv">download</a>', audience.pk) if audience.pk else "-"
