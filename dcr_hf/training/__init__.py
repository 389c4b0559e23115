"""Training DCR on the Hugging Face Trainer; `train_hf.py` / `dcr-train` are the thin command line.

The three stages: `trunk` (softmax + center loss on multi-resolution batches), `branch` (the
coupled branches around a trained, frozen trunk, specialized initialization by default) and
`finetune` (continue from any DCR checkpoint on new data, e.g. SCface).

Read top to bottom, as a run goes: `command` (parse the command line once) -> `arguments` (the
argument dataclasses) -> `plan` (`plan_training`: every option checked once, the `TrainingPlan`:
the `DCRConfig`, the `DataSpec`, the completed `TrainingArguments`; `precision`: the device and
bf16 on a CPU) -> `run` (`run_training(plan)`: data, model, Trainer, train, validate, save, push)
-> `model` (the stage's model), `trainer` (`DCRTrainer`), `mining` (the center terms' batch-hard
miner), `guard` (the divergence guard), `checkpoints` (the output folder and resuming), `lock`
(one run per output folder), `saving` (atomic saves), `interrupt` (a clean stop on SIGINT / SIGTERM),
`partial_fc` (`--partial_fc`: the classifier and centers sharded by identity across the processes),
`partial_fc_trainer` (`PartialFCTrainer`, the Trainer with the shard) and `conv_weight_grad` (CPU
bf16 on AVX512-BF16 without AMX: small-map convolution weight gradients by one GEMM).

The names below are imported when first used, so that `--help` does not load the data and model
modules.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "ARCHITECTURES": "arguments",
    "STAGES": "arguments",
    "UNSUPPORTED_TRAINER_OPTIONS": "arguments",
    "DataArguments": "arguments",
    "DCRTrainingArguments": "arguments",
    "ModelArguments": "arguments",
    "DataSpec": "plan",
    "TrainingPlan": "plan",
    "plan_training": "plan",
    "build_miner": "mining",
    "build_model": "model",
    "load_training_data": "run",
    "run_training": "run",
    "DCRTrainer": "trainer",
    "PartialFCTrainer": "partial_fc_trainer",
    "ShardedClassifier": "partial_fc",
    "NonFiniteLossError": "guard",
    "TrainingInterrupted": "interrupt",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
