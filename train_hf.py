#!/usr/bin/env python
"""Train a DCR model (trunk, branch or fine-tune stage) on the Hugging Face Trainer.

    python train_hf.py                                     # trunk on synthetic faces (CPU quickstart)
    python train_hf.py --stage branch --trunk outputs/dcr-trunk
    accelerate launch train_hf.py --dataset casia --data_root /data --architecture dcr ...

The same command as `dcr-train` (the logic lives in `dcr_hf.training.command`). DCR's options:
`python train_hf.py --help`; every Trainer option too: `--help_all`. docs/training.md maps the
original's flags to these.
"""

from dcr_hf.training.command import main

if __name__ == "__main__":
    main()
