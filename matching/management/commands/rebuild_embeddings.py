"""Recompute every user's embeddings for a model version on the Celery workers, and its index."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from matching.models import EmbeddingSet, ModelVersion
from matching.services.embeddings import embeddings_rebuild_start


class Command(BaseCommand):
    help = "Enqueue the embedding job (a chord of chunk tasks) for the active or a named version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", help="model version name (default: the active one)")
        parser.add_argument("--wait", type=float, default=0, help="seconds to wait for the set to be ready")

    def handle(self, *args: Any, **options: Any) -> None:
        versions = ModelVersion.objects.all()
        version = versions.filter(name=options["model"]).first() if options["model"] else versions.filter(is_active=True).first()
        if version is None:
            raise CommandError("no such model version" if options["model"] else "no model version is active")
        embedding_set = embeddings_rebuild_start(version=version)
        self.stdout.write(f"embedding set {embedding_set.pk}: {embedding_set.users} users in {embedding_set.chunks_total} chunks")
        deadline = time.monotonic() + options["wait"]
        while time.monotonic() < deadline:
            embedding_set.refresh_from_db()
            if embedding_set.status != EmbeddingSet.Status.BUILDING:
                break
            time.sleep(1)
        embedding_set.refresh_from_db()
        if embedding_set.status == EmbeddingSet.Status.FAILED:
            raise CommandError(f"embedding set {embedding_set.pk} failed: {embedding_set.error}")
        self.stdout.write(f"embedding set {embedding_set.pk}: {embedding_set.status}")
        if options["wait"] and embedding_set.status != EmbeddingSet.Status.READY:
            raise CommandError(f"embedding set {embedding_set.pk} not ready after {options['wait']:.0f} s")
