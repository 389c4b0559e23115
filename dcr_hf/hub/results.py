"""Evaluation results on a model card: runner results -> `EvalResult`s, merged without duplicates,
and the Markdown tables between `<!-- dcr-results:start -->` and `<!-- dcr-results:end -->`.

Each `EvalResult` records its protocol and column as `metric_config = "<protocol>/<column>"`
(`verification/8x8`, `identification/d1`), and whether the LR probes were real captures or
simulated by downsampling in `dataset_args["low_resolution_probes"]` (the caller knows the
dataset; `dcr_hf.data.registry.has_real_low_resolution_probes` says it for a registered one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from huggingface_hub import EvalResult

from ..errors_dcr import DCRInputError
from ..reports import METRIC_TITLES, column_title, metric_value, result_columns

RESULTS_START = "<!-- dcr-results:start -->"
RESULTS_END = "<!-- dcr-results:end -->"
NO_RESULTS = (
    "No results recorded yet: run `dcr-eval --model_name_or_path FOLDER ... --update_card` (or `eval_hf.py`) on this folder."
)
TASK_TYPE = "image-feature-extraction"
TASK_NAME = "Low-resolution face recognition"
#: Metrics of each protocol written to the card (all in percent).
CARD_METRICS = {
    "verification": ("accuracy", "auc", "eer"),
    "intra-verification": ("accuracy", "auc", "eer"),
    "identification": ("rank_1", "rank_5"),
    "retrieval": ("precision_at_1", "map_at_r", "r_precision", "nmi", "ami"),
    "intra-retrieval": ("precision_at_1", "map_at_r", "r_precision", "nmi", "ami"),
    "closed-set-identification": ("rank_1", "rank_5", "rank_20", "map"),
    "native-verification": ("accuracy", "auc", "tar@far=0.3", "tar@far=0.1", "tar@far=0.01", "tar@far=0.001"),
    "open-set-identification": ("tpir@fpir=0.3", "tpir@fpir=0.2", "tpir@fpir=0.1"),
}
_PROTOCOL_TITLES = {
    "verification": "verification, HR gallery vs {probes} probe",
    "intra-verification": "verification, both images at the same {kind}resolution",
    "identification": "identification, HR gallery vs {probes} probes",
    "retrieval": "retrieval, {probes} queries vs HR references",
    "intra-retrieval": "retrieval, queries and references at the same {kind}resolution",
    "closed-set-identification": "identification, {probes} probes vs every gallery image (columns: native probe size)",
    "native-verification": "verification, pairs of {probes} images",
    "open-set-identification": "open-set identification, {probes} probes (columns: rank)",
}


#: `dataset_args` key of an `EvalResult` saying how its LR probes were made: "real" or "simulated".
PROBES_KEY = "low_resolution_probes"


def probe_kind(real_low_resolution_probes: bool | None) -> str | None:
    """`"real"`, `"simulated"`, or `None` when the caller did not say."""
    if real_low_resolution_probes is None:
        return None
    return "real" if real_low_resolution_probes else "simulated"


def protocol_title(protocol: str, probes: str | None) -> str:
    """A results heading that says whether the LR images were real captures or simulated
    (`probes`: `"real"`, `"simulated"`, or `None` for a result that did not record it)."""
    kind = f"{probes} " if probes else ""
    return _PROTOCOL_TITLES.get(protocol, protocol).format(probes=f"{kind}LR", kind=kind)


def card_metrics(eval_results: Sequence[EvalResult]) -> list[str]:
    """The metric types a card's results hold, in order of appearance (the card's `metrics:`)."""
    return list(dict.fromkeys(result.metric_type for result in eval_results)) or ["accuracy"]


def results_to_eval_results(
    results: Mapping[str, Any],
    dataset_name: str,
    dataset_type: str | None = None,
    dataset_split: str | None = None,
    dataset_revision: str | None = None,
    real_low_resolution_probes: bool | None = None,
) -> list[EvalResult]:
    """One `EvalResult` per metric and column of a runner result (values in percent, 2 decimals).

    The column is recorded as `metric_config = "<protocol>/<column>"` (e.g. `verification/8x8`,
    `identification/d1`), so results of several protocols and resolutions on one dataset coexist;
    `real_low_resolution_probes` (real captures such as SCface's, or simulated) as
    `dataset_args["low_resolution_probes"]`, which the results table's headings show.
    """
    probes = probe_kind(real_low_resolution_probes)
    protocol = results.get("protocol")
    if protocol not in CARD_METRICS:
        raise DCRInputError(f"Unknown protocol {protocol!r} in the results; expected one of {sorted(CARD_METRICS)}.")
    dataset_type = dataset_type or dataset_name.lower().replace(" ", "-")
    eval_results = []
    for key, column in result_columns(results).items():
        title = column_title(key)
        for metric in CARD_METRICS[protocol]:
            value = metric_value(column, metric)
            if value is None:
                continue
            eval_results.append(
                EvalResult(
                    task_type=TASK_TYPE,
                    task_name=TASK_NAME,
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_split=dataset_split,
                    dataset_revision=dataset_revision,
                    dataset_args={PROBES_KEY: probes} if probes else None,
                    metric_type=metric,
                    metric_value=round(100.0 * float(value), 2),
                    metric_name=f"{dataset_name} {protocol} {title}: {METRIC_TITLES.get(metric, metric)}",
                    metric_config=f"{protocol}/{title}",
                )
            )
    if not eval_results:
        raise DCRInputError(f"The {protocol} results hold none of the metrics {CARD_METRICS[protocol]}.")
    return eval_results


def _slot(result: EvalResult) -> tuple:
    """What makes a result replace another: same task, dataset (type, config, split, revision) and
    protocol/column (`metric_config`)."""
    return (*result.unique_identifier, result.metric_config)


def merge_eval_results(existing: Sequence[EvalResult], new: Sequence[EvalResult]) -> list[EvalResult]:
    """`existing` without the entries whose dataset and protocol/column `new` measures again, then `new`."""
    replaced = {_slot(result) for result in new}
    return [result for result in existing if _slot(result) not in replaced] + list(new)


def results_markdown(eval_results: Sequence[EvalResult]) -> str:
    """Markdown tables of a card's results: one per dataset and protocol, rows = metrics,
    columns = resolutions / distances."""
    if not eval_results:
        return NO_RESULTS
    groups: dict[tuple, dict[str, dict[str, Any]]] = {}
    for result in eval_results:
        protocol, _, column = (result.metric_config or "/").partition("/")
        heading = (result.dataset_name, result.dataset_split, protocol)
        groups.setdefault(heading, {}).setdefault(result.metric_type, {})[column] = result.metric_value
    blocks = []
    probes = {(r.dataset_name, r.dataset_split): (r.dataset_args or {}).get(PROBES_KEY) for r in eval_results}
    for (dataset, split, protocol), rows in groups.items():
        columns: list[str] = []
        for values in rows.values():
            columns += [c for c in values if c not in columns]
        where = f"{dataset}" + (f" ({split})" if split else "")
        lines = [
            f"**{where}: {protocol_title(protocol, probes[(dataset, split)])}** (%)",
            "",
            "| metric | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for metric, values in rows.items():
            name = METRIC_TITLES.get(metric, metric).replace(" (%)", "")
            cells = [f"{values[c]:.2f}" if c in values else "-" for c in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def set_results_section(text: str, eval_results: Sequence[EvalResult]) -> str:
    """`text` (a card's Markdown) with its results section replaced by the tables of `eval_results`."""
    # Blank lines around the tables: a Markdown table ends at the first blank line.
    section = f"{RESULTS_START}\n\n{results_markdown(eval_results)}\n\n{RESULTS_END}"
    start, end = text.find(RESULTS_START), text.find(RESULTS_END)
    if start == -1 or end < start:
        # A card written by hand: keep it and add the section at the end.
        return text.rstrip("\n") + f"\n\n## Evaluation results\n\n{section}\n"
    return text[:start] + section + text[end + len(RESULTS_END) :]


__all__ = [
    "CARD_METRICS",
    "NO_RESULTS",
    "PROBES_KEY",
    "RESULTS_END",
    "RESULTS_START",
    "TASK_NAME",
    "TASK_TYPE",
    "card_metrics",
    "merge_eval_results",
    "probe_kind",
    "protocol_title",
    "results_markdown",
    "results_to_eval_results",
    "set_results_section",
]
