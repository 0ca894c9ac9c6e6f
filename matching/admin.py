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
from matching.models import (
    Audience,
    AudienceMember,
    EmbeddingSet,
    Experiment,
    Interaction,
    ModelVersion,
    RankingConfig,
)
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
    list_display = ("name", "is_active", "parent", "feature_schema_version", "headline", "why", "created_at", "activated_at")
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

    @admin.display(description="Why (activated or not)")
    def why(self, version: ModelVersion) -> str:
        """The gate's reason, or who activated it: the notes, shortened for the list."""
        notes = version.notes or ""
        return notes if len(notes) <= 120 else notes[:117] + "..."

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


class RankingConfigForm(forms.ModelForm):
    class Meta:
        model = RankingConfig
        fields = ("name", "objectives", "parent", "notes")

    def clean_objectives(self) -> dict[str, object]:
        from matching.ml.fusion import FusionError, parse_objectives

        value = self.cleaned_data["objectives"]
        try:
            parse_objectives(value)
        except FusionError as exc:
            raise forms.ValidationError(str(exc)) from None
        return value


@admin.register(RankingConfig)
class RankingConfigAdmin(admin.ModelAdmin):
    """Fusion weights: new versions are added (starting from a parent's values), never edited."""

    form = RankingConfigForm
    list_display = ("name", "is_default", "weights", "parent", "created_by", "created_at")
    actions = ("make_default",)

    @admin.display(description="Objectives (weight, alpha, beta)")
    def weights(self, config: RankingConfig) -> str:
        return "; ".join(f"{k} {v.get('weight')}, {v.get('alpha', 1)}, {v.get('beta', 1)}" for k, v in config.objectives.items())

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        if obj is None:
            return ("is_default", "created_by", "created_at")
        return ("name", "objectives", "parent", "notes", "is_default", "created_by", "created_at")

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, object]:
        initial = super().get_changeform_initial_data(request)
        parent = RankingConfig.objects.filter(pk=request.GET.get("parent") or 0).first() or \
            RankingConfig.objects.filter(is_default=True).first()
        if parent is not None:
            initial.setdefault("objectives", parent.objectives)
            initial.setdefault("parent", parent.pk)
        return initial

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        from matching.services.experiments import ranking_config_create

        if change:
            raise PermissionDenied("Ranking configurations are versions: add a new one instead.")
        saved = ranking_config_create(actor=request.user, name=obj.name, objectives=obj.objectives,
                                      parent=obj.parent, notes=obj.notes)
        obj.pk, obj.created_at = saved.pk, saved.created_at

    @admin.action(description="Make the selected configuration the default")
    def make_default(self, request: HttpRequest, queryset: QuerySet[RankingConfig]) -> None:
        from matching.services.experiments import ranking_config_make_default

        if queryset.count() != 1:
            self.message_user(request, "Select exactly one configuration.", messages.ERROR)
            return
        config = ranking_config_make_default(actor=request.user, config=queryset.get())
        self.message_user(request, f"{config.name} is now the default ranking.", messages.SUCCESS)


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("name", "surface", "status", "b_share", "starts_at", "ends_at", "winner")
    list_filter = ("status", "surface")
    readonly_fields = ("status", "winner", "results", "created_at")
    fieldsets = (
        (None, {"fields": ("name", "description", "surface", "status", "winner", "significance")}),
        ("Arm A", {"fields": ("a_model", "a_ranking")}),
        ("Arm B", {"fields": ("b_model", "b_ranking", "b_share")}),
        ("Window", {"fields": ("starts_at", "ends_at")}),
        ("Results", {"fields": ("results",)}),
    )
    actions = ("start", "end", "end_and_promote")

    def get_urls(self):  # type: ignore[no-untyped-def]
        plot = path("<int:pk>/plot.png", self.admin_site.admin_view(self.plot_png), name="matching_experiment_plot")
        return [plot, *super().get_urls()]

    def plot_png(self, request: HttpRequest, pk: int) -> HttpResponse:
        from matching.services.experiments import experiment_plot_png

        if not self.has_view_permission(request):
            raise PermissionDenied
        experiment = get_object_or_404(Experiment, pk=pk)
        return HttpResponse(experiment_plot_png(experiment=experiment), content_type="image/png")

    @admin.display(description="Results")
    def results(self, experiment: Experiment) -> str:
        from django.template.loader import render_to_string

        from matching.services.experiments import experiment_results

        if not experiment.pk:
            return "-"
        return render_to_string("admin/matching/experiment/results.html", {
            "experiment": experiment, "r": experiment_results(experiment=experiment),
            "plot": reverse("admin:matching_experiment_plot", args=[experiment.pk]),
        })

    def _each(self, request: HttpRequest, queryset: QuerySet[Experiment], verb: str, **kwargs: object) -> None:
        from django.core.exceptions import ValidationError

        from matching.services import experiments

        for experiment in queryset:
            try:
                if verb == "start":
                    experiments.experiment_start(actor=request.user, experiment=experiment)
                    self.message_user(request, f"{experiment.name} is running.", messages.SUCCESS)
                else:
                    done = experiments.experiment_end(actor=request.user, experiment=experiment, **kwargs)
                    outcome = f"arm {done.winner.upper()} won" if done.winner else "no significant difference"
                    self.message_user(request, f"{experiment.name} ended: {outcome}.", messages.SUCCESS)
            except ValidationError as exc:
                self.message_user(request, f"{experiment.name}: {' '.join(exc.messages)}", messages.ERROR)

    @admin.action(description="Start the selected experiments")
    def start(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._each(request, queryset, "start")

    @admin.action(description="End the selected experiments")
    def end(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._each(request, queryset, "end")

    @admin.action(description="End and promote a significant winner (its model and ranking become the defaults)")
    def end_and_promote(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._each(request, queryset, "end", promote=True)
