"""Face recognition metrics as pure functions on numpy arrays (no model inside).

- `verification`: similarity of pairs, k-fold accuracy with a threshold chosen on the other folds
  (`verification_accuracy`), and ROC figures: AUC, EER, TAR at fixed FAR (`roc_metrics`).
- `ranking`: rank-k accuracy of probes against a gallery (`identification_accuracy`),
  precision@1, R-precision and MAP@R (`retrieval_metrics`, by pytorch-metric-learning's
  `AccuracyCalculator`, under a `RETRIEVAL_RULES` rule) and NMI/AMI of faiss k-means clusters
  (`clustering_metrics`); nearest-neighbour searches are exact (`ExactKNN`).
- `_checks`: the input checks they share.

Every function validates its inputs and raises `ValueError` naming the argument at fault. This
package re-exports the public names of both modules, so `from dcr_hf.metrics import ...` works.
"""

from .ranking import (
    RETRIEVAL_RULES,
    ClusteringResult,
    ExactKNN,
    IdentificationResult,
    RetrievalResult,
    clustering_metrics,
    identification_accuracy,
    retrieval_metrics,
)
from .verification import (
    ORIGINAL_THRESHOLD_GRID,
    RocResult,
    VerificationResult,
    cosine_similarity_pairs,
    roc_metrics,
    verification_accuracy,
)


__all__ = [
    "ORIGINAL_THRESHOLD_GRID",
    "RETRIEVAL_RULES",
    "ClusteringResult",
    "ExactKNN",
    "IdentificationResult",
    "RetrievalResult",
    "RocResult",
    "VerificationResult",
    "clustering_metrics",
    "cosine_similarity_pairs",
    "identification_accuracy",
    "retrieval_metrics",
    "roc_metrics",
    "verification_accuracy",
]
