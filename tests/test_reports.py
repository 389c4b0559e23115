"""Reports: tables, results.json and the ROC plot, from hand-made result dicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dcr_hf.reports import (
    RETRIEVAL_RULE_NOTES,
    column_title,
    format_results_report,
    format_results_table,
    one_line_summary,
    plot_roc_curves,
    to_jsonable,
    write_reports,
    write_results_json,
)


def _verification(accuracies: dict[str, tuple[float, float]], seed: int = 0) -> dict:
    """A verification result shaped like `evaluate_verification`'s, with ROC curves of random scores."""
    rng = np.random.default_rng(seed)
    by_resolution, curves = {}, {}
    for key, (accuracy, std) in accuracies.items():
        fpr = np.concatenate([[0.0], np.sort(rng.uniform(0, 1, 30)), [1.0]])
        tpr = np.maximum.accumulate(np.clip(fpr + rng.uniform(0, 0.4, fpr.size), 0, 1))
        tpr[0], tpr[-1] = 0.0, 1.0
        by_resolution[key] = {
            "accuracy": accuracy,
            "accuracy_std": std,
            "threshold": np.float64(0.31),
            "fold_accuracies": np.full(10, accuracy),
            "auc": float(np.trapezoid(tpr, fpr)),
            "eer": 0.2,
            "tar_at_far": {"0.001": 0.1, "0.01": 0.3, "0.1": 0.6},
        }
        curves[key] = {"fpr": fpr, "tpr": tpr}
    low = [v[0] for k, v in accuracies.items() if k != "hr"]
    return {
        "protocol": "verification",
        "num_pairs": 600,
        "sizes": [int(k) for k in accuracies if k != "hr"],
        "by_resolution": by_resolution,
        "mean_lr_accuracy": float(np.mean(low)),
        "curves": curves,
    }


TRUNK = {"8": (0.869, 0.0121), "12": (0.91, 0.01), "16": (0.93, 0.009), "20": (0.93, 0.008), "hr": (0.935, 0.007)}
BRANCH = {"8": (0.777, 0.02), "12": (0.908, 0.01), "16": (0.903, 0.01), "20": (0.922, 0.01), "hr": (0.915, 0.01)}


def test_column_titles():
    assert [column_title(k) for k in ("8", "20", "hr", "d1", "all")] == ["8x8", "20x20", "HR", "d1", "all"]


def test_console_table_has_one_row_per_model_and_the_original_columns():
    table = format_results_table({"dcr-trunk": _verification(TRUNK), "dcr-branch": _verification(BRANCH)})
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("model"))
    assert header.split() == ["model", "8x8", "12x12", "16x16", "20x20", "HR"]
    trunk_row = next(line for line in lines if line.startswith("dcr-trunk"))
    assert trunk_row.split() == ["dcr-trunk", "86.90±1.21", "91.00±1.00", "93.00±0.90", "93.00±0.80", "93.50±0.70"]
    assert any(line.startswith("dcr-branch") and "77.70±2.00" in line for line in lines)
    # Aligned: every row of the table body has the header's width.
    body = [line for line in lines if line.startswith(("model", "dcr-"))]
    assert len({len(line) for line in body}) == 1


def test_markdown_table():
    table = format_results_table({"a": _verification(TRUNK)}, markdown=True)
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert rows[0] == "| model | 8x8 | 12x12 | 16x16 | 20x20 | HR |"
    assert rows[1] == "|---|---|---|---|---|---|"
    assert rows[2] == "| a | 86.90 ± 1.21 | 91.00 ± 1.00 | 93.00 ± 0.90 | 93.00 ± 0.80 | 93.50 ± 0.70 |"


def test_table_of_models_with_different_columns_and_other_metrics():
    partial = _verification({"8": (0.5, 0.1), "hr": (0.6, 0.1)})
    table = format_results_table({"full": _verification(TRUNK), "partial": partial}, metric="auc")
    partial_row = next(line for line in table.splitlines() if line.startswith("partial"))
    assert partial_row.split()[2:5] == ["-", "-", "-"]  # no 12/16/20 columns
    assert "ROC AUC" in table


def test_identification_table():
    result = {
        "protocol": "identification",
        "by_distance": {
            "d1": {"rank_1": 0.733, "rank_5": 0.9},
            "d2": {"rank_1": 0.935, "rank_5": 1.0},
            "all": {"rank_1": 0.8, "rank_5": 0.95},
        },
    }
    table = format_results_table({"m": result})
    assert "rank-1" in table
    assert next(line for line in table.splitlines() if line.startswith("m ")).split() == ["m", "73.30", "93.50", "80.00"]


def test_mixed_protocols_are_rejected():
    with pytest.raises(ValueError, match="different protocols"):
        format_results_table({"a": _verification(TRUNK), "b": {"protocol": "retrieval", "by_resolution": {}}})


def test_results_json_is_plain_json_without_curves(tmp_path):
    result = _verification(TRUNK)
    result["by_resolution"]["8"]["eer"] = float("nan")
    path = write_results_json({"trunk": result}, tmp_path / "out" / "results.json", {"dataset": "lfw"})
    loaded = json.loads(path.read_text())
    assert loaded["metadata"] == {"dataset": "lfw"}
    saved = loaded["results"]["trunk"]
    assert "curves" not in saved
    assert saved["by_resolution"]["8"]["eer"] is None
    assert saved["by_resolution"]["8"]["fold_accuracies"] == [0.869] * 10
    assert saved["by_resolution"]["hr"]["accuracy"] == 0.935
    assert to_jsonable(np.float32(0.5)) == 0.5


def test_one_line_summary():
    line = one_line_summary(_verification(TRUNK))
    mean = 100 * np.mean([0.869, 0.91, 0.93, 0.93])
    assert line == (f"verification: mean LR accuracy {mean:.2f}% (verification accuracy: 8x8 86.90%, 12x12 91.00%, "
                    "16x16 93.00%, 20x20 93.00%, HR 93.50%)")


def _identification_result() -> dict:
    columns = {f"d{d}": {"rank_1": 0.1 * d, "rank_5": 0.2 * d, "num_probes": 15} for d in (1, 2, 3)}
    columns["all"] = {"rank_1": 0.2, "rank_5": 0.4, "num_probes": 45}
    return {"protocol": "identification", "model_kind": "branch", "num_gallery": 3, "by_distance": columns,
            "probe_resolution": {"1": 8, "2": 12, "3": "hr"}, "mean_rank1": 0.2}


def test_full_report_shows_every_metric_of_the_protocol():
    report = format_results_report({"dcr-trunk": _verification(TRUNK), "dcr-branch": _verification(BRANCH)},
                                   dataset_name="LFW")
    lines = report.splitlines()
    assert lines[0] == "verification on LFW (pairs, first image at HR, second at each probe size), %"
    assert lines[2].split() == ["model", "metric", "8x8", "12x12", "16x16", "20x20", "HR"]
    assert lines[4].split()[:3] == ["dcr-trunk", "accuracy", "86.90±1.21"]
    assert lines[5].split()[0] == "AUC" and lines[6].split()[0] == "EER"
    assert lines[7].split()[:2] == ["TAR@FAR=1e-3", "10.00"]  # tar_at_far["0.001"]
    assert lines[8].split()[:3] == ["dcr-branch", "accuracy", "77.70±2.00"]
    assert "EER: equal error rate" in report and "dcr-trunk: 600 pairs." in report

    identification = format_results_report({"m": _identification_result()})
    assert "d1/d2/d3: SCface camera distances 4.2 m / 2.6 m / 1.0 m" in " ".join(identification.split())
    assert "probes of d1 -> 8x8, d2 -> 12x12, d3 -> HR" in identification
    rank_rows = [line.split() for line in identification.splitlines() if "rank-" in line and "%" not in line][:2]
    assert rank_rows == [["m", "rank-1", "10.00", "20.00", "30.00", "20.00"], ["rank-5", "20.00", "40.00", "60.00", "40.00"]]

    retrieval = {"protocol": "retrieval", "by_resolution": {"8": {"precision_at_1": 0.5, "r_precision": 0.25,
                                                                  "map_at_r": 0.125}},
                 "retrieval_rule": "the query's own HR image is among its references"}
    text = format_results_report({"m": retrieval}, markdown=True)
    assert "| m | P@1 | 50.00 |" in text and "| m | R-precision | 25.00 |" in text and "| m | MAP@R | 12.50 |" in text
    assert "retrieval rule: the query's own HR image is among its references" in text


def test_roc_plot_draws_every_model_in_one_figure(tmp_path):
    path = plot_roc_curves({"trunk": _verification(TRUNK), "branch": _verification(BRANCH, seed=1)}, tmp_path / "roc.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (720, 540)
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # matplotlib's first five default colours are all drawn (one colour per resolution).
    for colour in ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"):
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).sum(-1) < 30).sum() > 100, colour


def test_roc_plot_needs_curves(tmp_path):
    result = _verification(TRUNK)
    del result["curves"]
    with pytest.raises(ValueError, match="no ROC curves"):
        plot_roc_curves({"trunk": result}, tmp_path / "roc.png")


def test_write_reports(tmp_path):
    written = write_reports({"a/b": _verification(TRUNK), "c": _verification(BRANCH, seed=1)}, tmp_path,
                            dataset_name="LFW")
    assert written["json"] == tmp_path / "results.json"
    markdown = (tmp_path / "results.md").read_text()
    assert markdown.count("\n| ") == 1 + 2 * 4  # header + 4 metrics per model
    assert "**verification on LFW (" in markdown
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["roc.png"] and written["roc"] == tmp_path / "roc.png"


def test_retrieval_reports_name_the_rule_and_show_every_metric(tmp_path):
    column = {"precision_at_1": 0.5, "map_at_r": 0.25, "r_precision": 0.375, "nmi": 0.8, "ami": 0.1}
    results = {
        "m": {"protocol": "retrieval", "retrieval_rule": "original", "by_resolution": {"8": column, "hr": column}}
    }
    report = format_results_report(results, notes=["protocol: the original's"])
    lines = report.splitlines()
    assert lines.index("protocol: the original's") > lines.index(next(l for l in lines if l.startswith("-")))
    assert "retrieval rule: original (one neighbour more is searched" in report.replace("\n  ", " ")
    for metric, value in (("P@1", "50.00"), ("R-precision", "37.50"), ("MAP@R", "25.00"), ("NMI", "80.00"), ("AMI", "10.00")):
        row = next(line for line in lines if f" {metric} " in f" {line} ")
        assert row.split()[-2:] == [value, value], row
    markdown = write_reports(results, tmp_path, notes=["protocol: the original's"])["markdown"].read_text()
    assert "- protocol: the original's" in markdown and RETRIEVAL_RULE_NOTES["original"] in markdown
    assert "| m | NMI | 80.00 | 80.00 |" in markdown and "| m | AMI | 10.00 | 10.00 |" in markdown
