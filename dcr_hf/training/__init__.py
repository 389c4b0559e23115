"""Training DCR on the Hugging Face Trainer; `train_hf.py` is the thin command line over `run_training`.

The three stages: `trunk` (softmax + center loss on multi-resolution batches), `branch` (the
coupled branches around a trained, frozen trunk, specialized initialization by default) and
`finetune` (continue from any DCR checkpoint on new data, e.g. SCface).

Modules: `arguments` (the argument dataclasses and their checks), `model` (the stage's model and
processor), `mining` (the center terms' batch-hard miner), `trainer` (`DCRTrainer`), `run` (the
whole run and the finished folder), `command` (the command line of `train_hf.py` / `dcr-train`).
"""

from .arguments import (
    ARCHITECTURES,
    STAGES,
    UNSUPPORTED_TRAINER_OPTIONS,
    DataArguments,
    DCRTrainingArguments,
    ModelArguments,
    check_arguments,
)
from .mining import build_miner
from .model import build_model, build_processor
from .run import load_training_data, run_training
from .trainer import DCRTrainer, NonFiniteLossError

__all__ = [
    "ARCHITECTURES",
    "STAGES",
    "UNSUPPORTED_TRAINER_OPTIONS",
    "DCRTrainer",
    "DCRTrainingArguments",
    "DataArguments",
    "ModelArguments",
    "NonFiniteLossError",
    "build_miner",
    "build_model",
    "build_processor",
    "check_arguments",
    "load_training_data",
    "run_training",
]
