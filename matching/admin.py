from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from matching.dashboard import training_curves_png
from matching.models import Audience, AudienceMember, EmbeddingSet, Interaction, ModelVersion
from users.admin import UserAdmin
from users.models import User

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
        "name", "curves_plot", "weights", "sha256", "size_bytes", "config", "feature_schema", "feature_schema_version",
        "metrics", "curves", "parent", "is_active", "activated_at", "created_at",
    )
    actions = ("activate", "rollback", "start_training", "start_reembedding")

    def get_urls(self):  # type: ignore[no-untyped-def]
        curves = path("<int:pk>/curves.png", self.admin_site.admin_view(self.curves_png),
                      name="matching_modelversion_curves")
        return [curves, *super().get_urls()]

    def curves_png(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        version = get_object_or_404(ModelVersion, pk=pk)
        response = HttpResponse(training_curves_png(version), content_type="image/png")
        response["Cache-Control"] = "private, max-age=3600"  # a version's curves never change
        return response

    @admin.display(description="Training curves")
    def curves_plot(self, version: ModelVersion) -> str:
        if not version.pk:
            return "-"
        url = reverse("admin:matching_modelversion_curves", args=[version.pk])
        return format_html('<img src="{}" alt="Training curves of {}" style="max-width:100%">', url, version.name)

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
        self.message_user(request, f"Model {version.name} is now active.", messages.SUCCESS)

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

    @admin.action(description="Recompute embeddings and the index for the active version")
    def start_reembedding(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        from matching.tasks import embeddings_rebuild_task

        result = embeddings_rebuild_task.delay()
        self.message_user(request, f"Re-embedding queued (task {result.id}).", messages.INFO)


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


class AudienceFromSelectionForm(forms.Form):
    name = forms.CharField(max_length=120, required=False, help_text="For your own reference.")
    target_size = forms.IntegerField(min_value=1, max_value=1_000_000, initial=1000, help_text="How many people to find.")
    exclude_seeds = forms.BooleanField(required=False, initial=True, label="Leave the selected people out")
    min_score = forms.FloatField(min_value=-1.0, max_value=1.0, initial=-1.0,
                                 help_text="Keep only people scoring at least this (-1 keeps everyone).")


class MatchingUserAdmin(UserAdmin):
    """The user changelist, plus what the matching layer offers on a selection of people."""

    actions = (*UserAdmin.actions, "build_audience")

    @admin.action(description="Build a look-alike audience from the selected people")
    def build_audience(self, request: HttpRequest, queryset: QuerySet[User]) -> HttpResponse | None:
        from matching.services.audiences import audience_create

        form = AudienceFromSelectionForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            try:
                audience = audience_create(actor=request.user, seed_user_ids=list(queryset.values_list("pk", flat=True)),
                                           **form.cleaned_data)
            except (PermissionDenied, ValueError) as exc:
                self.message_user(request, str(exc), messages.ERROR)
                return None
            self.message_user(request, f"Building audience #{audience.pk} from {len(audience.seed_user_ids)} people.",
                              messages.SUCCESS)
            return redirect("admin:matching_audience_change", audience.pk)
        return TemplateResponse(request, "admin/matching/audience/from_selection.html", {
            **self.admin_site.each_context(request), "title": "Build a look-alike audience",
            "form": form, "count": queryset.count(), "select_across": request.POST.get("select_across") == "1",
            "pks": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME, "opts": self.model._meta,
        })


admin.site.unregister(User)
admin.site.register(User, MatchingUserAdmin)
