"""What a training run saves, saved so that a failed save leaves the previous state usable.

`AtomicSaves` is a `Trainer` mixin (`DCRTrainer` derives from it):

- a checkpoint: transformers' `Trainer._save_checkpoint` writes `checkpoint-N` in place, the
  weights first and `trainer_state.json` last, so a checkpoint is complete (valid for
  `checkpoints.checkpoint_problem`) only once its state is written. A save the disk refuses
  (`ENOSPC`, `EACCES`, ...) removes the partial `checkpoint-N` and ends in one line naming it and
  the newest complete checkpoint, which stays the one a resume takes;
- the final model (`save_model` of the output folder): written into a temporary folder
  (`saving.staged_folder`) and moved in file by file by rename only when complete;
- `trainer_state.json`, `*_results.json` (`save_state`, `save_metrics`): temporary name, then rename.

Every file gets the user's umask (`saving.apply_umask`: safetensors writes its files 0600).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..saving import apply_umask, atomic_path, save_failure, staged_folder, write_text_atomic
from .checkpoints import last_good_checkpoint


def kept_checkpoint(output_dir: str | Path, before_step: int | None = None) -> str:
    """What a failed save kept, in words: the newest complete checkpoint of `output_dir` (below `before_step`)."""
    kept = last_good_checkpoint(output_dir, before_step=before_step, resumable=True)
    if kept is None:
        return f"there is no complete checkpoint in {output_dir} yet"
    return f"kept {kept} (the newest complete checkpoint)"


class AtomicSaves:
    """`Trainer` saves that never leave a half-written file behind (see the module docstring)."""

    def _save_checkpoint(self, model, trial) -> None:
        step = self.state.global_step
        run_dir = Path(self._get_output_dir(trial=trial))
        folder = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        existed = folder.exists()
        try:
            super()._save_checkpoint(model, trial)
            if self.args.should_save and folder.is_dir():
                apply_umask(folder)
        except Exception as error:
            failure = save_failure(error, folder, kept_checkpoint(run_dir, before_step=step), run_dir)
            if failure is None:
                raise
            if not existed and self.args.should_save:
                shutil.rmtree(folder, ignore_errors=True)
            raise failure from error

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        # `_internal_call`: a checkpoint's weights (`_save_checkpoint` handles its folder) or a push.
        if _internal_call or not self.args.should_save:
            return super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        with staged_folder(output_dir, what=f"the model to {output_dir}", kept=kept_checkpoint(output_dir)) as staging:
            super().save_model(str(staging), _internal_call=True)
        if self.args.push_to_hub:  # as `Trainer.save_model` does for a call of the user's, now the folder is complete
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def save_state(self) -> None:
        if not self.is_world_process_zero():
            return
        with atomic_path(Path(self.args.output_dir) / "trainer_state.json") as temporary:
            self.state.save_to_json(str(temporary))

    def save_metrics(self, split: str, metrics: dict[str, Any], combined: bool = True) -> None:
        # `Trainer.save_metrics`'s files (`{split}_results.json`, `all_results.json` merged), by rename.
        if not self.is_world_process_zero():
            return
        output_dir = Path(self.args.output_dir)
        write_text_atomic(output_dir / f"{split}_results.json", json.dumps(metrics, indent=4, sort_keys=True))
        if combined:
            path = output_dir / "all_results.json"
            merged = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            merged.update(metrics)
            write_text_atomic(path, json.dumps(merged, indent=4, sort_keys=True))


__all__ = ["AtomicSaves", "kept_checkpoint"]
