"""`PartialFCTrainer`: `DCRTrainer` training a trunk (`DCRModel`) with the sharded classifier
(`partial_fc.ShardedClassifier`), `--partial_fc`.

The shard lives beside the model, not in it: the data-parallel wrapper would average its
gradients and broadcast rank 0's rows over the others, and the saved model is the trunk alone
(`DCRModel.save_pretrained`, loadable as `AutoModel` and by the pipeline, as every DCR folder).
The shard's parameters are a group of the Trainer's optimizer (so the learning-rate schedule and
weight decay apply to them); gradient clipping (`--max_grad_norm`) covers the trunk only, as in
insightface (a norm over each process's own rows would clip every process differently).

Each process writes its rows, centers and their optimizer state into every checkpoint as
`partial_fc_rank{R}_of_{W}.pt`; a resume needs the same number of processes (`check_shard_files`).
The checkpoint folder must be on storage every node sees (as the Trainer's resume needs anyway).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.utils import logging

from ..errors_dcr import DCRFileNotFoundError, DCRInputError
from .partial_fc import ShardedClassifier
from .trainer import DCRTrainer

logger = logging.get_logger(__name__)

SHARD_FILE = "partial_fc_rank{rank}_of_{world_size}.pt"
_SHARD_PATTERN = re.compile(r"^partial_fc_rank(\d+)_of_(\d+)\.pt$")


def check_shard_files(checkpoint: str | Path, world_size: int) -> None:
    """Refuse, in one line, a checkpoint whose classifier shards do not match `world_size` processes."""
    checkpoint = Path(checkpoint)
    found = [_SHARD_PATTERN.match(path.name) for path in checkpoint.glob("partial_fc_rank*_of_*.pt")]
    layouts = sorted({int(match.group(2)) for match in found if match})
    if not layouts:
        raise DCRFileNotFoundError(
            f"--resume_from_checkpoint {checkpoint}: no sharded classifier (partial_fc_rank*_of_*.pt) in it; "
            "it was not saved by a --partial_fc run."
        )
    if layouts != [world_size]:
        saved = ", ".join(str(n) for n in layouts)
        raise DCRInputError(
            f"--resume_from_checkpoint {checkpoint}: its classifier is sharded over {saved} processes, this run has "
            f"{world_size}; resume with {saved} processes."
        )
    for rank in range(world_size):
        path = checkpoint / SHARD_FILE.format(rank=rank, world_size=world_size)
        if not path.is_file():
            raise DCRFileNotFoundError(f"--resume_from_checkpoint {checkpoint}: {path.name} is missing (process {rank}'s rows).")


def _stacked_copies(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """`[batch, resolutions, C, H, W]`: the HR images and their LR copies (as `DCRForImageClassification` stacks them)."""
    pixel_values, low = inputs["pixel_values"], inputs.get("low_resolution_pixel_values")
    if pixel_values.ndim == 4:
        pixel_values = pixel_values.unsqueeze(1)
    if low is None:
        return pixel_values
    return torch.cat([pixel_values, low.unsqueeze(1) if low.ndim == 4 else low], dim=1)


class _ClearShardGradients(TrainerCallback):
    """The shard's gradients cleared after every optimizer step, as the Trainer clears the model's."""

    def __init__(self, shard: ShardedClassifier):
        self.shard = shard

    def on_step_end(self, args, state, control, **kwargs):
        self.shard.zero_grad(set_to_none=True)


class PartialFCTrainer(DCRTrainer):
    """`DCRTrainer` whose model is a `DCRModel` trunk and whose classifier and centers are this
    process's shard (`shard`), sampled at `partial_fc_rate`."""

    def __init__(self, *args, partial_fc_rate: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        config = self.model.config
        self.shard = ShardedClassifier(
            config, config.embedding_size, sample_rate=partial_fc_rate, rank=self.args.process_index,
            world_size=self.args.world_size, seed=self.args.seed,
        ).to(self.args.device)
        self.add_callback(_ClearShardGradients(self.shard))

    def forward_step(self, model, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        embeddings = model(_stacked_copies(inputs)).trunk_embeddings
        terms = self.shard.loss_terms(embeddings, inputs["labels"], move_centers=model.training)
        return {"loss": sum(terms.values()), "embeddings": embeddings, **terms}

    def _skipped_batch_loss(self, model, return_outputs: bool):
        """A batch with no decodable image still takes part in the other processes' all-gathers
        (with no rows), so their step goes on; its gradients are zero (`DCRTrainer`'s skip)."""
        if self.args.world_size == 1:
            return super()._skipped_batch_loss(model, return_outputs)
        logger.warning(f"Step {self.state.global_step + 1}: no image of this batch could be decoded; the batch is skipped.")
        zero = sum(parameter.sum() for parameter in model.parameters() if parameter.requires_grad) * 0.0
        # No rows, but tied to the trunk's parameters: their (zero) gradients come after the all-gather's
        # backward, in the order of the other processes' steps.
        no_rows = zero * zero.new_zeros(0, 1, self.shard.weight.shape[1])
        labels = torch.zeros(0, dtype=torch.long, device=zero.device)
        terms = self.shard.loss_terms(no_rows, labels, move_centers=model.training)
        loss = sum(terms.values()) + zero
        return (loss, None) if return_outputs else loss

    # -- the shard in the optimizer and the checkpoints ---------------------------------------

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if id(self.shard.weight) not in held:
            optimizer.add_param_group({"params": [self.shard.weight], "weight_decay": self.args.weight_decay})
            if self.shard.bias is not None:
                optimizer.add_param_group({"params": [self.shard.bias], "weight_decay": 0.0})
        return optimizer

    def _shard_parameters(self) -> dict[str, torch.nn.Parameter]:
        return {name: parameter for name, parameter in self.shard.named_parameters()}

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        os.makedirs(output_dir, exist_ok=True)  # process 0 may not have made the folder yet
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
        state = {
            "rows": torch.tensor([self.shard.class_start, self.shard.num_local]),
            "centers": self.shard.centers.detach().cpu(),
            **{name: p.detach().cpu() for name, p in self._shard_parameters().items()},
            "optimizer": {name: {key: value.cpu() if torch.is_tensor(value) else value
                                 for key, value in optimizer.state.get(p, {}).items()}
                          for name, p in self._shard_parameters().items()},
        }
        name = SHARD_FILE.format(rank=self.args.process_index, world_size=self.args.world_size)
        torch.save(state, os.path.join(output_dir, name))
        # Process 0 writes trainer_state.json after this: a checkpoint that has it has every shard.
        self.accelerator.wait_for_everyone()

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        check_shard_files(checkpoint, self.args.world_size)
        path = Path(checkpoint) / SHARD_FILE.format(rank=self.args.process_index, world_size=self.args.world_size)
        state = torch.load(path, map_location="cpu", weights_only=True)
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
        with torch.no_grad():
            self.shard.centers.copy_(state["centers"])
            for name, parameter in self._shard_parameters().items():
                parameter.copy_(state[name])
                # optimizer.pt is process 0's: its entries for the shard are process 0's rows, replaced here.
                optimizer.state[parameter] = {
                    key: value.to(parameter.device) if torch.is_tensor(value) and value.ndim else value
                    for key, value in state["optimizer"][name].items()
                }


__all__ = ["PartialFCTrainer", "SHARD_FILE", "check_shard_files"]
