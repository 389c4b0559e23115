#!/usr/bin/env python
"""Evaluate DCR models: LFW verification, SCface identification, retrieval, on real or synthetic data.

    python eval_hf.py --model org/dcr-trunk --compare org/dcr-branch \
        --dataset lfw --data_root DATA --protocol verification --output_dir eval/lfw

Prints a table like the original README's (rows = models, columns = 8x8 ... HR) and writes
`results.json`, `results.md` and the ROC curves (`roc_<model>.png`) to `--output_dir`. Runs on one
device, or on several with `accelerate launch eval_hf.py ...` (only the main process prints and
writes). `--dataset synthetic` needs no data. The logic lives in `dcr_hf.evaluation.command`.
"""

import sys

from dcr_hf.evaluation.command import main

if __name__ == "__main__":
    main(sys.argv[1:])
