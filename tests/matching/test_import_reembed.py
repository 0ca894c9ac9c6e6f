"""``import_lbsn`` writes with COPY and sends no signals: it queues the embedding rebuild itself."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.management import call_command

from matching.management.commands.import_lbsn import EMBED_NO_MODEL, EMBED_QUEUED, EMBED_SKIPPED
from matching.models import EmbeddingSet
from matching.services.training import model_train
from matching.serving import store
from socialmatch.celery import app
from tests.matching.test_registry import small_social_city

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(tmp_path: Path, settings: object) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"  # type: ignore[attr-defined]
    cache.clear()
    store.reset()


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """Three people, two places, one friendship, three visits."""
    directory = tmp_path / "tiny"
    directory.mkdir()
    (directory / "Tiny_data_size.txt").write_text("3\t2\n")
    (directory / "Tiny_poi_coos.txt").write_text("0\t40.44\t-79.99\n1\t40.45\t-79.98\n")
    (directory / "Tiny_social_relations.txt").write_text("0\t1\n")
    (directory / "Tiny_train.txt").write_text("0\t0\t1\n1\t1\t2\n2\t0\t1\n")
    return directory


@pytest.fixture
def eager() -> Iterator[None]:
    """Celery runs tasks in this process, as they are sent (chords included)."""
    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


def run_import(directory: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("import_lbsn", str(directory), *args, stdout=out)
    return out.getvalue()


def test_an_import_rebuilds_the_embeddings_of_the_active_model(
    tiny: Path, eager: None, django_capture_on_commit_callbacks: object,
) -> None:
    small_social_city()
    version = model_train(epochs=1, folds=1, activate=True)
    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
        output = run_import(tiny)
    assert EMBED_QUEUED.format(name=version.name) in output
    embedding_set = EmbeddingSet.objects.get(model_version=version)
    assert embedding_set.status == "ready", embedding_set.error
    assert embedding_set.users == 16 + 3  # the imported people are embedded
    # Nothing new the second time: no rebuild.
    assert EMBED_QUEUED.format(name=version.name) not in run_import(tiny)
    assert EmbeddingSet.objects.count() == 1


def test_without_an_active_model_there_is_nothing_to_rebuild(tiny: Path) -> None:
    assert EMBED_NO_MODEL in run_import(tiny)
    assert not EmbeddingSet.objects.exists()


def test_no_embed_leaves_the_rebuild_to_the_operator(tiny: Path) -> None:
    small_social_city()
    model_train(epochs=1, folds=1, activate=True)
    assert EMBED_SKIPPED in run_import(tiny, "--no-embed")
    assert not EmbeddingSet.objects.exists()
