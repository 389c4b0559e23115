#!/usr/bin/env python
"""Evaluate DCR models: LFW verification, SCface identification, retrieval, on real or synthetic data.

    python eval_hf.py --model_name_or_path org/dcr-trunk --compare org/dcr-branch \
        --dataset lfw --data_root DATA --protocol verification --output_dir eval/lfw

Prints, per model and resolution, every metric of the protocol (verification: accuracy ± std, AUC,
EER, TAR@FAR=1e-3) and writes `results.json`, `results.md` and `roc.png` (one figure, every model)
to `--output_dir`. Runs on one device, or on several with `accelerate launch eval_hf.py ...` (only
the main process prints and writes). `--dataset synthetic` needs no data. The same command as
`dcr-eval`; the logic lives in `dcr_hf.evaluation.command`.
"""

from dcr_hf.evaluation.command import main

if __name__ == "__main__":
    main()
