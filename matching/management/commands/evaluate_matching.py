"""Evaluate the matcher against simple baselines on a real LBSN dataset, in memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from matching.lbsn import LbsnFormatError
from matching.ml.evaluate import evaluate
from matching.ml.train import MODES, TrainConfig


class Command(BaseCommand):
    help = (
        "Hold out friendships of an LBSN dataset, train on the rest, and report Recall@K, NDCG@K "
        "and AUC of the pipeline, the two towers, look-alike scoring and six baselines."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path, help="dataset directory (LBSNDatasets layout)")
        parser.add_argument("--holdout", type=float, default=0.2, help="share of friendships held out")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--k", type=int, default=20)
        parser.add_argument("--test-edges", type=Path, help='held-out pairs, one "u v" per line')
        parser.add_argument("--mode", choices=MODES, default="listwise", help="tower training mode")
        parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
        parser.add_argument("--sparse-rows", type=int, default=TrainConfig.sparse_rows,
                            help="id tables of at least this many rows train with sparse gradients and lazy Adam "
                                 "(1: all of them)")
        parser.add_argument("--json", type=Path, help="also write the results as JSON here")
        parser.add_argument("--cohort-max-friends", type=int, default=3,
                            help="people with at most this many known friends form the low-activity cohort")

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 < options["holdout"] < 1:
            raise CommandError("--holdout must be between 0 and 1")
        if options["k"] < 1:
            raise CommandError("--k must be at least 1")
        if options["sparse_rows"] < 1:
            raise CommandError("--sparse-rows must be at least 1")
        config = TrainConfig(seed=options["seed"], mode=options["mode"], epochs=options["epochs"],
                             sparse_rows=options["sparse_rows"])
        try:
            result = evaluate(
                options["directory"], holdout=options["holdout"], seed=options["seed"], k=options["k"],
                test_edges_file=options["test_edges"], train_config=config,
                cohort_max_friends=options["cohort_max_friends"],
                log=lambda message: self.stderr.write(message),
            )
        except (LbsnFormatError, ValueError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(result.table())
        if options["json"]:
            options["json"].write_text(json.dumps(result.to_json(), indent=2) + "\n")
