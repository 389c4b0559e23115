"""Evaluation of DCR models: embedding extraction, the protocol runners and result summaries.

Every runner takes a DCR model (`DCRModel`, or `DCRForImageClassification` whose `.dcr` is
used), a raw dataset from `dcr_hf.data` and the model's `DCRImageProcessor`; it attaches the
matching transform, embeds every image batch-wise (distributed with Accelerate when an
`Accelerator` is given) and scores the embeddings with the pure functions of `dcr_hf.metrics`.
Results are plain dicts (fractions in [0, 1]) that `dcr_hf.reports` turns into tables,
`results.json` and ROC plots; numpy ROC curves sit under `"curves"`, left out of the JSON.
"""

from .._lazy import lazy_exports

# The names load on first use: importing the package (or a command module in it) stays light.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "evaluate_closed_set_identification": "closed_set",
        "HR": "embeddings",
        "EmbeddingView": "embeddings",
        "check_resolution": "embeddings",
        "check_sizes": "embeddings",
        "compute_embedding_views": "embeddings",
        "compute_embeddings": "embeddings",
        "get_dcr_model": "embeddings",
        "processor_for": "embeddings",
        "default_probe_resolutions": "identification",
        "evaluate_identification": "identification",
        "evaluate_native_verification": "native_verification",
        "evaluate_open_set_identification": "open_set",
        "PROTOCOLS": "protocols",
        "run_protocol": "protocols",
        "evaluate_retrieval": "retrieval",
        "CRITERIA": "summary",
        "summary_metrics": "summary",
        "evaluate_verification": "verification",
    },
)

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
    "evaluate_closed_set_identification",
    "evaluate_identification",
    "evaluate_native_verification",
    "evaluate_open_set_identification",
    "evaluate_retrieval",
    "evaluate_verification",
    "get_dcr_model",
    "processor_for",
    "run_protocol",
    "summary_metrics",
]
