"""Search hyper-parameters of the towers on an LBSN dataset, without touching held-out pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Random search over a grid of tower hyper-parameters on the evaluation split (held-out pairs untouched)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path, help="LBSN dataset directory")
        parser.add_argument("--trials", type=int, default=8)
        parser.add_argument("--holdout", type=float, default=0.2, help="held-out share, as evaluate_matching uses it")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--epochs", type=int, default=10, help="tower epochs per trial")
        parser.add_argument("--k", type=int, default=20)
        parser.add_argument("--json", type=Path, help="also write every trial and the best one as JSON here")

    def handle(self, *args: Any, **options: Any) -> None:
        from matching.lbsn import LbsnFormatError, read_lbsn, unique_friend_pairs
        from matching.ml.evaluate import split_edges
        from matching.ml.features import user_features
        from matching.ml.inputs import UserInputs
        from matching.ml.lbsn_data import city_from_lbsn, dataset_now
        from matching.ml.model import default_model_config
        from matching.ml.pairs import PairFeaturizer
        from matching.ml.train import TrainConfig
        from matching.ml.tuning import tune

        if options["trials"] < 1:
            raise CommandError("--trials must be at least 1")
        if not 0 < options["holdout"] < 1:
            raise CommandError("--holdout must be between 0 and 1")
        try:
            dataset = read_lbsn(options["directory"])
        except (LbsnFormatError, OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        # The same split as evaluate_matching with this seed: the held-out pairs are set aside here
        # and never used below.
        known, held_out = split_edges(unique_friend_pairs(dataset), options["holdout"], options["seed"], None)
        city = city_from_lbsn(dataset, friend_pairs=known, splits=("train", "tune"))
        features = user_features(city, dataset_now(dataset))
        config = default_model_config(city.n_users, city.n_venues)
        inputs = UserInputs.build(city, features, config)
        self.stdout.write(f"{city.n_users} users; tuning on {len(known)} known friendships "
                          f"({len(held_out)} held out, untouched)")
        trials = tune(config, TrainConfig(seed=options["seed"], epochs=options["epochs"]), inputs, known,
                      PairFeaturizer(city, features), city.lon, city.lat, trials=options["trials"], seed=options["seed"],
                      k=options["k"], log=self.stdout.write)
        best = trials[0]
        self.stdout.write(f"best: recall@{options['k']} {best.recall:.4f} with {best.params}")
        if options["json"]:
            options["json"].write_text(json.dumps({
                "best": {"params": best.params, f"recall@{options['k']}": best.recall},
                "trials": [{"params": t.params, f"recall@{options['k']}": t.recall, "seconds": t.seconds} for t in trials],
            }, indent=2) + "\n")
