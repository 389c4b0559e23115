"""Reports of evaluation results: console and Markdown tables, `results.json`, ROC curve plots.

Input is the result dict of a runner of `dcr_hf.evaluation` (or `{model name: result}` to compare
several models). Tables follow the original README: one row per model, one column per probe
resolution (`8x8` ... `HR`) or SCface distance (`d1` ... `all`), accuracies in percent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers.utils import logging


logger = logging.get_logger(__name__)

#: The metric each protocol's tables show (its `<metric>_std`, when present, follows after "±").
PRIMARY_METRICS = {
    "verification": "accuracy",
    "intra-verification": "accuracy",
    "identification": "rank_1",
    "retrieval": "precision_at_1",
    "intra-retrieval": "precision_at_1",
}
#: More metrics of a protocol, each written as its own table into results.md.
SECONDARY_METRICS = {
    "retrieval": ("map_at_r", "r_precision", "nmi", "ami"),
    "intra-retrieval": ("map_at_r", "r_precision", "nmi", "ami"),
}
METRIC_TITLES = {
    "accuracy": "verification accuracy (%)",
    "auc": "ROC AUC (%)",
    "eer": "equal error rate (%)",
    "rank_1": "rank-1 identification accuracy (%)",
    "rank_5": "rank-5 identification accuracy (%)",
    "precision_at_1": "precision@1 (%)",
    "map_at_r": "MAP@R (%)",
    "r_precision": "R-precision (%)",
    "nmi": "NMI of k-means clusters (%)",
    "ami": "AMI of k-means clusters (%)",
}


def result_columns(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-column metrics of a result: `by_resolution` (verification, retrieval) or `by_distance`."""
    for key in ("by_resolution", "by_distance"):
        if key in results:
            return results[key]
    raise KeyError(f"A result needs 'by_resolution' or 'by_distance'; got the keys {sorted(results)}.")


def column_title(key: str) -> str:
    """`"8"` -> `"8x8"`, `"hr"` -> `"HR"`; other keys (`"d1"`, `"all"`) unchanged."""
    if key.isdigit():
        return f"{key}x{key}"
    return "HR" if key == "hr" else key


def _check_comparable(results_by_model: Mapping[str, Mapping[str, Any]]) -> list[str]:
    if not results_by_model:
        raise ValueError("No results to report.")
    protocols = {name: result.get("protocol") for name, result in results_by_model.items()}
    if len(set(protocols.values())) != 1:
        raise ValueError(f"Cannot put different protocols in one table: {protocols}.")
    columns: list[str] = []
    for result in results_by_model.values():
        columns += [key for key in result_columns(result) if key not in columns]
    return columns


def _cell(column: Mapping[str, Any] | None, metric: str, markdown: bool) -> str:
    if column is None or column.get(metric) is None:
        return "-"
    text = f"{100 * column[metric]:.2f}"
    std = column.get(f"{metric}_std")
    if std is not None:
        text += f" ± {100 * std:.2f}" if markdown else f"±{100 * std:.2f}"
    return text


#: What each retrieval rule means, for the line under a retrieval table.
RETRIEVAL_RULE_NOTES = {
    "exclude_own": "retrieval rule: exclude_own (each query's own image is left out of its references; "
    "R counts the other images of its identity)",
    "original": "retrieval rule: original (one neighbour more is searched and each query's first neighbour "
    "dropped, whoever it is, as the original did; R counts the other images of its identity)",
}


def result_notes(results_by_model: Mapping[str, Mapping[str, Any]], notes: Sequence[str] = ()) -> list[str]:
    """The lines under a table: `notes`, then the settings a reader needs to compare the figures
    (the retrieval rule of retrieval results)."""
    lines = list(notes)
    rules = {result.get("retrieval_rule") for result in results_by_model.values()} - {None}
    lines += [RETRIEVAL_RULE_NOTES.get(rule, f"retrieval rule: {rule}") for rule in sorted(rules)]
    return lines


def format_results_table(
    results_by_model: Mapping[str, Mapping[str, Any]],
    metric: str | None = None,
    markdown: bool = False,
    notes: Sequence[str] | None = (),
) -> str:
    """A table with one row per model and one column per resolution/distance, and `result_notes` under it.

    Args:
        results_by_model: `{model name: runner result}`, all of one protocol.
        metric: the metric to show (default: `PRIMARY_METRICS[protocol]`), in percent, with
            "± std" over the folds when the result has `<metric>_std`.
        markdown: a GitHub-flavoured Markdown table instead of aligned plain text.
        notes: lines to print under the table (e.g. the protocol settings of the run); None: no
            lines at all, not even the automatic ones.
    """
    columns = _check_comparable(results_by_model)
    protocol = next(iter(results_by_model.values()))["protocol"]
    metric = metric or PRIMARY_METRICS[protocol]
    header = ["model", *map(column_title, columns)]
    rows = [
        [name, *(_cell(result_columns(result).get(key), metric, markdown) for key in columns)]
        for name, result in results_by_model.items()
    ]
    title = f"{protocol}: {METRIC_TITLES.get(metric, metric)}"
    notes = [] if notes is None else result_notes(results_by_model, notes)
    if markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines += [""] + [f"- {note}" for note in notes] if notes else []
        return "\n".join(lines) + "\n"
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # Model names left-aligned, numbers right-aligned.
        padded = [cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(cells, widths))]
        return "  ".join(padded)

    rule = "-" * len(line(header))
    return "\n".join([title, rule, line(header), rule, *map(line, rows), rule, *notes]) + "\n"


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
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def one_line_summary(results: Mapping[str, Any]) -> str:
    """One log line of a result's main metric per column, e.g.
    `"verification, verification accuracy: 8x8 86.90%, 12x12 91.00%, HR 93.50%"`."""
    protocol = results.get("protocol", "?")
    metric = PRIMARY_METRICS.get(protocol, "accuracy")
    cells = [
        f"{column_title(key)} {100 * column[metric]:.2f}%"
        for key, column in result_columns(results).items()
        if column.get(metric) is not None
    ]
    name = METRIC_TITLES.get(metric, metric).replace(" (%)", "")
    return f"{protocol}, {name}: " + ", ".join(cells)


def plot_roc_curves(results: Mapping[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Save the ROC curves of a verification result as a PNG, one curve per resolution.

    True accept rate against false accept rate on a log FAR axis (the low-FAR end is what face
    verification is judged on); the legend gives each curve's AUC and EER.
    """
    curves = results.get("curves")
    if not curves:
        raise ValueError(
            "This result has no ROC curves (only verification results do, and results.json does not keep them)."
        )
    # A bare Figure renders with Agg and touches no pyplot state, so it works headless and in threads.
    from matplotlib.figure import Figure

    columns = result_columns(results)
    figure = Figure(figsize=(6.4, 4.8), dpi=100)
    axes = figure.subplots()
    lowest = 1.0
    for key, curve in curves.items():
        fpr, tpr = np.asarray(curve["fpr"]), np.asarray(curve["tpr"])
        positive = fpr > 0
        if positive.any():
            lowest = min(lowest, float(fpr[positive].min()))
        label = column_title(key)
        if key in columns:
            label += f" (AUC {100 * columns[key]['auc']:.1f}%, EER {100 * columns[key]['eer']:.1f}%)"
        # A log axis cannot show FAR = 0: each curve starts at its first non-zero FAR.
        axes.plot(fpr[positive], tpr[positive], label=label)
    axes.set_xscale("log")
    axes.set_xlim(lowest, 1.0)
    axes.set_ylim(0.0, 1.01)
    axes.set_xlabel("false accept rate")
    axes.set_ylabel("true accept rate")
    axes.set_title(title or f"ROC, {results.get('protocol', 'verification')}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _file_stem(name: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return stem or "model"


def write_reports(
    results_by_model: Mapping[str, Mapping[str, Any]],
    output_dir: str | Path,
    metadata: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Path]:
    """Write `results.json`, `results.md` (the table and its notes) and, for verification,
    `roc_<model>.png` per model into `output_dir`; returns `{"json", "markdown", "roc/<model>": path}`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "json": write_results_json(results_by_model, output_dir / "results.json", metadata),
        "markdown": output_dir / "results.md",
    }
    protocol = next(iter(results_by_model.values())).get("protocol")
    tables = [format_results_table(results_by_model, markdown=True, notes=notes)]
    for metric in SECONDARY_METRICS.get(protocol, ()):
        if any(column.get(metric) is not None for r in results_by_model.values() for column in result_columns(r).values()):
            tables.append(format_results_table(results_by_model, metric=metric, markdown=True, notes=None))
    written["markdown"].write_text("\n".join(tables), encoding="utf-8")
    stems: set[str] = set()
    for name, result in results_by_model.items():
        if result.get("curves"):
            stem = _file_stem(name)
            while stem in stems:
                stem += "_"
            stems.add(stem)
            written[f"roc/{name}"] = plot_roc_curves(result, output_dir / f"roc_{stem}.png", title=f"ROC: {name}")
    return written


__all__ = [
    "METRIC_TITLES",
    "PRIMARY_METRICS",
    "RETRIEVAL_RULE_NOTES",
    "SECONDARY_METRICS",
    "column_title",
    "one_line_summary",
    "format_results_table",
    "plot_roc_curves",
    "result_notes",
    "result_columns",
    "to_jsonable",
    "write_reports",
    "write_results_json",
]
