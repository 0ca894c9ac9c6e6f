"""The model registry: save, verify, load, activate and roll back model versions."""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from matching.ml.features import SCHEMA, FeatureSchema, FeatureSchemaMismatch
from matching.ml.model import RALM, ModelConfig
from matching.models import ModelVersion

# Published in Redis so that every web process and worker notices a new active version.
ACTIVE_VERSION_KEY = "matching:active-model-version"

MODEL_FILE_MISSING = "model {name}: weights file {path} is missing"
MODEL_FILE_TAMPERED = "model {name}: weights file {path} does not match its checksum (sha256 {actual}, expected {expected})"
MODEL_FILE_UNREADABLE = "model {name}: weights file {path} cannot be loaded: {error}"
MODEL_SCHEMA_MISMATCH = "model {name} was trained on another feature layout: {error}"
NO_ACTIVE_MODEL = "no model version is active"
NOTHING_TO_ROLL_BACK_TO = "model {name} has no earlier version to roll back to"


class ModelVersionError(Exception):
    """A model version cannot serve: missing, corrupt or mismatched weights."""


def models_dir() -> Path:
    path = Path(settings.MEDIA_ROOT) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def next_version_name(*, parent: ModelVersion | None = None, minor: bool = False) -> str:
    """"v{N+1}" for a new full version, "v{N}.{M+1}" for an update of version vN."""
    if minor and parent is not None:
        major = parent.name.split(".")[0]
        siblings = ModelVersion.objects.filter(name__startswith=f"{major}.").values_list("name", flat=True)
        minors = [int(n.split(".")[1]) for n in siblings if n.split(".")[1].isdigit()]
        return f"{major}.{max(minors, default=0) + 1}"
    majors = [int(n[1:].split(".")[0]) for n in ModelVersion.objects.values_list("name", flat=True) if n[1:].split(".")[0].isdigit()]
    return f"v{max(majors, default=0) + 1}"


def model_version_create(
    *, model: RALM, config: dict[str, Any], metrics: dict[str, float], curves: dict[str, list[float]],
    parent: ModelVersion | None = None, minor: bool = False, schema: FeatureSchema = SCHEMA,
) -> ModelVersion:
    """Write the weights atomically (temporary file, then rename) and record the version."""
    with transaction.atomic():
        # Serialise version naming across concurrent trainings.
        list(ModelVersion.objects.select_for_update().values_list("pk", flat=True))
        name = next_version_name(parent=parent, minor=minor)
        final = models_dir() / f"{name}.pt"
        handle, tmp = tempfile.mkstemp(dir=models_dir(), suffix=".tmp")
        os.close(handle)
        try:
            torch.save(model.state_dict(), tmp)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        version = ModelVersion(
            name=name, weights=str(final.relative_to(settings.MEDIA_ROOT)), sha256=_sha256(final),
            size_bytes=final.stat().st_size, config=config, feature_schema=schema.to_dict(),
            feature_schema_version=schema.version, metrics=_plain(metrics), curves=_plain(curves), parent=parent,
        )
        version.full_clean()
        version.save()
    return version


def _plain(value: Any) -> Any:
    """JSON-safe floats (NaN and infinities become None)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float | int) and not isinstance(value, bool):
        number = float(value)
        return number if math.isfinite(number) else None  # JSON has no NaN or Infinity
    return value


def model_version_load(version: ModelVersion) -> RALM:
    """The model of a version, after checking its file, checksum and feature layout.

    Raises ModelVersionError with a message naming the version and the problem.
    """
    path = Path(settings.MEDIA_ROOT) / version.weights
    if not path.is_file():
        raise ModelVersionError(MODEL_FILE_MISSING.format(name=version.name, path=path))
    actual = _sha256(path)
    if actual != version.sha256:
        raise ModelVersionError(MODEL_FILE_TAMPERED.format(name=version.name, path=path, actual=actual, expected=version.sha256))
    try:
        SCHEMA.check_compatible(FeatureSchema.from_dict(version.feature_schema))
    except FeatureSchemaMismatch as exc:
        raise ModelVersionError(MODEL_SCHEMA_MISMATCH.format(name=version.name, error=exc)) from exc
    try:
        model = RALM(ModelConfig.from_dict(version.config["model"]))
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any load failure is the same refusal to serve
        raise ModelVersionError(MODEL_FILE_UNREADABLE.format(name=version.name, path=path, error=exc)) from exc
    if (version.config.get("serving") or {}).get("quantise") == "dynamic-int8":
        from matching.ml.lifecycle import quantise

        return quantise(model)  # float weights on disk; int8 dense layers in memory
    return model.eval()


def model_version_activate(*, version: ModelVersion, note: str = "") -> ModelVersion:
    """Make ``version`` the active one. Refuses (and changes nothing) if it cannot be loaded."""
    model_version_load(version)
    with transaction.atomic():
        ModelVersion.objects.select_for_update().filter(is_active=True).exclude(pk=version.pk).update(is_active=False)
        version.is_active = True
        version.activated_at = timezone.now()
        if note:
            version.notes = note
        version.save(update_fields=["is_active", "activated_at", "notes"])
        transaction.on_commit(lambda: cache.set(ACTIVE_VERSION_KEY, version.name, timeout=None))
    return version


def model_version_rollback() -> ModelVersion:
    """Activate the version that was active before the current one (its parent, else the newest older)."""
    current = ModelVersion.objects.filter(is_active=True).first()
    if current is None:
        raise ModelVersionError(NO_ACTIVE_MODEL)
    previous = current.parent or ModelVersion.objects.filter(created_at__lt=current.created_at).order_by("-created_at").first()
    if previous is None:
        raise ModelVersionError(NOTHING_TO_ROLL_BACK_TO.format(name=current.name))
    return model_version_activate(version=previous, note=f"rolled back from {current.name}")


@dataclass
class LoadedModel:
    version: ModelVersion
    model: RALM


_loaded: LoadedModel | None = None


def active_model() -> LoadedModel | None:
    """The active model, loaded once per process and reloaded when another version is activated.

    A version that cannot load is skipped with the previous one kept serving; None when there is
    no usable active version.
    """
    global _loaded
    version = ModelVersion.objects.filter(is_active=True).first()
    if version is None:
        return _loaded
    if _loaded is not None and _loaded.version.pk == version.pk and _loaded.version.sha256 == version.sha256:
        return _loaded
    try:
        _loaded = LoadedModel(version=version, model=model_version_load(version))
    except ModelVersionError:
        pass
    return _loaded
