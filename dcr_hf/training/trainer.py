"""`DCRTrainer`: the transformers `Trainer` with DCR's training step and face-protocol validation."""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from transformers import Trainer, default_data_collator
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.utils import logging

from ..errors_dcr import DCRInputError
from ..data.augment import apply_flips, draw_flips
from ..data.transforms import TrainTransform
from ..modeling_dcr import Miner
from .conv_weight_grad import gemm_weight_grad, gemm_weight_grad_helps
from .guard import DivergenceGuard, NonFiniteLossError
from .saving import AtomicSaves

logger = logging.get_logger(__name__)


def collate_batch(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """`default_data_collator`; a batch whose every image failed to decode (the transform dropped
    them all, with warnings naming the files) becomes an empty `labels` tensor, skipped by `DCRTrainer`."""
    if not features:
        return {"labels": torch.empty(0, dtype=torch.int64)}
    return default_data_collator(features)


#: The `metric_key_prefix`es of DCR's validations: before training, during it, of the final model.
VALIDATION_PREFIXES = ("before", "eval", "final")


def is_validation_log(logs: dict[str, Any]) -> bool:
    """Whether a `Trainer.log` dict holds validation metrics (every key but `epoch` prefixed)."""
    keys = [key for key in logs if key != "epoch"]
    return bool(keys) and all(key.startswith(tuple(f"{p}_" for p in VALIDATION_PREFIXES)) for key in keys)


class _QuietValidation:
    """Console callbacks that leave validation dicts (~40 keys) to the trackers and `log_history`:
    `DCRTrainer.evaluate` logs one compact line per validation instead."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and is_validation_log(logs):
            return
        super().on_log(args, state, control, logs=logs, **kwargs)


class DCRProgressCallback(_QuietValidation, ProgressCallback):
    """`ProgressCallback` without the validation dicts."""


class DCRPrinterCallback(_QuietValidation, PrinterCallback):
    """`PrinterCallback` (`--disable_tqdm`) without the validation dicts."""


class DCRTrainer(AtomicSaves, Trainer):
    """`Trainer` for DCR: the augmentation and LR copies made on the training device from uint8
    batches (`device_transform`), the flip drawn in the step otherwise, the batch-hard miner of the
    center terms, the divergence guard (`guard.DivergenceGuard`: nothing non-finite is saved, a
    diverging loss stops the run), batches of undecodable images skipped, loss terms in the logs,
    the M-per-class sampler, the original's step schedule, and validation by the face protocols with
    the model's own processor (`processing_class`), overriding `evaluate` so that early stopping and
    best-model selection work. Its saves are atomic (`saving.AtomicSaves`)."""

    def __init__(
        self,
        *args,
        validation: Dataset | DatasetDict | None = None,
        validation_protocol: str | None = None,
        validation_sizes: list[int] | None = None,
        device_transform: TrainTransform | None = None,
        samples_per_class: int | None = None,
        random_flip: bool = False,
        miner: Miner | None = None,
        divergence_factor: float | None = 100.0,
        **kwargs,
    ):
        if kwargs.get("data_collator") is None:
            kwargs["data_collator"] = collate_batch
        super().__init__(*args, **kwargs)
        self.guard = DivergenceGuard(divergence_factor)
        self.miner = miner  # the center terms' batch-hard miner (`build_miner`), passed to the forward pass
        self.validation = validation
        self.validation_protocol = validation_protocol
        self.validation_sizes = validation_sizes
        # The loader side sends decoded uint8 images; this transform's `model_inputs` makes the
        # augmented, normalized HR batch and its LR copies on the training device.
        self.device_transform = device_transform
        self.samples_per_class = samples_per_class
        self.random_flip = random_flip
        # Summed on the device between logging steps: a float() per step and term would wait for
        # the device every step.
        self._loss_terms: dict[str, torch.Tensor] = {}
        self._loss_term_count = 0
        self.last_validation: dict[str, Any] | None = None
        for default, quiet in ((ProgressCallback, DCRProgressCallback), (PrinterCallback, DCRPrinterCallback)):
            if self.pop_callback(default) is not None:
                self.add_callback(quiet)
        self._set_tensorboard_dir()
        # CPU bf16 steps on AVX512-BF16 without AMX: the weight gradients of small-map convolutions
        # by one GEMM (`conv_weight_grad`), measured faster there than oneDNN's own kernel. Not with
        # torch.compile (its graph has its own kernels) nor activation checkpointing (the forward it
        # recomputes in the backward runs outside the step's context, so its saved tensors would differ).
        self.gemm_weight_grad = bool(
            getattr(self.args, "cpu_gemm_weight_grad", False) and self.args.bf16
            and self.args.device.type == "cpu" and not self.args.torch_compile
            and not self.args.activation_checkpointing and gemm_weight_grad_helps()
        )
        if self.gemm_weight_grad:
            logger.info("CPU bf16: small-map convolution weight gradients by GEMM (--cpu_gemm_weight_grad).")

    def _set_tensorboard_dir(self) -> None:
        """TensorBoard logs under `<output_dir>/runs/<date>_<host>`, the Trainer's own choice at
        `on_train_begin`, also for validations logged before training starts (the callback would
        otherwise open its writer in `./runs` of the working directory)."""
        from transformers.integrations import TensorBoardCallback
        from transformers.integrations.integration_utils import default_logdir

        for callback in self.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
                callback.logging_dir = os.path.join(self.args.output_dir, default_logdir())

    # -- data --------------------------------------------------------------------------------

    def get_train_dataloader(self):
        from ..data.stream import IdentityBatchStream

        if not isinstance(self.train_dataset, IdentityBatchStream):
            return super().get_train_dataloader()
        return self._stream_dataloader()

    def _stream_dataloader(self) -> torch.utils.data.DataLoader:
        """The batches of a streamed Hub dataset: this process's part of the stream, batched P x K by
        `IdentityBatchStream` (`batch_size=None`), continued from the checkpoint's stream state on a
        resume. Not passed through `accelerator.prepare`, which would shard the stream a second time
        (or dispatch one process's batches to all); the Trainer moves each batch to the device."""
        from ..data.stream import load_stream_state

        if getattr(self, "_train_stream", None) is None:
            self._train_stream = self.train_dataset.for_process(self.args.process_index, self.args.world_size,
                                                                self.args.seed)
            checkpoint = self.args.resume_from_checkpoint
            if isinstance(checkpoint, str) and checkpoint:
                self._train_stream.load_state_dict(*load_stream_state(checkpoint, self.args.process_index))
        # Its own generator: a DataLoader's iterator draws a base seed when created, which from the global
        # RNG would shift the draws of a resumed run (the Trainer restores the RNG before creating it).
        return torch.utils.data.DataLoader(self._train_stream, batch_size=None, collate_fn=self.data_collator,
                                           num_workers=0, pin_memory=self.args.dataloader_pin_memory,
                                           generator=torch.Generator().manual_seed(self.args.seed))

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        stream = getattr(self, "_train_stream", None)
        if stream is None:
            return
        from ..data.stream import save_stream_state

        # The loader reads no batch ahead (no workers, not prepared): the stream's state is the one after
        # the batches the steps so far consumed, which this asserts.
        consumed = self.state.global_step * self.args.gradient_accumulation_steps
        if stream.batches_emitted != consumed:
            raise RuntimeError(f"the stream emitted {stream.batches_emitted} batches by step {self.state.global_step}, "
                               f"expected {consumed}: its saved state would not continue the run exactly.")
        save_stream_state(stream, output_dir, self.args.process_index)

    def _get_train_sampler(self, train_dataset=None):
        if self.samples_per_class is None:
            return super()._get_train_sampler(train_dataset)
        from ..data.sampler import MPerClassSampler

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return MPerClassSampler(
            # A numpy column: no Python int per image (millions for a RecordIO pack or a Hub dataset).
            dataset.with_format("numpy")["label"][:] if hasattr(dataset, "with_format") else dataset["label"],
            m=self.samples_per_class,
            batch_size=self.args.per_device_train_batch_size,
            seed=self.args.seed,
        )

    # -- optimisation ------------------------------------------------------------------------

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        milestones = getattr(self.args, "lr_milestones", None)
        if not milestones or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer if optimizer is not None else self.optimizer
        steps_per_epoch = max(1, math.ceil(num_training_steps / max(self.args.num_train_epochs, 1e-9)))
        if self.args.max_steps and self.args.max_steps > 0 and self.train_dataset is not None:
            steps_per_epoch = max(1, len(self.get_train_dataloader()) // self.args.gradient_accumulation_steps)
        step_milestones = sorted(int(round(m * steps_per_epoch)) for m in milestones)
        self.lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=step_milestones, gamma=0.1)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def _prepare_step_inputs(self, inputs: dict[str, torch.Tensor], training: bool) -> dict[str, torch.Tensor]:
        """The augmentation and the LR copies of uint8 batches (`device_transform`), or the flip of
        batches the loader made, here on the training device.

        Every draw is made here rather than in the data loader: on a resume the Trainer restores the
        checkpoint's RNG state only after fetching the first batch, so a loader-side draw would make
        a resumed run differ from an uninterrupted one (flipping commutes with the LR simulation).
        """
        inputs = dict(inputs)
        if self.device_transform is not None and inputs["pixel_values"].dtype == torch.uint8:
            inputs.update(self.device_transform.model_inputs(inputs["pixel_values"]))
        elif self.random_flip and training:
            flips = draw_flips(inputs["pixel_values"].shape[0])  # one draw for HR and LR alike
            for name in ("pixel_values", "low_resolution_pixel_values"):
                if inputs.get(name) is not None:
                    inputs[name] = apply_flips(inputs[name], flips)
        return inputs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if inputs.get("labels") is not None and inputs["labels"].numel() == 0:  # nothing decoded (`collate_batch`)
            return self._skipped_batch_loss(model, return_outputs)
        inputs = self._prepare_step_inputs(inputs, model.training)
        with gemm_weight_grad() if self.gemm_weight_grad and model.training else contextlib.nullcontext():
            outputs = self.forward_step(model, inputs)
        loss = outputs["loss"]
        if model.training:
            self.guard.record_loss(loss, self.state.global_step + 1)  # checked before any save, without a sync here
            for name in ("cross_entropy_loss", "center_loss", "coupling_loss"):
                value = outputs.get(name)
                if value is not None:
                    total = self._loss_terms.get(name)
                    self._loss_terms[name] = value.detach() if total is None else total + value.detach()
            self._loss_term_count += 1
        return (loss, outputs) if return_outputs else loss

    def forward_step(self, model, inputs: dict[str, torch.Tensor]):
        """The model's outputs (`loss` and its terms) on a prepared batch (`_prepare_step_inputs`)."""
        if self.miner is not None:
            inputs["miner"] = self.miner
        return model(**inputs)

    def _skipped_batch_loss(self, model, return_outputs: bool):
        """A zero loss over every trainable parameter: the step changes no gradient, and under DDP
        every process still takes part in the gradient all-reduce."""
        logger.warning(f"Step {self.state.global_step + 1}: no image of this batch could be decoded; the batch is skipped.")
        loss = sum(parameter.sum() for parameter in model.parameters() if parameter.requires_grad) * 0.0
        return (loss, None) if return_outputs else loss

    # -- the divergence guard -------------------------------------------------------------------

    def check_finite(self, model=None) -> None:
        """Raise a `TrainingDivergedError` if a loss since the start, or the model, is not finite (every process)."""
        self.guard.check(model if model is not None else self.model, self.accelerator, self.state.global_step,
                         self.args.output_dir, self.state.epoch or 0.0)

    def _save_checkpoint(self, model, trial):
        self.check_finite(model)  # a checkpoint is never written from a non-finite model
        return super()._save_checkpoint(model, trial)

    def planned_steps(self) -> int:
        """The optimizer steps this run takes in all (the Trainer's own count, from `max_steps` or the epochs)."""
        return self.set_initial_training_values(self.args, self.get_train_dataloader())[-1]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            self.check_finite()
            self.guard.check_logged_loss(logs["loss"], self.state.global_step, self.state.log_history,
                                         self.args.learning_rate, self.args.output_dir)
        if "loss" in logs and self._loss_term_count:
            for name, total in self._loss_terms.items():
                logs[name] = round(float(total) / self._loss_term_count, 6)
            self._loss_terms, self._loss_term_count = {}, 0
        super().log(logs, start_time)

    # -- validation --------------------------------------------------------------------------

    def run_validation(self, data: Dataset | DatasetDict | None = None) -> dict[str, Any]:
        """The validation protocol on `data` (default: the run's validation data), preprocessed by
        the model's processor, exactly as `eval_hf.py` evaluates a saved folder."""
        from ..evaluation import run_protocol

        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        try:
            return run_protocol(
                self.validation_protocol,
                model,
                self.validation if data is None else data,
                sizes=self.validation_sizes,
                image_processor=self.processing_class,
                batch_size=self.args.per_device_eval_batch_size,
                accelerator=self.accelerator,
            )
        finally:
            model.train(was_training)

    def evaluate(self, eval_dataset: Dataset | DatasetDict | None = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """The face-protocol metrics of the model on `eval_dataset` (default: the run's validation
        data), logged and passed to the callbacks (early stopping, best model) as the Trainer does.

        `eval_dataset` is data of the run's protocol (`validation_protocol`): verification pairs
        (`image_a`, `image_b`, `is_same`), a `gallery` / `probe` `DatasetDict` (identification).
        `ignore_keys` (model-output keys left out of predictions) does not apply: the metrics come
        from embeddings, not from gathered predictions; giving it raises `ValueError`.
        """
        if ignore_keys is not None:
            raise DCRInputError(
                f"DCRTrainer.evaluate(ignore_keys={ignore_keys!r}): DCR validation computes face-protocol metrics "
                "from embeddings and gathers no model outputs, so there are no keys to ignore."
            )
        if eval_dataset is not None and not isinstance(eval_dataset, (Dataset, DatasetDict)):
            raise TypeError(
                f"DCRTrainer.evaluate: eval_dataset must be a datasets.Dataset or DatasetDict in the form of the "
                f"{self.validation_protocol or 'validation'} protocol, got {type(eval_dataset).__name__}."
            )
        if not self.validation_protocol:
            if eval_dataset is not None:
                raise DCRInputError("DCRTrainer.evaluate(eval_dataset=...): this run has no validation protocol "
                                    "(no validation dataset), so there is no protocol to evaluate the dataset by.")
            return {}
        from ..evaluation import summary_metrics
        from ..reports import one_line_summary

        results = self.run_validation(eval_dataset)
        self.last_validation = results
        metrics = summary_metrics(results)
        for count in ("num_pairs", "num_gallery"):
            if count in results:
                metrics[count] = float(results[count])
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()}
        self.log(metrics)
        if self.accelerator.is_main_process:
            when = {"before": "before training", "final": "final model"}.get(
                metric_key_prefix, f"epoch {self.state.epoch or 0:.2f}, step {self.state.global_step}"
            )
            of = "" if eval_dataset is None else "the given eval_dataset, "
            logger.info(f"validation ({of}{when}): {one_line_summary(results)}")
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


__all__ = [
    "DCRPrinterCallback", "DCRProgressCallback", "DCRTrainer", "NonFiniteLossError", "VALIDATION_PREFIXES", "collate_batch",
    "is_validation_log",
]
