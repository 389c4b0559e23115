"""Face recognition metrics as pure functions on numpy arrays (no model inside).

- `verification`: similarity of pairs, k-fold accuracy with a threshold chosen on the other folds
  (`verification_accuracy`), and ROC figures: AUC, EER, TAR at fixed FAR (`roc_metrics`).
- `ranking`: rank-k accuracy of probes against a gallery (`identification_accuracy`), and
  precision@1, R-precision and MAP@R (`retrieval_metrics`), defined as in pytorch-metric-learning's
  `AccuracyCalculator`; nearest-neighbour searches use faiss.
- `_checks`: the input checks they share.

Every function validates its inputs and raises `ValueError` naming the argument at fault. This
package re-exports the public names of both modules, so `from dcr_hf.metrics import ...` works.
"""

from .ranking import IdentificationResult, RetrievalResult, identification_accuracy, retrieval_metrics
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
    "IdentificationResult",
    "RetrievalResult",
    "RocResult",
    "VerificationResult",
    "cosine_similarity_pairs",
    "identification_accuracy",
    "retrieval_metrics",
    "roc_metrics",
    "verification_accuracy",
]
