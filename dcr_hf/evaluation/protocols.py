"""Running one evaluation protocol on the data the dataset registry loads for it."""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset, DatasetDict

from ..errors_dcr import DCRInputError
from ..data.registry import PAIR_PROTOCOLS, PROTOCOLS, RETRIEVAL_PROTOCOLS
from .closed_set import evaluate_closed_set_identification
from .identification import evaluate_identification
from .native_verification import evaluate_native_verification
from .open_set import evaluate_open_set_identification
from .retrieval import evaluate_retrieval
from .verification import evaluate_verification


def run_protocol(
    protocol: str, model: torch.nn.Module, data: Dataset | DatasetDict, sizes=None, **kwargs: Any
) -> dict[str, Any]:
    """Run one of `PROTOCOLS` on data from `dcr_hf.data.registry.load_protocol_data`.

    `kwargs` go to the runner (`flip_tta`, `batch_size`, `accelerator`, `num_workers`,
    `image_processor`, and per protocol `threshold_grid`, `probe_resolution` or the retrieval
    `metric`, `rule` and `clustering`); `sizes=None`
    takes the model's own LR sizes (identification and the native protocols use real LR images
    and no sizes).
    """
    if protocol in PAIR_PROTOCOLS:
        return evaluate_verification(model, data, sizes=sizes, intra=protocol == "intra-verification", **kwargs)
    if protocol == "identification":
        if not isinstance(data, DatasetDict) or {"gallery", "probe"} - set(data):
            raise DCRInputError("identification needs a DatasetDict with 'gallery' and 'probe' splits.")
        return evaluate_identification(model, data["gallery"], data["probe"], **kwargs)
    if protocol in RETRIEVAL_PROTOCOLS:
        return evaluate_retrieval(model, data, sizes=sizes, intra=protocol == "intra-retrieval", **kwargs)
    # Native LR faces (TinyFace, QMUL-SurvFace): images used as they are, so `sizes` does not apply.
    if protocol == "closed-set-identification":
        _require_splits(data, protocol, ("gallery", "probe"))
        return evaluate_closed_set_identification(model, data["gallery"], data["probe"], **kwargs)
    if protocol == "native-verification":
        _require_splits(data, protocol, ("images", "pairs"))
        return evaluate_native_verification(model, data["images"], data["pairs"], **kwargs)
    if protocol == "open-set-identification":
        _require_splits(data, protocol, ("gallery", "mated_probe", "unmated_probe"))
        return evaluate_open_set_identification(model, data["gallery"], data["mated_probe"], data["unmated_probe"], **kwargs)
    raise DCRInputError(f"protocol={protocol!r} is not one of {PROTOCOLS}.")


def _require_splits(data: Dataset | DatasetDict, protocol: str, splits: tuple[str, ...]) -> None:
    if not isinstance(data, DatasetDict) or set(splits) - set(data):
        raise DCRInputError(f"{protocol} needs a DatasetDict with the splits {list(splits)}.")


__all__ = ["PROTOCOLS", "run_protocol"]
