"""Evaluation of DCR models: embedding extraction, the protocol runners and result summaries.

Every runner takes a DCR model (`DCRModel`, or `DCRForImageClassification` whose `.dcr` is
used), a raw dataset from `dcr_hf.data` and the model's `DCRImageProcessor`; it attaches the
matching transform, embeds every image batch-wise (distributed with Accelerate when an
`Accelerator` is given) and scores the embeddings with the pure functions of `dcr_hf.metrics`.
Results are plain dicts (fractions in [0, 1]) that `dcr_hf.reports` turns into tables,
`results.json` and ROC plots; numpy ROC curves sit under `"curves"`, left out of the JSON.
"""

from .embeddings import (
    HR,
    EmbeddingView,
    check_resolution,
    check_sizes,
    compute_embedding_views,
    compute_embeddings,
    get_dcr_model,
    processor_for,
)
from .identification import default_probe_resolutions, evaluate_identification
from .protocols import PROTOCOLS, run_protocol
from .retrieval import evaluate_retrieval
from .summary import CRITERIA, summary_metrics
from .verification import evaluate_verification

__all__ = [
    "CRITERIA",
    "EmbeddingView",
    "HR",
    "PROTOCOLS",
    "check_resolution",
    "check_sizes",
    "compute_embedding_views",
    "compute_embeddings",
    "default_probe_resolutions",
    "evaluate_identification",
    "evaluate_retrieval",
    "evaluate_verification",
    "get_dcr_model",
    "processor_for",
    "run_protocol",
    "summary_metrics",
]
