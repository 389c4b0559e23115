#!/usr/bin/env python
"""Train a DCR model (trunk, branch or fine-tune stage) on the Hugging Face Trainer.

    python train_hf.py                                     # trunk on synthetic faces (CPU quickstart)
    python train_hf.py --stage branch --trunk outputs/dcr-trunk
    accelerate launch train_hf.py --dataset casia --data_root /data --architecture dcr ...

Every option: `python train_hf.py --help`; the README maps the original's flags to these.
"""

import sys

from transformers import HfArgumentParser
from transformers.utils import logging

from dcr_hf.training import DataArguments, DCRTrainingArguments, ModelArguments, NonFiniteLossError, run_training


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataArguments, DCRTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.set_verbosity_warning()
    result = run_training(model_args, data_args, training_args)
    if result.get("table"):
        print(f"\nValidation on {result['validation_name']} data:\n{result['table']}")
    if result.get("pushed"):
        print(f"Pushed {result['output_dir']} to {training_args.hub_model_id}")
    return result


if __name__ == "__main__":
    try:
        main()
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
