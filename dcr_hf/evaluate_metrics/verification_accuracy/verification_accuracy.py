"""k-fold face verification accuracy as an `evaluate` metric; the computation is `dcr_hf.metrics`."""

import datasets
import evaluate

from dcr_hf.metrics import verification_accuracy


_DESCRIPTION = """
k-fold verification accuracy (the LFW protocol): for each fold the decision threshold is the one
with the best accuracy on the other folds (a pair is "same" when its score > threshold; ties go
to the larger threshold) and the accuracy is measured on the held-out fold. Reports the mean and
(population) standard deviation of the fold accuracies, the mean threshold and per-fold values.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): similarity score of each pair, e.g. the cosine similarity.
    references (`list` of `int`): 1 when the pair shows one identity, else 0.
    folds (`list` of `int`, *optional*): fold id of each pair, e.g. the set of LFW `pairs.txt`.
        Default: `num_folds` contiguous blocks in order.
    num_folds (`int`, *optional*): number of contiguous blocks when `folds` is not given (default 10).
    threshold_grid (`str` or `list` of `float`, *optional*): None (default) searches every distinct
        decision exactly; "original" searches the grid -1.0, -0.995, ..., 0.995 of the original DCR code.
Returns:
    accuracy (`float`): mean held-out accuracy over folds.
    accuracy_std (`float`): standard deviation of the fold accuracies.
    threshold (`float`): mean of the fold thresholds.
    fold_accuracies (`list` of `float`), fold_thresholds (`list` of `float`): per-fold values.
Examples:
    >>> import evaluate
    >>> from dcr_hf.evaluate_metrics import VERIFICATION_ACCURACY_PATH
    >>> metric = evaluate.load(VERIFICATION_ACCURACY_PATH)
    >>> result = metric.compute(predictions=[0.9, 0.1, 0.8, 0.2], references=[1, 0, 1, 0], num_folds=2)
    >>> round(result["accuracy"], 2)
    1.0
"""

_CITATION = """
@article{lu2018deep,
  title={Deep Coupled ResNet for Low-Resolution Face Recognition},
  author={Lu, Ze and Jiang, Xudong and Kot, Alex},
  journal={IEEE Signal Processing Letters},
  volume={25}, number={4}, pages={526--530}, year={2018}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VerificationAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int32")}
            ),
            reference_urls=["http://vis-www.cs.umass.edu/lfw/"],
        )

    def _compute(self, predictions, references, folds=None, num_folds=None, threshold_grid=None) -> dict:
        result = verification_accuracy(
            predictions, references, folds, num_folds=num_folds, threshold_grid=threshold_grid
        )
        return {
            "accuracy": result.accuracy,
            "accuracy_std": result.accuracy_std,
            "threshold": result.threshold,
            "fold_accuracies": result.fold_accuracies.tolist(),
            "fold_thresholds": result.fold_thresholds.tolist(),
        }
