"""The evaluation command, end to end on a small city written in the LBSN layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from matching.ml.evaluate import METHODS

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture
def small_lbsn(tmp_path: Path) -> Path:
    call_command("generate_city", "--users", "300", "--seed", "3", "--prefix", "ev")
    directory = tmp_path / "city"
    call_command("export_lbsn", str(directory), "--prefix", "ev")
    return directory


def test_evaluate_matching_writes_every_method_and_the_low_activity_cohort(small_lbsn: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "result.json"
    call_command("evaluate_matching", str(small_lbsn), "--epochs", "1", "--k", "10", "--json", str(out))
    result = json.loads(out.read_text())
    assert set(result["methods"]) == set(METHODS)
    for scores in result["methods"].values():
        assert set(scores) == {"recall@10", "ndcg@10", "auc"}
        assert 0.0 <= scores["recall@10"] <= 1.0
    assert result["queries"] > 20 and result["seconds"] > 0
    cohort = result["low_activity"]
    assert cohort["max_friends"] == 3 and cohort["queries"] > 0
    assert 0.0 <= cohort["pipeline"] <= 1.0 and 0.0 <= cohort["calibrated"] <= 1.0
    table = capsys.readouterr().out
    assert "pipeline / best baseline" in table and "with cohort calibration" in table


def test_evaluate_matching_names_a_bad_test_edges_line(small_lbsn: Path, tmp_path: Path) -> None:
    edges = tmp_path / "edges.txt"
    edges.write_text("1 2\n3 x\n")
    with pytest.raises(CommandError, match="edges.txt, line 2"):
        call_command("evaluate_matching", str(small_lbsn), "--test-edges", str(edges), "--epochs", "1")


def test_tune_model_reports_trials_best_first(small_lbsn: Path, tmp_path: Path) -> None:
    out = tmp_path / "tune.json"
    call_command("tune_model", str(small_lbsn), "--trials", "2", "--epochs", "1", "--k", "10", "--json", str(out))
    result = json.loads(out.read_text())
    recalls = [t["recall@10"] for t in result["trials"]]
    assert len(recalls) == 2 and recalls == sorted(recalls, reverse=True)
    assert result["best"]["recall@10"] == recalls[0]
    assert set(result["best"]["params"]) == {"lr", "temperature", "batch_size", "weight_decay", "dnn_hidden"}


def test_tuning_never_reads_the_held_out_pairs(monkeypatch: pytest.MonkeyPatch, small_lbsn: Path) -> None:
    """Every pair a trial trains or validates on comes from the known split of evaluate_matching."""
    import numpy as np

    from matching import ml
    from matching.lbsn import read_lbsn, unique_friend_pairs
    from matching.ml.evaluate import split_edges

    known, held_out = split_edges(unique_friend_pairs(read_lbsn(small_lbsn)), 0.2, 0, None)
    seen: list[np.ndarray] = []
    real_train = ml.tuning.train

    def spy(model_config, train_config, data, build_featurizer):  # type: ignore[no-untyped-def]
        seen.append(data.positives)
        return real_train(model_config, train_config, data, build_featurizer)

    monkeypatch.setattr(ml.tuning, "train", spy)
    call_command("tune_model", str(small_lbsn), "--trials", "1", "--epochs", "1")
    key = lambda a: set(map(tuple, np.sort(a, axis=1).tolist()))  # noqa: E731
    assert seen and key(seen[0]) <= key(known) and not key(seen[0]) & key(held_out)
