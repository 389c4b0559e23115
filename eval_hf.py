#!/usr/bin/env python
"""Evaluate DCR models: LFW verification, SCface identification, retrieval, on real or synthetic data.

    python eval_hf.py --model org/dcr-trunk --compare org/dcr-branch \
        --dataset lfw --data_root DATA --protocol verification --output_dir eval/lfw

Prints a table like the original README's (rows = models, columns = 8x8 ... HR) and writes
`results.json`, `results.md` and the ROC curves (`roc_<model>.png`) to `--output_dir`. Runs on one
device, or on several with `accelerate launch eval_hf.py ...` (only the main process prints and
writes). `--dataset synthetic` needs no data. The logic lives in `dcr_hf.evaluation`,
`dcr_hf.reports` and `dcr_hf.hub`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from accelerate import Accelerator
from transformers import HfArgumentParser
from transformers.utils import logging

from dcr_hf.evaluation import (
    DEFAULT_SIZES,
    check_dataset_protocol,
    check_sizes,
    load_evaluation_data,
    load_model_and_processor,
    run_protocol,
)
from dcr_hf.hub import update_model_card_results
from dcr_hf.reports import format_results_table, write_reports


logger = logging.get_logger("eval_hf")

DATASET_NAMES = {"lfw": "LFW", "scface": "SCface", "casia": "CASIA-WebFace", "folder": "Face folder", "synthetic": "Synthetic faces"}


@dataclass
class ModelArguments:
    model: str = field(metadata={"help": "A DCR model folder or Hub id."})
    compare: list[str] = field(
        default_factory=list, metadata={"help": "More DCR models (folders or Hub ids) to evaluate into the same table."}
    )


@dataclass
class DataArguments:
    dataset: Literal["lfw", "scface", "casia", "folder", "synthetic"] = field(
        default="lfw", metadata={"help": "Which data to evaluate on; 'synthetic' needs no files."}
    )
    protocol: Literal["verification", "intra-verification", "identification", "retrieval"] = field(
        default="verification",
        metadata={"help": "verification: HR vs LR pairs; intra-verification: both at one size; identification: "
                  "SCface gallery vs probes; retrieval: LR queries vs HR references."},
    )
    data_root: str | None = field(
        default=None,
        metadata={"help": "Data root holding LFW/, SCface/, Casia/ (or a prepared dataset folder); for "
                  "--dataset folder an identity-per-folder tree, a saved dataset or a Hub dataset id."},
    )
    pairs_file: str | None = field(default=None, metadata={"help": "LFW pairs file (default: LFW/lfw_test_pair.txt, else pairs.txt)."})
    casia_fold: int = field(default=0, metadata={"help": "CASIA fold (0..9) whose validation subjects are used for retrieval."})
    num_finetune_subjects: int = field(default=50, metadata={"help": "SCface subjects kept for fine-tuning (not tested)."})
    synthetic_identities: int = field(default=50, metadata={"help": "Synthetic: held-out identities of pairs/retrieval (>= 20)."})
    synthetic_images_per_identity: int = field(default=10, metadata={"help": "Synthetic: views per identity."})
    synthetic_pairs: int = field(default=600, metadata={"help": "Synthetic: verification pairs (a multiple of 20)."})
    synthetic_subjects: int = field(default=40, metadata={"help": "Synthetic: SCface-style subjects."})
    synthetic_image_size: int = field(default=120, metadata={"help": "Synthetic: rendered image size (> 40)."})
    seed: int = field(default=0, metadata={"help": "Synthetic: the seed of the faces."})


@dataclass
class EvaluationArguments:
    sizes: list[int] = field(default_factory=lambda: list(DEFAULT_SIZES), metadata={"help": "Low-resolution probe sizes."})
    flip_tta: bool = field(default=False, metadata={"help": "Average the embeddings of each image and its mirror image."})
    batch_size: int = field(default=64, metadata={"help": "Pairs or images per batch (per process)."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers (decoding)."})
    threshold_grid: Literal["exact", "original"] = field(
        default="exact",
        metadata={"help": "Verification thresholds: 'exact' (every distinct decision) or 'original' (-1..1 step 0.005)."},
    )
    probe_resolution: list[str] = field(
        default_factory=list,
        metadata={"help": "Identification, branch models: the branch for each probe distance, e.g. '1=8 2=12 3=hr', "
                  "or one value for all ('hr', '8'). Default: distance k -> k-th LR branch."},
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where to write results.json, results.md and ROC PNGs."})
    update_card: bool = field(
        default=False, metadata={"help": "Record the results in each local model folder's README.md (model-index)."}
    )
    dataset_split: str | None = field(default=None, metadata={"help": "Split name recorded in the model card."})


def _resolution(text: str) -> int | str:
    text = text.strip()
    return "hr" if text.lower() == "hr" else int(text)


def parse_probe_resolution(values: Sequence[str]) -> dict[int, int | str] | int | str | None:
    """`[]` -> None (the default mapping), `["hr"]` / `["8"]` -> one value, `["1=8", "2=hr"]` -> a mapping."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return _resolution(values[0])
    mapping = {}
    for value in values:
        distance, separator, resolution = value.partition("=")
        if not separator or not distance.strip().isdigit():
            raise ValueError(f"--probe_resolution {value!r}: expected DISTANCE=SIZE (e.g. 1=8 or 3=hr).")
        mapping[int(distance)] = _resolution(resolution)
    return mapping


def display_names(models: Sequence[str]) -> list[str]:
    """Short row names: a folder's or Hub repo's last path part, unless two models share it."""
    short = [Path(model.rstrip("/")).name or model for model in models]
    return short if len(set(short)) == len(short) else list(models)


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
    parser = HfArgumentParser((ModelArguments, DataArguments, EvaluationArguments))
    model_args, data_args, eval_args = parser.parse_args_into_dataclasses(args=argv)
    accelerator = Accelerator()
    models = [model_args.model, *model_args.compare]
    if len(set(models)) != len(models):
        raise ValueError(f"A model is listed twice: {models}.")

    # Everything that can be checked is checked before the (possibly long) data loading.
    check_dataset_protocol(data_args.dataset, data_args.protocol, data_args.data_root)
    probe_resolution = parse_probe_resolution(eval_args.probe_resolution)
    loaded = [load_model_and_processor(path) for path in models]
    if data_args.protocol != "identification":
        for model, _ in loaded:
            check_sizes(model, eval_args.sizes)
    data = load_evaluation_data(
        data_args.dataset,
        data_args.protocol,
        data_args.data_root,
        pairs_file=data_args.pairs_file,
        casia_fold=data_args.casia_fold,
        num_finetune_subjects=data_args.num_finetune_subjects,
        synthetic_options={
            "num_verification_identities": data_args.synthetic_identities,
            "images_per_identity": data_args.synthetic_images_per_identity,
            "num_pairs": data_args.synthetic_pairs,
            "num_surveillance_subjects": data_args.synthetic_subjects,
            "image_size": data_args.synthetic_image_size,
            "seed": data_args.seed,
        },
    )
    options = dict(
        flip_tta=eval_args.flip_tta,
        batch_size=eval_args.batch_size,
        num_workers=eval_args.num_workers,
        accelerator=accelerator,
    )
    if data_args.protocol in ("verification", "intra-verification"):
        options["threshold_grid"] = None if eval_args.threshold_grid == "exact" else eval_args.threshold_grid
    if data_args.protocol == "identification":
        options["probe_resolution"] = probe_resolution

    results: dict[str, dict] = {}
    for name, (model, processor) in zip(display_names(models), loaded):
        model.to(accelerator.device)
        results[name] = run_protocol(
            data_args.protocol, model, data, sizes=eval_args.sizes, image_processor=processor, **options
        )

    if accelerator.is_main_process:
        print(format_results_table(results))
        if eval_args.output_dir is not None:
            metadata = {"models": dict(zip(results, models)), **asdict(data_args), **asdict(eval_args)}
            written = write_reports(results, eval_args.output_dir, metadata)
            print("Wrote " + ", ".join(str(path) for path in written.values()))
        if eval_args.update_card:
            for name, path in zip(results, models):
                if not Path(path).is_dir():
                    logger.warning(f"--update_card: '{path}' is not a local folder; its card is not updated.")
                    continue
                update_model_card_results(
                    path, results[name], DATASET_NAMES[data_args.dataset], dataset_type=data_args.dataset,
                    dataset_split=eval_args.dataset_split,
                )
                print(f"Updated the model card of {path}")
    accelerator.wait_for_everyone()
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
