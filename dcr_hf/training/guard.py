"""The divergence guard of a training run: nothing non-finite is saved, and a diverging loss stops the run.

Every training step folds its loss's finiteness into a flag that stays on the training device
(`record_loss`: no host sync per step). The flag is read, and the weights and buffers (class
centers, batch-norm statistics) are checked for NaN/inf, only where a decision is needed: at each
logging step (where the Trainer synchronizes anyway to log the loss), before every checkpoint is
saved, and before the final model is saved. So a checkpoint or a final folder is never written
from a model that saw a non-finite loss or holds non-finite weights, whichever came first (an update
can make the weights infinite while the loss that produced it was still finite).

The loss bound: a logged training loss (the Trainer's mean over a logging window) larger than
`divergence_factor` times the first (positive) training loss the run logged stops the run
(`--divergence_factor`, 100 by default; 0 turns the bound off). On a resume the first logged loss
is read from the restored `log_history`, so the bound is the same as in the uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors_dcr import DCRInputError
from .checkpoints import last_good_checkpoint


class TrainingDivergedError(FloatingPointError):
    """Training stopped because it diverged; nothing from the diverged model was saved. The message
    names the step and the last good checkpoint (its weights verified complete and finite)."""


class NonFiniteLossError(TrainingDivergedError):
    """A training loss was NaN or infinite."""


class NonFiniteWeightsError(TrainingDivergedError):
    """The model's weights or buffers became NaN or infinite."""


class LossDivergedError(TrainingDivergedError):
    """The logged training loss grew past `divergence_factor` times its first logged value."""


def non_finite_tensor(model: torch.nn.Module) -> str | None:
    """The name of the first floating parameter or buffer of `model` holding NaN/inf, or `None`
    (one host sync when all are finite)."""
    tensors = [(name, tensor) for name, tensor in (*model.named_parameters(), *model.named_buffers())
               if tensor.is_floating_point()]
    if not tensors or bool(torch.stack([torch.isfinite(tensor).all() for _, tensor in tensors]).all()):
        return None
    return next(name for name, tensor in tensors if not bool(torch.isfinite(tensor).all()))


def last_checkpoint_note(output_dir: str | Path, before_step: int | None = None) -> str:
    """'The last good checkpoint is ...' for an error message; only a checkpoint whose weights load
    completely and are finite is named."""
    folder = last_good_checkpoint(output_dir, before_step=before_step)
    if folder is None:
        return f"There is no good checkpoint in {output_dir} yet."
    return f"The last good checkpoint is {folder} (its weights verified complete and finite)."


class DivergenceGuard:
    """The guard of one run (see the module docstring). `divergence_factor` `None` or `0`: no loss bound."""

    def __init__(self, divergence_factor: float | None = 100.0):
        if divergence_factor is not None and not divergence_factor >= 0:
            raise DCRInputError(f"--divergence_factor must be >= 0 (0: no bound), got {divergence_factor}.")
        self.divergence_factor = divergence_factor or None
        self._bad_step: torch.Tensor | None = None  # 0-d int64: first step with a non-finite loss, -1 if none
        self._bad_loss: torch.Tensor | None = None  # 0-d float32: that loss

    def _flags(self, device: torch.device) -> None:
        if self._bad_step is None:
            self._bad_step = torch.full((), -1, dtype=torch.int64, device=device)
            self._bad_loss = torch.zeros((), dtype=torch.float32, device=device)

    def record_loss(self, loss: torch.Tensor, step: int) -> None:
        """Fold the finiteness of optimizer step `step`'s loss (a 0-d tensor) into the device flag; no sync."""
        loss = loss.detach()
        self._flags(loss.device)
        new = ~torch.isfinite(loss) & (self._bad_step < 0)
        self._bad_step = torch.where(new, step, self._bad_step)
        self._bad_loss = torch.where(new, loss.float(), self._bad_loss)

    def first_non_finite_loss(self, accelerator: Any) -> tuple[int, float] | None:
        """`(step, loss)` of the first non-finite loss of any process, or `None`; every process must call it."""
        self._flags(accelerator.device)
        pair = torch.stack([self._bad_step.double(), self._bad_loss.double()]).reshape(1, 2)
        if accelerator.num_processes > 1:
            pair = accelerator.gather(pair)
        bad = [(int(step), loss) for step, loss in pair.cpu().tolist() if step >= 0]
        return min(bad) if bad else None

    def check(self, model: torch.nn.Module, accelerator: Any, step: int, output_dir: str, epoch: float = 0.0) -> None:
        """Raise `NonFiniteLossError` / `NonFiniteWeightsError` (naming the step and the last good
        checkpoint) when a recorded loss or the weights of `model` are not finite. Call it on every
        process, before anything is saved."""
        bad = self.first_non_finite_loss(accelerator)
        if bad is not None:
            bad_step, loss = bad
            raise NonFiniteLossError(
                f"the training loss was {loss} at step {bad_step}; training stopped at step {step} (epoch {epoch:.2f}) "
                f"without saving anything trained since. {last_checkpoint_note(output_dir, before_step=bad_step)}"
            )
        name = non_finite_tensor(accelerator.unwrap_model(model))
        if name is not None:
            raise NonFiniteWeightsError(
                f"the model's {name} holds NaN/inf after step {step} (epoch {epoch:.2f}) although every loss was finite "
                f"(an update overflowed); training stopped without saving it. {last_checkpoint_note(output_dir)}"
            )

    def check_logged_loss(self, loss: float, step: int, log_history: list[dict], learning_rate: float,
                          output_dir: str) -> None:
        """Raise `LossDivergedError` when the logged `loss` exceeds `divergence_factor` times the first
        training loss in `log_history` (the module's rule)."""
        first = next(((entry["loss"], entry.get("step")) for entry in log_history if entry.get("loss", 0) > 0), None)
        if self.divergence_factor is None or first is None:
            return
        if loss > self.divergence_factor * first[0]:
            raise LossDivergedError(
                f"the training loss grew to {loss:.4g} at step {step}, more than --divergence_factor "
                f"{self.divergence_factor:g} times its first logged value {first[0]:.4g} (step {first[1]}): training "
                f"diverged (is --learning_rate {learning_rate:g} too high?) and stopped without saving anything from "
                f"it. {last_checkpoint_note(output_dir)}"
            )


__all__ = [
    "DivergenceGuard",
    "LossDivergedError",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "TrainingDivergedError",
    "last_checkpoint_note",
    "non_finite_tensor",
]
