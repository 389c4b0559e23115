"""What a run's `--output_dir` holds: a previous run, valid checkpoints, where a resume starts.

- `check_output_dir`: an output folder holding a previous run (a model, checkpoints, a trainer
  state) is refused unless the run resumes or `--overwrite_output_dir` is given, and an output
  folder equal to, inside or around the model a stage starts from (`--trunk`, `--init_from`) is
  always refused: training would write into, or replace, that model.
- `checkpoint_problem`: why a `checkpoint-N` folder cannot be resumed from (a missing or broken
  `trainer_state.json`; model weights not complete and finite; an optimizer, scheduler, scaler or
  RNG state that does not load the way the Trainer loads it, `torch.load(..., weights_only=True)`:
  a crafted pickle is refused, never run), or `None`.
- `resolve_resume_checkpoint`: `--resume_from_checkpoint True` / `last` -> the newest valid
  checkpoint of `--output_dir` (the broken ones named and skipped); a named checkpoint that is
  broken is refused, naming the file and the previous valid checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path

from transformers.utils import logging

from ..errors_dcr import DCRFileExistsError, DCRFileNotFoundError, DCRInputError
from ..model_files import json_problem, safetensors_problem
from ..pickles import UnloadableFile, load_weights_only

logger = logging.get_logger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
#: `--resume_from_checkpoint` values meaning "the newest valid checkpoint of --output_dir".
LAST_CHECKPOINT = ("true", "last", "latest")
#: What a checkpoint needs for an exact resume (the Trainer's own file names).
REQUIRED_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
WEIGHTS = "model.safetensors"
#: What a finished or interrupted run leaves in its output folder.
RUN_FILES = ("config.json", WEIGHTS, "model.safetensors.index.json", "trainer_state.json", "training_args.bin")


def checkpoint_step(folder: Path) -> int | None:
    """N of a `checkpoint-N` folder, `None` for any other name."""
    match = CHECKPOINT_PATTERN.match(folder.name)
    return int(match.group(1)) if match else None


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir`, newest (largest N) first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [path for path in output_dir.iterdir() if path.is_dir() and checkpoint_step(path) is not None]
    return sorted(found, key=checkpoint_step, reverse=True)


def weights_problem(folder: Path) -> str | None:
    """Why `folder/model.safetensors` is not a complete file of finite weights, or `None`."""
    return safetensors_problem(folder / WEIGHTS, complete=True)


def trainer_file_problem(path: Path) -> str | None:
    """Why the Trainer could not load `path` (`optimizer.pt`, `scheduler.pt`, `scaler.pt`,
    `rng_state*.pth`) the way it does on resume, or `None`: `torch.load(..., weights_only=True)`,
    the RNG states with the numpy objects the Trainer allows (`trainer_pt_utils.safe_globals`)."""
    from transformers.trainer_pt_utils import safe_globals

    allowed = safe_globals() if path.name.startswith("rng_state") else contextlib.nullcontext()
    try:
        with allowed:
            load_weights_only(path)
    except UnloadableFile as error:
        return f"{path} {error}"
    return None


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why `folder` cannot be resumed from, naming the file; `None` for a complete checkpoint."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            return f"{folder / name} is missing"
    state = folder / "trainer_state.json"
    problem = json_problem(state)
    data = json.loads(state.read_text(encoding="utf-8")) if problem is None else None
    if problem is None and not (isinstance(data, dict) and isinstance(data.get("global_step"), int)):
        problem = f"{state} has no global_step"
    if problem:
        return problem
    for path in sorted(folder.glob("*.pt")) + sorted(folder.glob("*.pth")):
        problem = trainer_file_problem(path)
        if problem:
            return problem
    return weights_problem(folder)


def last_good_checkpoint(output_dir: str | Path, before_step: int | None = None, resumable: bool = False) -> Path | None:
    """The newest checkpoint of `output_dir` (below `before_step`) with complete, finite weights
    (`resumable=True`: every file a resume needs)."""
    check = checkpoint_problem if resumable else weights_problem
    for folder in checkpoints(output_dir):
        if before_step is not None and checkpoint_step(folder) >= before_step:
            continue
        if check(folder) is None:
            return folder
    return None


def resolve_resume_checkpoint(value: str | None, output_dir: str | Path) -> str | None:
    """The checkpoint `--resume_from_checkpoint value` resumes from, checked; `None` for no resume."""
    if value is None or str(value).strip().lower() in ("", "false", "no", "none"):
        return None
    if str(value).strip().lower() in LAST_CHECKPOINT:
        for folder in checkpoints(output_dir):
            problem = checkpoint_problem(folder)
            if problem is None:
                logger.info(f"Resuming from {folder}, the newest valid checkpoint of {output_dir}")
                return str(folder)
            logger.warning(f"Skipping {folder}: {problem}.")
        raise DCRFileNotFoundError(f"--resume_from_checkpoint {value}: {output_dir} holds no valid checkpoint-N folder.")
    folder = Path(value)
    problem = checkpoint_problem(folder)
    if problem is not None:
        step = checkpoint_step(folder)
        previous = last_good_checkpoint(folder.parent, before_step=step, resumable=True) if step is not None else None
        hint = f"the previous valid checkpoint is {previous}" if previous else f"no earlier valid checkpoint in {folder.parent}"
        raise DCRInputError(f"--resume_from_checkpoint {value}: {problem}; {hint}.")
    return str(folder)


def finished_message(checkpoint: str, output_dir: str | Path, max_steps: int) -> str | None:
    """Why resuming from `checkpoint` would train nothing (it reached `max_steps`, or early stopping
    ended its run), or `None`."""
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    control = state.get("stateful_callbacks", {}).get("TrainerControl", {}).get("args", {})
    step = int(state["global_step"])
    if step < max_steps and not control.get("should_training_stop"):
        return None
    how = f"step {step} of {max_steps}" if step >= max_steps else f"stopped early at step {step}"
    final = Path(output_dir) / WEIGHTS
    where = f"its model is {Path(output_dir)}" if final.is_file() else f"{checkpoint} holds its last model"
    return (
        f"The run resumed from {checkpoint} is finished ({how}); {where}. Nothing was trained or written: "
        "raise --max_steps / --num_train_epochs to train longer."
    )


def previous_run(output_dir: Path) -> list[str]:
    """What of a previous run `output_dir` holds (names), `[]` for a fresh folder."""
    if not output_dir.is_dir():
        return []
    held = [name for name in RUN_FILES if (output_dir / name).exists()]
    return held + [folder.name for folder in checkpoints(output_dir)][:3]


def _relation(output_dir: Path, source: Path) -> str | None:
    if output_dir == source:
        return "is"
    if source in output_dir.parents:
        return "is inside"
    if output_dir in source.parents:
        return "contains"
    return None


def check_output_dir(
    output_dir: str | Path, source: str | None, source_option: str, overwrite: bool, resuming: bool
) -> None:
    """Refuse, before any data is read, an output folder that would destroy finished work (see the module)."""
    from ..cli import check_output_path

    output_dir = Path(output_dir)
    check_output_path(output_dir, "--output_dir", "the run (checkpoints, the model, its card)")
    if source is not None and Path(source).expanduser().is_dir():
        relation = _relation(output_dir.expanduser().resolve(), Path(source).expanduser().resolve())
        if relation:
            raise DCRInputError(
                f"--output_dir {output_dir} {relation} the {source_option} folder {source}: training would write into "
                "(or replace) the model it starts from; choose another --output_dir."
            )
    held = previous_run(output_dir)
    if held and not overwrite and not resuming:
        raise DCRFileExistsError(
            f"--output_dir {output_dir} holds a previous run ({', '.join(held)}); pass --resume_from_checkpoint last to "
            "continue it, --overwrite_output_dir to replace it, or choose another --output_dir."
        )


def remove_previous_checkpoints(output_dir: str | Path) -> None:
    """With `--overwrite_output_dir`: delete the previous run's checkpoints, so that checkpoint
    rotation, best-model selection and `--resume_from_checkpoint last` never mix two runs."""
    for folder in checkpoints(output_dir):
        logger.warning(f"--overwrite_output_dir: deleting {folder} of the previous run.")
        shutil.rmtree(folder)


__all__ = [
    "LAST_CHECKPOINT",
    "check_output_dir",
    "checkpoint_problem",
    "checkpoints",
    "finished_message",
    "trainer_file_problem",
    "last_good_checkpoint",
    "previous_run",
    "remove_previous_checkpoints",
    "resolve_resume_checkpoint",
    "weights_problem",
]
