"""Reports of evaluation results: console and Markdown tables, `results.json`, ROC curve plots.

Input is the result dict of a runner of `dcr_hf.evaluation` (or `{model name: result}` to compare
several models). Tables follow the original README: one row per model, one column per probe
resolution (`8x8` ... `HR`) or SCface distance (`d1` ... `all`), accuracies in percent.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers.utils import logging

from .errors_dcr import DCRInputError
from .saving import atomic_path, write_text_atomic


logger = logging.get_logger(__name__)

#: The metric each protocol's tables show (its `<metric>_std`, when present, follows after "±").
PRIMARY_METRICS = {
    "verification": "accuracy",
    "intra-verification": "accuracy",
    "identification": "rank_1",
    "retrieval": "precision_at_1",
    "intra-retrieval": "precision_at_1",
    "closed-set-identification": "rank_1",
    "native-verification": "accuracy",
    "open-set-identification": "tpir@fpir=0.1",
}
METRIC_TITLES = {
    "accuracy": "verification accuracy (%)",
    "auc": "ROC AUC (%)",
    "eer": "equal error rate (%)",
    "tar@far=0.001": "TAR at FAR = 1e-3 (%)",
    "rank_1": "rank-1 identification accuracy (%)",
    "rank_5": "rank-5 identification accuracy (%)",
    "rank_20": "rank-20 identification accuracy (%)",
    "map": "mean average precision (%)",
    "tar@far=0.3": "TAR at FAR = 0.3 (%)",
    "tar@far=0.1": "TAR at FAR = 0.1 (%)",
    "tar@far=0.01": "TAR at FAR = 0.01 (%)",
    "tpir@fpir=0.3": "TPIR at FPIR = 0.3 (%)",
    "tpir@fpir=0.2": "TPIR at FPIR = 0.2 (%)",
    "tpir@fpir=0.1": "TPIR at FPIR = 0.1 (%)",
    "precision_at_1": "precision@1 (%)",
    "map_at_r": "MAP@R (%)",
    "r_precision": "R-precision (%)",
    "nmi": "NMI of k-means clusters (%)",
    "ami": "AMI of k-means clusters (%)",
}
#: The metrics a full report shows per protocol, in this order, under these short names.
REPORT_METRICS = {
    "verification": ("accuracy", "auc", "eer", "tar@far=0.001"),
    "intra-verification": ("accuracy", "auc", "eer", "tar@far=0.001"),
    "identification": ("rank_1", "rank_5"),
    "retrieval": ("precision_at_1", "r_precision", "map_at_r", "nmi", "ami"),
    "intra-retrieval": ("precision_at_1", "r_precision", "map_at_r", "nmi", "ami"),
    "closed-set-identification": ("rank_1", "rank_5", "rank_20", "map"),
    "native-verification": ("accuracy", "auc", "eer", "tar@far=0.3", "tar@far=0.1", "tar@far=0.01", "tar@far=0.001"),
    "open-set-identification": ("tpir@fpir=0.3", "tpir@fpir=0.2", "tpir@fpir=0.1"),
}
SHORT_TITLES = {
    "accuracy": "accuracy", "auc": "AUC", "eer": "EER", "tar@far=0.001": "TAR@FAR=1e-3", "rank_1": "rank-1",
    "rank_5": "rank-5", "precision_at_1": "P@1", "r_precision": "R-precision", "map_at_r": "MAP@R", "nmi": "NMI",
    "ami": "AMI", "rank_20": "rank-20", "map": "mAP", "tar@far=0.3": "TAR@FAR=0.3", "tar@far=0.1": "TAR@FAR=0.1",
    "tar@far=0.01": "TAR@FAR=0.01", "tpir@fpir=0.3": "TPIR@FPIR=0.3", "tpir@fpir=0.2": "TPIR@FPIR=0.2",
    "tpir@fpir=0.1": "TPIR@FPIR=0.1",
}
PROTOCOL_DESCRIPTIONS = {
    "verification": "pairs, first image at HR, second at each probe size",
    "intra-verification": "pairs, both images at the same size",
    "identification": "HR gallery vs LR probes",
    "retrieval": "LR queries vs HR references",
    "intra-retrieval": "queries and references at the same probe size",
    "closed-set-identification": "native LR probes vs match + distractor gallery",
    "native-verification": "pairs of native LR images",
    "open-set-identification": "native LR mated and unmated probes vs identity templates",
}
#: What a report's legend says about each protocol's metrics and columns.
_LEGENDS = {
    "verification": "accuracy: 10-fold, threshold from the other 9 folds, ± std over the folds; AUC: area under "
    "the ROC curve; EER: equal error rate; TAR@FAR=1e-3: true accept rate at a false accept rate of 0.1%.",
    "identification": "rank-k: share of probes whose subject is among the k most similar gallery faces; "
    "d1/d2/d3: SCface camera distances 4.2 m / 2.6 m / 1.0 m (d1 farthest, smallest faces; synthetic probes "
    "imitate them); all: every probe.",
    "retrieval": "P@1: precision at 1; R-precision: precision among the R nearest references (R = the query's "
    "relevant references); MAP@R: mean average precision at R; NMI/AMI: normalized / adjusted mutual "
    "information of k-means clusters (one cluster per identity) with the identities.",
}
_LEGENDS["closed-set-identification"] = (
    "rank-k: share of probes with an image of their identity among the k most similar gallery images (matches and "
    "distractors, cosine similarity); mAP: mean average precision over the whole ranked gallery; columns: all probes, "
    "then the probes by native size (shorter side in pixels)."
)
_LEGENDS["native-verification"] = (
    "accuracy: 10-fold, threshold from the other 9 folds, ± std over the folds; AUC: area under the ROC curve; EER: "
    "equal error rate; TAR@FAR=f: true accept rate at a false accept rate f; native: both images as they are."
)
_LEGENDS["open-set-identification"] = (
    "TPIR@FPIR=f: share of mated probes whose identity is within rank r and scores above the threshold at which a "
    "share f of unmated probes is falsely matched (one template per gallery identity: mean of its normalized "
    "embeddings); columns: rank r."
)
_LEGENDS["intra-verification"] = _LEGENDS["verification"]
_LEGENDS["intra-retrieval"] = _LEGENDS["retrieval"]
#: What each retrieval rule means, for the legend of a retrieval report.
RETRIEVAL_RULE_NOTES = {
    "exclude_own": "exclude_own (each query's own image is left out of its references; R counts the other "
    "images of its identity)",
    "original": "original (one neighbour more is searched and each query's first neighbour dropped, whoever "
    "it is, as the original did; R counts the other images of its identity)",
}
#: The one-number criterion of each protocol and its name (as `dcr_hf.evaluation.summary.CRITERIA`).
_CRITERIA = {
    "verification": ("mean_lr_accuracy", "mean LR accuracy"),
    "intra-verification": ("mean_lr_accuracy", "mean LR accuracy"),
    "identification": ("mean_rank1", "mean rank-1"),
    "retrieval": ("mean_lr_precision_at_1", "mean LR precision@1"),
    "intra-retrieval": ("mean_lr_precision_at_1", "mean LR precision@1"),
    "closed-set-identification": ("mean_rank1", "rank-1"),
    "native-verification": ("mean_accuracy", "accuracy"),
    "open-set-identification": ("mean_tpir", "mean TPIR at the highest rank"),
}
#: The keys of a result that hold its columns, by protocol kind.
COLUMN_KEYS = ("by_resolution", "by_distance", "by_probe_size", "by_rank")


def result_columns(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-column metrics of a result: `by_resolution` (verification, retrieval), `by_distance`
    (SCface identification), `by_probe_size` (TinyFace) or `by_rank` (open-set identification)."""
    for key in COLUMN_KEYS:
        if key in results:
            return results[key]
    raise KeyError(f"A result needs one of {COLUMN_KEYS}; got the keys {sorted(results)}.")


def column_title(key: str) -> str:
    """`"8"` -> `"8x8"`, `"hr"` -> `"HR"`; other keys (`"d1"`, `"all"`) unchanged."""
    if key.isdigit():
        return f"{key}x{key}"
    return "HR" if key == "hr" else key


def _check_comparable(results_by_model: Mapping[str, Mapping[str, Any]]) -> list[str]:
    if not results_by_model:
        raise DCRInputError("No results to report.")
    protocols = {name: result.get("protocol") for name, result in results_by_model.items()}
    if len(set(protocols.values())) != 1:
        raise DCRInputError(f"Cannot put different protocols in one table: {protocols}.")
    columns: list[str] = []
    for result in results_by_model.values():
        columns += [key for key in result_columns(result) if key not in columns]
    return columns


def metric_value(column: Mapping[str, Any], metric: str) -> float | None:
    """A column's value of `metric`; `tar@far=F` reads `tar_at_far[F]` (keys as floats or strings)."""
    if metric.startswith("tar@far="):
        far = float(metric.split("=", 1)[1])
        tars = column.get("tar_at_far") or {}
        return next((value for key, value in tars.items() if math.isclose(float(key), far)), None)
    return column.get(metric)


def _cell(column: Mapping[str, Any] | None, metric: str, markdown: bool) -> str:
    value = None if column is None else metric_value(column, metric)
    if value is None:
        return "-"
    text = f"{100 * value:.2f}"
    std = column.get(f"{metric}_std")
    if std is not None:
        text += f" ± {100 * std:.2f}" if markdown else f"±{100 * std:.2f}"
    return text


def _render(title: str, header: list[str], rows: list[list[str]], markdown: bool, notes: Sequence[str] = (),
            text_columns: int = 1) -> str:
    """An aligned plain-text table (the first `text_columns` left-aligned, numbers right-aligned) or a
    Markdown one, then the notes (wrapped lines, or a Markdown list)."""
    if markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines + ([""] + [f"- {note}" for note in notes] if notes else [])) + "\n"
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [cell.ljust(width) if i < text_columns else cell.rjust(width)
                  for i, (cell, width) in enumerate(zip(cells, widths))]
        return "  ".join(padded).rstrip()

    rule = "-" * len(line(header))
    wrapped = [text for note in notes for text in textwrap.wrap(note, width=max(len(rule), 80), subsequent_indent="  ")]
    return "\n".join([title, rule, line(header), rule, *map(line, rows), rule, *wrapped]) + "\n"


def format_results_table(
    results_by_model: Mapping[str, Mapping[str, Any]], metric: str | None = None, markdown: bool = False
) -> str:
    """A table with one row per model and one column per resolution/distance, of one metric.

    Args:
        results_by_model: `{model name: runner result}`, all of one protocol.
        metric: the metric to show (default: `PRIMARY_METRICS[protocol]`), in percent, with
            "± std" over the folds when the result has `<metric>_std`.
        markdown: a GitHub-flavoured Markdown table instead of aligned plain text.
    """
    columns = _check_comparable(results_by_model)
    protocol = next(iter(results_by_model.values()))["protocol"]
    metric = metric or PRIMARY_METRICS[protocol]
    header = ["model", *map(column_title, columns)]
    rows = [
        [name, *(_cell(result_columns(result).get(key), metric, markdown) for key in columns)]
        for name, result in results_by_model.items()
    ]
    return _render(f"{protocol}: {METRIC_TITLES.get(metric, metric)}", header, rows, markdown)


def _report_notes(
    results_by_model: Mapping[str, Mapping[str, Any]], protocol: str, notes: Sequence[str] = ()
) -> list[str]:
    """The legend of a report: the run's `notes` (e.g. the original's protocol), what the metrics and
    columns mean, counts, branch routing, the retrieval rule."""
    notes = [*notes, _LEGENDS[protocol]]
    for name, result in results_by_model.items():
        facts = []
        counts = (("num_pairs", "pairs"), ("num_images", "images"), ("num_probes", "probes"),
                  ("num_mated", "mated probes"), ("num_unmated", "unmated probes"), ("num_templates", "gallery identities"))
        gallery = "gallery images" if protocol in ("closed-set-identification", "open-set-identification") else "gallery subjects"
        for key, what in (*counts, ("num_gallery", gallery), ("num_distractors", "of them distractors")):
            if result.get(key) is not None:
                facts.append(f"{result[key]} {what}")
        routing = result.get("probe_resolution")
        if isinstance(routing, Mapping) and result.get("model_kind") == "branch":  # a trunk has one embedding
            facts.append("probes of " + ", ".join(f"d{d} -> {column_title(str(r))}" for d, r in routing.items()))
        if isinstance(result.get("routing"), list) and result.get("model_kind") == "branch":
            facts.append("native sizes routed: " + ", ".join(
                f"{row['min_side']}-{row['max_side']}px -> {column_title(row['branch'])} ({row['num_images']})"
                for row in result["routing"]))
        histogram = result.get("probe_size_histogram")
        if histogram:
            facts.append("probe sizes (shorter side px: count): " + ", ".join(f"{side}: {n}" for side, n in histogram.items()))
        rule = result.get("retrieval_rule")
        if rule is not None:
            described = RETRIEVAL_RULE_NOTES.get(rule, str(rule)) if isinstance(rule, str) else str(rule)
            facts.append(f"retrieval rule: {described}")
        if facts:
            notes.append(f"{name}: " + "; ".join(facts) + ".")
    return notes


def format_results_report(
    results_by_model: Mapping[str, Mapping[str, Any]],
    markdown: bool = False,
    dataset_name: str | None = None,
    notes: Sequence[str] = (),
) -> str:
    """Every metric of a protocol per model and column (`REPORT_METRICS`, in percent), then a legend
    starting with `notes`.

    Rows are (model, metric), columns the resolutions / distances: verification shows accuracy ± std,
    AUC, EER and TAR@FAR=1e-3; identification rank-1 and rank-5; retrieval P@1, R-precision, MAP@R,
    NMI and AMI.
    """
    columns = _check_comparable(results_by_model)
    protocol = next(iter(results_by_model.values()))["protocol"]
    header = ["model", "metric", *map(column_title, columns)]
    rows = []
    for name, result in results_by_model.items():
        for index, metric in enumerate(REPORT_METRICS[protocol]):
            cells = [_cell(result_columns(result).get(key), metric, markdown) for key in columns]
            rows.append([name if index == 0 or markdown else "", SHORT_TITLES[metric], *cells])
    where = f" on {dataset_name}" if dataset_name else ""
    title = f"{protocol}{where} ({PROTOCOL_DESCRIPTIONS[protocol]}), %"
    return _render(title, header, rows, markdown, _report_notes(results_by_model, protocol, notes), text_columns=2)


def to_jsonable(value: Any) -> Any:
    """A JSON-ready copy of a result: numpy scalars/arrays become Python numbers/lists, NaN becomes
    None, and the numpy ROC `curves` are left out."""
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items() if key != "curves"}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results_json(
    results_by_model: Mapping[str, Mapping[str, Any]], path: str | Path, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write `{"metadata": ..., "results": {model: result}}` as indented JSON (no ROC arrays)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"metadata": to_jsonable(dict(metadata or {})), "results": to_jsonable(results_by_model)}
    write_text_atomic(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path


def one_line_summary(results: Mapping[str, Any]) -> str:
    """One log line of a result: its criterion, then the main metric per column, e.g.
    `"verification: mean LR accuracy 88.95% (verification accuracy: 8x8 86.90%, 12x12 91.00%, HR 93.50%)"`."""
    protocol = results.get("protocol", "?")
    metric = PRIMARY_METRICS.get(protocol, "accuracy")
    cells = [
        f"{column_title(key)} {100 * column[metric]:.2f}%"
        for key, column in result_columns(results).items()
        if column.get(metric) is not None
    ]
    name = METRIC_TITLES.get(metric, metric).replace(" (%)", "")
    criterion, criterion_name = _CRITERIA.get(protocol, (None, None))
    if criterion is None or results.get(criterion) is None:
        return f"{protocol}, {name}: " + ", ".join(cells)
    return f"{protocol}: {criterion_name} {100 * results[criterion]:.2f}% ({name}: " + ", ".join(cells) + ")"


def plot_roc_curves(
    results_by_model: Mapping[str, Mapping[str, Any]], path: str | Path, title: str | None = None
) -> Path:
    """Save one PNG with the ROC curves of every model's verification result, one curve per model
    and resolution (colour = resolution, line style = model).

    True accept rate against false accept rate on a log FAR axis (the low-FAR end is what face
    verification is judged on); the legend gives each curve's AUC and EER.
    """
    if not results_by_model or any(not result.get("curves") for result in results_by_model.values()):
        raise DCRInputError(
            "A result has no ROC curves (only verification results do, and results.json does not keep them)."
        )
    # A bare Figure renders with Agg and touches no pyplot state, so it works headless and in threads.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.2, 5.4), dpi=100)
    axes = figure.subplots()
    colours = {key: f"C{i}" for i, key in enumerate(dict.fromkeys(k for r in results_by_model.values() for k in r["curves"]))}
    styles = ("-", "--", ":", "-.")
    lowest = 1.0
    for index, (name, result) in enumerate(results_by_model.items()):
        columns = result_columns(result)
        for key, curve in result["curves"].items():
            fpr, tpr = np.asarray(curve["fpr"]), np.asarray(curve["tpr"])
            positive = fpr > 0
            if positive.any():
                lowest = min(lowest, float(fpr[positive].min()))
            label = (f"{name}, " if len(results_by_model) > 1 else "") + column_title(key)
            if key in columns:
                label += f" (AUC {100 * columns[key]['auc']:.1f}%, EER {100 * columns[key]['eer']:.1f}%)"
            # A log axis cannot show FAR = 0: each curve starts at its first non-zero FAR.
            axes.plot(fpr[positive], tpr[positive], styles[index % len(styles)], color=colours[key], label=label)
    protocol = next(iter(results_by_model.values())).get("protocol", "verification")
    axes.set_xscale("log")
    axes.set_xlim(lowest, 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false accept rate")
    axes.set_ylabel("true accept rate")
    axes.set_title(title or f"ROC, {protocol} ({PROTOCOL_DESCRIPTIONS.get(protocol, protocol)})", fontsize="medium")
    return _save_curves(figure, axes, path)


def _save_curves(figure, axes, path: str | Path) -> Path:
    """Grid, legend and layout of a curve figure, saved as PNG at `path` by rename (atomic)."""
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize="x-small")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    return path


def plot_cmc_curves(results_by_model: Mapping[str, Mapping[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Save one PNG with the CMC curve (identification rate against rank 1..100) of every model's
    closed-set identification result."""
    if not results_by_model or any(not result.get("cmc") for result in results_by_model.values()):
        raise DCRInputError("A result has no CMC curve (only closed-set identification results do).")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.2, 5.4), dpi=100)
    axes = figure.subplots()
    for name, result in results_by_model.items():
        cmc = np.asarray(result["cmc"])
        axes.plot(np.arange(1, len(cmc) + 1), cmc, label=f"{name} (rank-1 {100 * cmc[0]:.1f}%)")
    axes.set_xscale("log")
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("rank")
    axes.set_ylabel("identification rate")
    axes.set_title(title or "CMC", fontsize="medium")
    return _save_curves(figure, axes, path)


def plot_tpir_curves(results_by_model: Mapping[str, Mapping[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Save one PNG with the TPIR-FPIR curves of every model's open-set identification result, one
    line per model and rank (log FPIR axis)."""
    if not results_by_model or any(not result.get("tpir_curves") for result in results_by_model.values()):
        raise DCRInputError("A result has no TPIR-FPIR curve (only open-set identification results do).")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.2, 5.4), dpi=100)
    axes = figure.subplots()
    styles = ("-", "--", ":", "-.")
    lowest = 1.0
    for index, (name, result) in enumerate(results_by_model.items()):
        for number, (rank, curve) in enumerate(result["tpir_curves"].items()):
            fpir, tpir = np.asarray(curve["fpir"]), np.asarray(curve["tpir"])
            positive = fpir > 0
            if positive.any():
                lowest = min(lowest, float(fpir[positive].min()))
            label = (f"{name}, " if len(results_by_model) > 1 else "") + rank.replace("_", "-")
            axes.plot(fpir[positive], tpir[positive], styles[index % len(styles)], color=f"C{number}", label=label)
    axes.set_xscale("log")
    axes.set_xlim(lowest, 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false positive identification rate")
    axes.set_ylabel("true positive identification rate")
    axes.set_title(title or "TPIR against FPIR", fontsize="medium")
    return _save_curves(figure, axes, path)


def write_reports(
    results_by_model: Mapping[str, Mapping[str, Any]],
    output_dir: str | Path,
    metadata: Mapping[str, Any] | None = None,
    dataset_name: str | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Path]:
    """Write `results.json`, `results.md` (the full report) and the figures (one each, every model):
    `roc.png` for verification, `cmc.png` for closed-set identification, `tpir_fpir.png` for open-set
    identification, into `output_dir`; returns `{"json", "markdown"[, "roc" | "cmc" | "tpir"]: path}`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "json": write_results_json(results_by_model, output_dir / "results.json", metadata),
        "markdown": output_dir / "results.md",
    }
    report = format_results_report(results_by_model, markdown=True, dataset_name=dataset_name, notes=notes)
    write_text_atomic(written["markdown"], report)
    if all(result.get("curves") for result in results_by_model.values()):
        protocol = next(iter(results_by_model.values()))["protocol"]
        where = f" on {dataset_name}" if dataset_name else ""
        title = f"ROC, {protocol}{where} ({PROTOCOL_DESCRIPTIONS[protocol]})"
        written["roc"] = plot_roc_curves(results_by_model, output_dir / "roc.png", title=title)
    protocol = next(iter(results_by_model.values()))["protocol"]
    where = f" on {dataset_name}" if dataset_name else ""
    if all(result.get("cmc") for result in results_by_model.values()):
        written["cmc"] = plot_cmc_curves(results_by_model, output_dir / "cmc.png", title=f"CMC, {protocol}{where}")
    if all(result.get("tpir_curves") for result in results_by_model.values()):
        written["tpir"] = plot_tpir_curves(results_by_model, output_dir / "tpir_fpir.png", title=f"TPIR-FPIR, {protocol}{where}")
    return written


__all__ = [
    "COLUMN_KEYS",
    "METRIC_TITLES",
    "PRIMARY_METRICS",
    "PROTOCOL_DESCRIPTIONS",
    "REPORT_METRICS",
    "RETRIEVAL_RULE_NOTES",
    "column_title",
    "format_results_report",
    "metric_value",
    "one_line_summary",
    "format_results_table",
    "plot_cmc_curves",
    "plot_roc_curves",
    "plot_tpir_curves",
    "result_columns",
    "to_jsonable",
    "write_reports",
    "write_results_json",
]
