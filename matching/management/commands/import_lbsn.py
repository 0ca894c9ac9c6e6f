"""``manage.py import_lbsn DIR [--source NAME]``: import an LBSN dataset directory (idempotent)."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from matching.lbsn import LbsnFormatError
from matching.lbsn_import import LbsnImportError, lbsn_import


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

    def handle(self, *args: Any, directory: Path, source: str | None, **options: Any) -> None:
        source = source or directory.resolve().name
        try:
            report = lbsn_import(directory=directory, source=source)
        except (LbsnFormatError, LbsnImportError) as error:
            raise CommandError(str(error)) from error
        for line in report.lines():
            self.stdout.write(line)
