"""``manage.py import_lbsn DIR [--source NAME] [--no-embed]``: import an LBSN dataset directory
(idempotent).

The import writes with COPY and sends no model signals, so the per-person embedding refresh never
hears of the new people, friendships and visits. When it created anything and a model is
active, the command therefore queues a full rebuild of the active version's embeddings and index
(``embeddings_rebuild_task``, the work ``rebuild_embeddings`` does), which web processes pick up
when it is ready; ``--no-embed`` leaves that to a later ``rebuild_embeddings``.
"""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from matching.lbsn import LbsnFormatError
from matching.lbsn_import import LbsnImportError, lbsn_import
from matching.models import ModelVersion

EMBED_QUEUED = "Queued a rebuild of everyone's embeddings under model {name} (rebuild_embeddings)."
EMBED_NO_MODEL = "No model is active: nothing to re-embed (train_model --activate embeds everyone)."
EMBED_SKIPPED = "Embeddings not rebuilt (--no-embed): run rebuild_embeddings to serve the new data."


class Command(BaseCommand):
    help = (
        "Import an LBSN dataset directory (see shared/data/lbsn/README.md): its people, places, "
        "categories, friendships and visits. Re-running on the same data changes nothing; a "
        "malformed line aborts the whole import, naming the file and line."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("directory", type=Path, help="the dataset directory")
        parser.add_argument(
            "--source",
            help="label of the dataset in usernames and references (default: the directory's name)",
        )
        parser.add_argument(
            "--no-embed", action="store_true",
            help="do not queue the embedding rebuild that follows an import that changed anything",
        )

    def handle(
        self, *args: Any, directory: Path, source: str | None, no_embed: bool = False,
        **options: Any,
    ) -> None:
        source = source or directory.resolve().name
        try:
            report = lbsn_import(directory=directory, source=source)
        except (LbsnFormatError, LbsnImportError) as error:
            raise CommandError(str(error)) from error
        for line in report.lines():
            self.stdout.write(line)
        if report.created:
            self.stdout.write(self._embed(skip=no_embed))

    def _embed(self, *, skip: bool) -> str:
        if skip:
            return EMBED_SKIPPED
        version = ModelVersion.objects.filter(is_active=True).first()
        if version is None:
            return EMBED_NO_MODEL
        from matching.tasks import embeddings_rebuild_task

        embeddings_rebuild_task.delay(version.pk)
        return EMBED_QUEUED.format(name=version.name)
