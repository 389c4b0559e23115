"""Timed training runs through `run_training` (the code of `train_hf.py`), for the benchmark scripts.

`timed_run` trains a few steps on in-memory JPEG faces with the options a user would pass to
`train_hf.py` and returns the wall time of every optimizer step (the Trainer's whole step:
fetching the batch, the step's augmentation and LR copies, forward, backward, optimizer).
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import torch
from datasets import ClassLabel, Dataset, Features, Image
from transformers import TrainerCallback
from transformers.utils import logging as transformers_logging

from _limits import smooth_face_jpeg

from dcr_hf.training import plan_training, run_training
from dcr_hf.training.command import parse_arguments
from dcr_hf.training.run import TrainingData


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step, from its start to its end (the device waited for)."""

    def __init__(self, device: str):
        self.device, self.times, self._start = device, [], 0.0

    def _sync(self) -> None:
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self._start)


def jpeg_faces(num_images: int, num_classes: int, image_size: int = 120) -> TrainingData:
    """`num_images` JPEG faces (bytes in memory, as a prepared dataset holds them), labels cycling
    through `num_classes` classes; no validation."""
    images = [{"bytes": smooth_face_jpeg(image_size, seed=index), "path": None} for index in range(num_images)]
    labels = [index % num_classes for index in range(num_images)]
    features = Features({"image": Image(), "label": ClassLabel(num_classes=num_classes)})
    train = Dataset.from_dict({"image": images, "label": labels}, features=features)
    return TrainingData(train=train, num_labels=num_classes, id2label={i: str(i) for i in range(num_classes)},
                        real_low_resolution=False, validation=None, validation_protocol=None, validation_name=None)


def timed_run(output_dir: Path, data: TrainingData, steps: int, device: str, options: list[str]) -> list[float]:
    """Train `steps` optimizer steps with `train_hf.py` `options` (validation and checkpoints off) and
    return each step's wall time in seconds."""
    argv = [
        "--output_dir", str(output_dir), "--max_steps", str(steps),
        "--validation_dataset", "none", "--eval_strategy", "no", "--save_strategy", "no",
        "--load_best_model_at_end", "false", "--report_to", "none", "--disable_tqdm", "true",
        "--logging_steps", "1000", "--seed", "0", "--use_cpu", "true" if device == "cpu" else "false", *options,
    ]
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    timer = StepTimer(device)
    with contextlib.redirect_stdout(io.StringIO()):  # the run's own metrics block
        run_training(plan_training(*parse_arguments(argv)), callbacks=[timer], data=data)
    return timer.times


__all__ = ["StepTimer", "jpeg_faces", "timed_run"]
