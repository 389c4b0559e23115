"""`evaluate` metric modules of dcr-hf, loadable offline by path.

    >>> import evaluate
    >>> from dcr_hf.evaluate_metrics import VERIFICATION_ACCURACY_PATH
    >>> metric = evaluate.load(VERIFICATION_ACCURACY_PATH)
"""

from pathlib import Path


VERIFICATION_ACCURACY_PATH = str(Path(__file__).resolve().parent / "verification_accuracy")
