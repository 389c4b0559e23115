"""The `evaluate` verification-accuracy module loads offline from its folder and matches dcr_hf.metrics."""

import json
import os
import subprocess
import sys
from pathlib import Path

import evaluate
import numpy as np
import pytest

from dcr_hf.evaluate_metrics import VERIFICATION_ACCURACY_PATH
from dcr_hf.metrics import verification_accuracy


def _pairs(seed: int = 0, num_pairs: int = 600):
    rng = np.random.default_rng(seed)
    is_same = rng.random(num_pairs) < 0.5
    scores = np.round(np.clip(rng.normal(np.where(is_same, 0.3, -0.1), 0.35), -1, 1), 2)
    return scores, is_same.astype(int)


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(VERIFICATION_ACCURACY_PATH)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"threshold_grid": "original"}, {"num_folds": 4}, {"folds": np.arange(600) % 10}],
)
def test_module_matches_function(metric, kwargs):
    scores, is_same = _pairs()
    output = metric.compute(predictions=scores.tolist(), references=is_same.tolist(), **kwargs)
    options = {name: value for name, value in kwargs.items() if name != "folds"}
    expected = verification_accuracy(scores, is_same, kwargs.get("folds"), **options)
    assert output["accuracy"] == expected.accuracy
    assert output["accuracy_std"] == expected.accuracy_std
    assert output["threshold"] == expected.threshold
    assert output["fold_accuracies"] == expected.fold_accuracies.tolist()
    assert output["fold_thresholds"] == expected.fold_thresholds.tolist()


def test_module_accumulates_batches(metric):
    scores, is_same = _pairs(1)
    for start in range(0, 600, 128):
        metric.add_batch(predictions=scores[start : start + 128], references=is_same[start : start + 128])
    assert metric.compute()["accuracy"] == verification_accuracy(scores, is_same).accuracy


@pytest.mark.slow
def test_module_loads_offline_in_a_fresh_process(tmp_path):
    # A fresh module cache and no network: evaluate must load the local folder, not the Hub.
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    code = (
        "import json, evaluate; from dcr_hf.evaluate_metrics import VERIFICATION_ACCURACY_PATH as p; "
        "m = evaluate.load(p); "
        "print(json.dumps(m.compute(predictions=[0.9, 0.1, 0.8, 0.2, 0.7, 0.3], "
        "references=[1, 0, 1, 0, 0, 1], num_folds=3)))"
    )
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    output = json.loads(completed.stdout.strip().splitlines()[-1])
    expected = verification_accuracy([0.9, 0.1, 0.8, 0.2, 0.7, 0.3], [1, 0, 1, 0, 0, 1], num_folds=3)
    assert output["fold_accuracies"] == expected.fold_accuracies.tolist()
    assert any((tmp_path / "modules").rglob("verification_accuracy.py"))


def test_module_reports_bad_inputs(metric):
    with pytest.raises(ValueError, match="both classes"):
        metric.compute(predictions=[0.1, 0.2, 0.3], references=[1, 1, 1])
