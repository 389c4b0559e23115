"""Subprocess entry point for `tests/test_training.py`: one training run through `run_training`, parsed as `train_hf.py` parses.

    python tests/training_worker.py [--kill_at_step N] [--pause_at_step N] [--save_rank_state_to DIR] -- <train_hf.py arguments>

`--kill_at_step N` SIGKILLs the process at the end of optimizer step N (an interrupted run: no
clean-up, nothing flushed). `--pause_at_step N` holds the run at the end of step N, after writing
`--output_dir/paused-at-N` (`paused-at-N-rankR` under `torchrun`), until the test deletes that file (so that a signal the test sends
arrives during step N, whatever the machine's speed); the run goes through the command
(`dcr_hf.training.command.train` in `dcr_hf.cli.reported_errors`, as `train_hf.py`), so its
last line and exit status are the command's. `--save_rank_state_to DIR` writes, on every process, the final
`state_dict()` (weights and `centers`) plus the final validation results to `DIR/rank{N}.pt`; run it
under `torchrun` to check that the processes agree.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dcr_hf.training import plan_training, run_training  # noqa: E402
from dcr_hf.cli import reported_errors  # noqa: E402
from dcr_hf.training.command import build_parser, parse_arguments, train  # noqa: E402


class KillAtStep(TrainerCallback):
    """SIGKILL this process once optimizer step `step` has finished (before it could be saved)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class PauseAtStep(TrainerCallback):
    """Hold the run at the end of optimizer step `step` until the marker file it writes is deleted."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step != self.step:
            return
        rank = f"-rank{os.environ['RANK']}" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        marker = Path(args.output_dir) / f"paused-at-{self.step}{rank}"
        marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


class KeepModel(TrainerCallback):
    """Remember the trained model the Trainer hands to `on_train_end`."""

    model = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.model = model


def main() -> None:
    worker = argparse.ArgumentParser()
    worker.add_argument("--kill_at_step", type=int)
    worker.add_argument("--pause_at_step", type=int)
    worker.add_argument("--save_rank_state_to")
    own, training = worker.parse_known_args()
    if training[:1] == ["--"]:
        training = training[1:]
    if own.pause_at_step is not None:
        parser = build_parser(prog="train_hf.py")
        with reported_errors(parser):
            train(training, parser, callbacks=[PauseAtStep(own.pause_at_step)])
        return
    model_args, data_args, training_args = parse_arguments(training)
    keep = KeepModel()
    callbacks = [keep]
    if own.kill_at_step is not None:
        callbacks.append(KillAtStep(own.kill_at_step))
    result = run_training(plan_training(model_args, data_args, training_args), callbacks=callbacks)
    if own.save_rank_state_to:
        rank = int(os.environ.get("RANK", "0"))
        after = result["after"] or {}
        torch.save(
            {
                "world_size": int(os.environ.get("WORLD_SIZE", "1")),
                "state_dict": {k: v.detach().cpu().clone() for k, v in keep.model.state_dict().items()},
                "results": {key: value for key, value in after.items() if key != "curves"},
            },
            Path(own.save_rank_state_to) / f"rank{rank}.pt",
        )


if __name__ == "__main__":
    main()
