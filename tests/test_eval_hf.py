"""The `eval_hf.py` command line, end to end on synthetic data and on a tiny LFW tree."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.layouts import lfw_name, make_lfw, write_original_pairs
from tests.models import tiny_config
from huggingface_hub import ModelCard
from PIL import Image

from dcr_hf import DCRForImageClassification, DCRImageProcessor, DCRModel
from dcr_hf.evaluation.command import display_names, parse_probe_resolution, run
from dcr_hf.reports import metric_value, to_jsonable

pytestmark = pytest.mark.slow  # end-to-end runs and subprocesses


ROOT = Path(__file__).resolve().parent.parent

SYNTHETIC = [
    "--dataset", "synthetic", "--synthetic_num_verification_identities", "20",
    "--synthetic_verification_images_per_identity", "3", "--synthetic_num_pairs", "20", "--synthetic_num_subjects", "3", "--synthetic_image_size", "48",
]


def _save(folder: Path, use_branches: bool, seed: int) -> str:
    torch.manual_seed(seed)
    model_class = DCRModel if use_branches else DCRForImageClassification
    model_class(tiny_config(use_branches=use_branches)).save_pretrained(folder)
    DCRImageProcessor(image_size=32).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("models")
    return _save(root / "dcr-trunk", False, 0), _save(root / "dcr-branch", True, 1)


def test_compare_two_models_end_to_end(models, tmp_path, capsys):
    trunk, branch = models
    output = tmp_path / "eval"
    argv = [
        "--model_name_or_path", trunk, "--compare", branch, *SYNTHETIC, "--protocol", "verification",
        "--sizes", "8", "12", "--per_device_eval_batch_size", "8", "--output_dir", str(output), "--update_card",
    ]
    results = run(argv)
    assert list(results) == ["dcr-trunk", "dcr-branch"]
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if line.startswith("model"))
    assert header.split() == ["model", "metric", "8x8", "12x12", "HR"]
    lines = table.splitlines()
    for name, result in results.items():
        index = next(i for i, line in enumerate(lines) if line.startswith(name))
        column = result["by_resolution"]["8"]
        assert lines[index].split()[:3] == [name, "accuracy", f"{100 * column['accuracy']:.2f}±{100 * column['accuracy_std']:.2f}"]
        for offset, (metric, value) in enumerate(
            [("AUC", column["auc"]), ("EER", column["eer"]), ("TAR@FAR=1e-3", metric_value(column, "tar@far=0.001"))], start=1
        ):
            assert lines[index + offset].split()[:2] == [metric, f"{100 * value:.2f}"]

    saved = json.loads((output / "results.json").read_text())
    assert set(saved["results"]) == {"dcr-trunk", "dcr-branch"}
    assert saved["metadata"]["models"] == {"dcr-trunk": trunk, "dcr-branch": branch}
    assert saved["results"]["dcr-branch"]["model_kind"] == "branch"
    assert saved["results"]["dcr-trunk"]["by_resolution"]["hr"]["accuracy"] == pytest.approx(
        results["dcr-trunk"]["by_resolution"]["hr"]["accuracy"]
    )
    assert "| dcr-branch | EER |" in (output / "results.md").read_text()
    with Image.open(output / "roc.png") as image:  # one figure with both models
        assert image.format == "PNG"

    # --update_card wrote the results into each folder's card; a second run does not duplicate them.
    run(argv)
    for folder, name in ((trunk, "dcr-trunk"), (branch, "dcr-branch")):
        card = ModelCard.load(Path(folder) / "README.md")
        accuracy = {r.metric_config: r.metric_value for r in card.data.eval_results if r.metric_type == "accuracy"}
        assert accuracy == {
            f"verification/{title}": round(100 * results[name]["by_resolution"][key]["accuracy"], 2)
            for key, title in (("8", "8x8"), ("12", "12x12"), ("hr", "HR"))
        }
        assert len(card.data.eval_results) == 9 and card.data.eval_results[0].dataset_type == "synthetic"
        assert card.data.eval_results[0].dataset_name == "dcr-hf synthetic faces"
        assert card.data.metrics == ["accuracy", "auc", "eer"]


def test_identification_with_probe_resolutions(models, capsys):
    _, branch = models
    results = run(
        ["--model", branch, *SYNTHETIC, "--protocol", "identification", "--probe_resolution", "1=8", "2=12", "3=hr"]
    )  # --model: the alias of --model_name_or_path
    result = results["dcr-branch"]
    assert result["probe_resolution"] == {"1": 8, "2": 12, "3": "hr"}
    assert result["by_distance"]["all"]["num_probes"] == 3 * 5 * 3  # subjects x cameras x distances
    out = capsys.readouterr().out
    assert "rank-1" in out and "rank-5" in out and "4.2 m / 2.6 m / 1.0 m" in " ".join(out.split())
    assert "Nothing was saved: pass --output_dir" in out


def test_a_cpu_evaluation_keeps_freed_memory(models, monkeypatch):
    """The models embed on a CPU: each batch reuses the memory the previous one freed (`host_memory`)."""
    import dcr_hf.host_memory as host_memory

    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(True) or True)
    trunk, _ = models
    assert "dcr-trunk" in run(["--model", trunk, *SYNTHETIC, "--sizes", "12"])
    assert calls == [True]


def test_an_earlier_bf16_run_in_the_process_does_not_make_the_evaluation_bf16(models):
    """accelerate keeps one state per process: after a bf16 training there (here its Accelerator), the
    evaluation still embeds in float32, with the numbers of a fresh process's evaluation."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    trunk, _ = models
    argv = ["--model", trunk, *SYNTHETIC, "--sizes", "12", "--flip_tta"]
    expected = run(argv)["dcr-trunk"]["by_resolution"]
    AcceleratorState._reset_state()
    Accelerator(mixed_precision="bf16", cpu=True)  # what a `--bf16` training leaves behind
    assert run(argv)["dcr-trunk"]["by_resolution"] == expected
    assert AcceleratorState().mixed_precision == "no"


@pytest.mark.parametrize("protocol", ["intra-verification", "retrieval", "intra-retrieval"])
def test_other_protocols(models, protocol, capsys):
    trunk, _ = models
    results = run(["--model", trunk, *SYNTHETIC, "--protocol", protocol, "--sizes", "12", "--flip_tta"])
    result = results["dcr-trunk"]
    assert result["protocol"] == protocol and result["flip_tta"] is True
    assert list(result["by_resolution"]) == ["12", "hr"]
    out = capsys.readouterr().out
    assert protocol in out
    if "retrieval" in protocol:
        assert result["retrieval_rule"] == "exclude_own" and "retrieval rule: exclude_own" in out
        assert {"nmi", "ami", "map_at_r", "r_precision"} <= set(result["by_resolution"]["12"])


@pytest.mark.parametrize("protocol", ["verification", "retrieval"])
def test_reproduce_original_equals_the_individual_options(tmp_path, capsys, protocol):
    """One flag for the original's evaluation, on a folder whose processor saved another LR operator."""
    folder = tmp_path / "old-trunk"
    torch.manual_seed(2)
    DCRForImageClassification(tiny_config()).save_pretrained(folder)
    DCRImageProcessor(image_size=32, downsample_interpolation="bicubic").save_pretrained(folder)
    common = ["--model", str(folder), *SYNTHETIC, "--protocol", protocol, "--sizes", "8", "12"]

    reproduced = run([*common, "--reproduce_original", "--output_dir", str(tmp_path / "original")])
    out = " ".join(capsys.readouterr().out.split())  # the report wraps its notes
    assert "protocol: the original's (--reproduce_original)" in out
    assert "LR operator bicubic/bilinear (saved with the model) replaced by lanczos/bilinear" in out
    markdown = (tmp_path / "original" / "results.md").read_text()
    assert "--reproduce_original" in markdown and "replaced by lanczos/bilinear" in markdown
    individual = run([
        *common, "--threshold_grid", "original", "--retrieval_rule", "original", "--retrieval_metric", "l2",
        "--downsample_interpolation", "lanczos", "--upsample_interpolation", "bilinear",
    ])
    assert to_jsonable(individual) == to_jsonable(reproduced)
    assert to_jsonable(run(common)) != to_jsonable(reproduced)  # the defaults differ
    if protocol == "retrieval":
        assert reproduced["old-trunk"]["retrieval_rule"] == "original" and reproduced["old-trunk"]["metric"] == "l2"
        assert "retrieval rule: original" in markdown
    else:
        assert reproduced["old-trunk"]["threshold_grid"] == "original"
    with pytest.raises(ValueError, match="--downsample_interpolation bicubic contradicts it"):
        run([*common, "--reproduce_original", "--downsample_interpolation", "bicubic"])


def test_lfw_layout(models, tmp_path):
    """The original LFW layout (folder tree + lfw_test_pair.txt), with the original threshold grid."""
    trunk, _ = models
    make_lfw(tmp_path, {f"Person_{i}": 2 for i in range(6)})
    pairs = []
    for i in range(10):
        pairs.append((lfw_name(f"Person_{i % 6}", 1), lfw_name(f"Person_{i % 6}", 2), 1))
        pairs.append((lfw_name(f"Person_{i % 6}", 1), lfw_name(f"Person_{(i + 1) % 6}", 2), 0))
    write_original_pairs(tmp_path, pairs)
    results = run(
        ["--model", trunk, "--dataset", "lfw", "--data_root", str(tmp_path), "--sizes", "8", "--threshold_grid", "original"]
    )
    result = results["dcr-trunk"]
    assert result["num_pairs"] == 20 and result["threshold_grid"] == "original"
    assert set(result["by_resolution"]) == {"8", "hr"}


def test_bad_command_lines(models, tmp_path):
    trunk, branch = models
    with pytest.raises(ValueError, match="does not apply to dataset .scface."):
        run(["--model", trunk, "--dataset", "scface", "--data_root", str(tmp_path), "--protocol", "verification"])
    with pytest.raises(ValueError, match="needs --data_root"):
        run(["--model", trunk, "--dataset", "lfw"])
    with pytest.raises(ValueError, match="no branch for 16x16"):
        run(["--model", branch, *SYNTHETIC, "--sizes", "8", "16"])
    with pytest.raises(ValueError, match="listed twice"):
        run(["--model", trunk, "--compare", trunk, *SYNTHETIC])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "resnet"}))
    with pytest.raises(ValueError, match="DCR models only"):
        run(["--model", str(tmp_path / "other"), *SYNTHETIC])


def test_usage_errors_are_one_line_argparse_errors(models, tmp_path, capsys):
    """The console command: usage and error lines, exit status 2, no traceback."""
    trunk, _ = models
    for argv, message in (
        ([], "the following arguments are required: --model_name_or_path"),
        (["--model_name_or_path", trunk], "--dataset lfw needs --data_root"),
        (["--model_name_or_path", trunk, "--batch_size", "8"], "unrecognized arguments: --batch_size 8"),
    ):
        completed = subprocess.run(
            [sys.executable, str(ROOT / "eval_hf.py"), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
        )
        assert completed.returncode == 2, completed.stderr
        assert completed.stderr.startswith("usage: eval_hf.py --model_name_or_path MODEL")
        last = completed.stderr.splitlines()[-1]
        assert last.startswith("eval_hf.py: error: ") and message in last, last
        assert "Traceback" not in completed.stderr


def test_parse_probe_resolution():
    assert parse_probe_resolution([]) is None
    assert parse_probe_resolution(["hr"]) == "hr"
    assert parse_probe_resolution(["8"]) == 8
    assert parse_probe_resolution(["1=8", "3=HR"]) == {1: 8, 3: "hr"}
    with pytest.raises(ValueError, match="DISTANCE=SIZE"):
        parse_probe_resolution(["a=8", "2=12"])


def test_display_names():
    assert display_names(["/x/a", "org/b"]) == ["a", "b"]
    assert display_names(["/x/a", "/y/a"]) == ["/x/a", "/y/a"]


def test_too_few_pairs_per_fold_are_warned_about(models, tmp_path, caplog):
    """A 5-pair file used to report 0.00±0.00 as if it were a result."""
    trunk, _ = models
    make_lfw(tmp_path, {f"Person_{i}": 2 for i in range(3)})
    write_original_pairs(tmp_path, [(lfw_name(f"Person_{i % 3}", 1), lfw_name(f"Person_{(i + i % 2) % 3}", 2), 1 - i % 2)
                                    for i in range(5)])
    with caplog.at_level(logging.WARNING, logger="dcr_hf"):
        result = run(["--model", trunk, "--dataset", "lfw", "--data_root", str(tmp_path), "--sizes", "8"])["dcr-trunk"]
    assert result["num_pairs"] == 5
    assert ("verification: 5 pairs in 5 folds (1 to 1 per fold): with fewer than 10 pairs in a fold, its accuracy and "
            "the std over folds mean little (LFW's protocol has 10 folds of 600 pairs).") in caplog.text


def test_an_output_dir_that_is_a_file_is_refused_before_any_work(models, tmp_path, monkeypatch):
    trunk, _ = models
    target = tmp_path / "results.txt"
    target.write_text("earlier results")

    def must_not_run(*args, **kwargs):
        raise AssertionError("reached before --output_dir was checked")

    monkeypatch.setattr("dcr_hf.hub.load_model_and_processor", must_not_run)  # imported by run() when it loads
    with pytest.raises(FileExistsError, match="--output_dir .*results.txt is a file; expected a folder for results.json"):
        run(["--model", trunk, *SYNTHETIC, "--output_dir", str(target)])
    assert target.read_text() == "earlier results"
