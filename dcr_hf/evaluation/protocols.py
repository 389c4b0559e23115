"""Running one evaluation protocol on the data the dataset registry loads for it."""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset, DatasetDict

from ..errors_dcr import DCRInputError
from ..data.registry import PAIR_PROTOCOLS, PROTOCOLS, RETRIEVAL_PROTOCOLS
from .identification import evaluate_identification
from .retrieval import evaluate_retrieval
from .verification import evaluate_verification


def run_protocol(
    protocol: str, model: torch.nn.Module, data: Dataset | DatasetDict, sizes=None, **kwargs: Any
) -> dict[str, Any]:
    """Run one of `PROTOCOLS` on data from `dcr_hf.data.registry.load_protocol_data`.

    `kwargs` go to the runner (`flip_tta`, `batch_size`, `accelerator`, `num_workers`,
    `image_processor`, and per protocol `threshold_grid`, `probe_resolution` or the retrieval
    `metric`, `rule` and `clustering`); `sizes=None`
    takes the model's own LR sizes (identification uses real probes and no sizes).
    """
    if protocol in PAIR_PROTOCOLS:
        return evaluate_verification(model, data, sizes=sizes, intra=protocol == "intra-verification", **kwargs)
    if protocol == "identification":
        if not isinstance(data, DatasetDict) or {"gallery", "probe"} - set(data):
            raise DCRInputError("identification needs a DatasetDict with 'gallery' and 'probe' splits.")
        return evaluate_identification(model, data["gallery"], data["probe"], **kwargs)
    if protocol in RETRIEVAL_PROTOCOLS:
        return evaluate_retrieval(model, data, sizes=sizes, intra=protocol == "intra-retrieval", **kwargs)
    raise DCRInputError(f"protocol={protocol!r} is not one of {PROTOCOLS}.")


__all__ = ["PROTOCOLS", "run_protocol"]
