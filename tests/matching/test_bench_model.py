"""``bench_model`` runs end to end on a small synthetic city and reports every figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from matching.ml import gemm


def test_bench_model_reports_rates_and_ratios(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    call_command("bench_model", users=400, repeat=1, steps=2, batch=256, json=out, verbosity=0)
    figures = json.loads(out.read_text())
    for name in ("train_pairs_per_second", "inference_users_per_second", "inference_pytorch_users_per_second",
                 "inference_with_inputs_users_per_second", "dense_only_users_per_second"):
        assert figures[name] > 0, name
    assert figures["train_to_dense_ratio"] == pytest.approx(
        figures["train_pairs_per_second"] / figures["dense_only_users_per_second"])
    assert figures["inference_to_dense_ratio"] == pytest.approx(
        figures["inference_users_per_second"] / figures["dense_only_users_per_second"])
    assert figures["data"]["users"] == 400
    assert figures["machine"]["onednn_products"] is gemm.enabled()
    assert isinstance(figures["machine"]["batch_malloc_thresholds"], bool)
    if gemm.enabled():  # the stricter reference where the products run in oneDNN
        assert figures["train_to_dense_onednn_ratio"] == pytest.approx(
            figures["train_pairs_per_second"] / figures["dense_onednn_users_per_second"])
    else:
        assert "dense_onednn_users_per_second" not in figures


def test_bench_model_refuses_nothing_to_time() -> None:
    with pytest.raises(CommandError, match="nothing to time"):
        call_command("bench_model", skip_train=True, skip_inference=True)
