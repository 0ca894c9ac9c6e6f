"""The model registry: versions are saved with checksums, refused when tampered, one is active."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from django.conf import settings
from django.contrib.gis.geos import Point
from django.core.management import call_command
from django.core.management.base import CommandError

from matching.ml.model import RALM, default_model_config
from matching.models import ModelVersion
from matching.services.registry import (
    ModelVersionError,
    active_model,
    model_version_activate,
    model_version_create,
    model_version_load,
    model_version_rollback,
)
from matching.services.training import model_train
from users.factories import ConnectionFactory, ProfileFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(tmp_path: Path, settings: object) -> None:
    settings.MEDIA_ROOT = tmp_path  # type: ignore[attr-defined]


def make_version(**kwargs: object) -> ModelVersion:
    config = default_model_config(10, 5)
    model = RALM(config)
    return model_version_create(model=model, config={"model": config.to_dict()}, metrics={"x": 1.0}, curves={}, **kwargs)


def test_versions_are_named_in_order_and_checksummed() -> None:
    first = make_version()
    second = make_version(parent=first)
    update = make_version(parent=second, minor=True)
    assert [first.name, second.name, update.name] == ["v1", "v2", "v2.1"]
    assert len(first.sha256) == 64 and first.size_bytes > 0
    assert isinstance(model_version_load(first), RALM)


def test_a_tampered_weights_file_is_refused_and_the_active_version_keeps_serving() -> None:
    good = model_version_activate(version=make_version())
    bad = make_version()
    path = Path(settings.MEDIA_ROOT) / bad.weights
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelVersionError, match="does not match its checksum"):
        model_version_activate(version=bad)
    good.refresh_from_db()
    assert good.is_active and not ModelVersion.objects.get(pk=bad.pk).is_active
    assert active_model().version.pk == good.pk


def test_a_missing_file_is_refused() -> None:
    version = make_version()
    (Path(settings.MEDIA_ROOT) / version.weights).unlink()
    with pytest.raises(ModelVersionError, match="is missing"):
        model_version_load(version)


def test_a_model_of_another_feature_layout_is_refused() -> None:
    version = make_version()
    version.feature_schema = {"version": "user-features-0", "groups": [["geo", ["lat_norm"]]]}
    version.save()
    with pytest.raises(ModelVersionError, match="another feature layout"):
        model_version_load(version)


def test_weights_are_loaded_without_unpickling_arbitrary_objects() -> None:
    version = make_version()
    path = Path(settings.MEDIA_ROOT) / version.weights

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    torch.save({"evil": Evil()}, path)
    import hashlib

    version.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    version.save()
    with pytest.raises(ModelVersionError, match="cannot be loaded"):
        model_version_load(version)


def test_one_active_version_and_rollback() -> None:
    first = model_version_activate(version=make_version())
    second = model_version_activate(version=make_version(parent=first))
    assert list(ModelVersion.objects.filter(is_active=True)) == [second]
    back = model_version_rollback()
    assert back.pk == first.pk and "rolled back from v2" in back.notes
    assert ModelVersion.objects.filter(is_active=True).get().pk == first.pk


def test_rollback_without_an_earlier_version_is_a_clear_error() -> None:
    model_version_activate(version=make_version())
    with pytest.raises(ModelVersionError, match="no earlier version"):
        model_version_rollback()


def small_social_city() -> None:
    """Two groups of friends on opposite sides of town."""
    people = []
    for group, (lon, interests) in enumerate(((-80.05, ["sports", "music"]), (-79.90, ["art", "reading"]))):
        for i in range(8):
            people.append(ProfileFactory(location=Point(lon + 0.002 * i, 40.44, srid=4326), interests=interests,
                                         birth_year=1985 + group * 10).user)
    for group in range(2):
        members = people[group * 8:(group + 1) * 8]
        for i in range(8):
            ConnectionFactory(from_user=members[i], to_user=members[(i + 1) % 8])
            ConnectionFactory(from_user=members[i], to_user=members[(i + 3) % 8])


def test_train_model_command_records_and_activates_a_version() -> None:
    small_social_city()
    call_command("train_model", "--epochs", "2", "--activate")
    version = ModelVersion.objects.get(is_active=True)
    assert version.name == "v1" and version.metrics["users"] == 16.0
    assert version.curves["val_loss"]
    call_command("train_model", "--if-none")
    assert ModelVersion.objects.count() == 1
    warm = model_train(epochs=1, warm_start=True)
    assert warm.parent_id == version.pk and not warm.is_active


def test_train_model_if_none_trains_again_when_the_active_weights_are_gone() -> None:
    """A new checkout beside an old database (``make demo`` after re-cloning): the active
    version's file is missing, so "--if-none" trains and activates a new one."""
    from pathlib import Path

    from django.conf import settings

    small_social_city()
    call_command("train_model", "--epochs", "1", "--activate")
    old = ModelVersion.objects.get(is_active=True)
    (Path(settings.MEDIA_ROOT) / old.weights).unlink()
    call_command("train_model", "--if-none", "--epochs", "1", "--activate")
    assert ModelVersion.objects.get(is_active=True).name == "v2"


def test_model_version_command_refuses_unknown_names() -> None:
    with pytest.raises(CommandError, match="no model version named"):
        call_command("model_version", "activate", "v99")


def test_health_reports_the_active_version() -> None:
    from socialmatch.health import check_model

    assert check_model() == {"active_version": None}
    model_version_activate(version=make_version())
    assert check_model() == {"active_version": "v1"}
