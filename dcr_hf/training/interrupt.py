"""A clean stop on SIGINT (Ctrl-C) and SIGTERM: at the next step boundary, with a checkpoint to resume from.

`StopOnSignal` is a `TrainerCallback` and a context manager: `run._train_and_validate` adds it to
the Trainer and holds it around `trainer.train()`, so its signal handlers are installed for the
duration of training only and the previous ones restored after (also on an error).

- The first SIGINT or SIGTERM is only recorded (one warning line). At the end of the optimizer step
  under way every process learns it: in a distributed run the processes agree at each step boundary
  on the largest signal number any of them received (a one-integer all-reduce on a CPU `gloo`
  group: no wait for the accelerator), so all stop at the same step. With `--save_on_interrupt`
  (the default) a checkpoint of that step is saved the Trainer's own way (`control.should_save`),
  then training stops (`control.should_training_stop`, set only once the checkpoint is written, so
  the checkpoint does not record a finished run and `--resume_from_checkpoint last` continues it).
  A validation or save the schedule puts at that step still happens (so the resumed run validates
  and selects the best model exactly as an uninterrupted one); the end-of-epoch validation the
  Trainer would run after leaving an epoch early does not. A signal during the last step lets the
  run finish.
- A second signal stops at once (raising `TrainingInterrupted` from the handler): nothing more is
  saved; the newest valid checkpoint is named. One within `REPEAT_WINDOW` of the first is the same
  Ctrl-C forwarded by a launcher; under `torchrun` the launcher itself stops its workers (SIGKILL)
  when they take more than its shutdown timeout (30 s, `TORCH_ELASTIC_SHUTDOWN_TIMEOUT`) to save
  and exit.
- `raise_if_stopped` then raises `TrainingInterrupted`, before anything final is written (no final
  model, card or results): the run's lock is released on the way out, and the commands print one
  line, `PROG: interrupted at step 7 (SIGINT); saved DIR/checkpoint-7; resume with: ...`, exit
  status 128 + the signal number (130 for SIGINT, 143 for SIGTERM; `dcr_hf.cli.reported_errors`).
- Data-loader workers forked during training (a terminal's Ctrl-C reaches them too) leave the
  decision to the main process; a run started in another thread than the main one installs no
  handler (Python allows them in the main thread only).

Hand-written: transformers' Trainer has no signal handling of its own.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.utils import logging

from .checkpoints import last_good_checkpoint

logger = logging.get_logger(__name__)

#: The signals that stop a run cleanly.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds within which a repeated signal counts as the first: a launcher (`torchrun`, `accelerate
#: launch`) forwards the terminal's Ctrl-C to its workers, which the terminal has signalled too.
REPEAT_WINDOW = 1.0


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT / SIGTERM: what was kept and how to resume (see the module).

    A `KeyboardInterrupt`, so that code catching `Exception` does not swallow it. `exit_status` is
    128 + the signal number, as a shell reports a process ended by that signal. The command sets
    `resume_command` (it knows the command line); the message then ends with it.
    """

    def __init__(self, signal_number: int, output_dir: str | Path, step: int | None = None,
                 saved: str | None = None, at_once: bool = False, save_on_interrupt: bool = True):
        super().__init__(signal_number)
        self.signal_number, self.output_dir, self.step = signal_number, Path(output_dir), step
        self.saved, self.at_once, self.save_on_interrupt = saved, at_once, save_on_interrupt
        self.resume_command: str | None = None

    @property
    def exit_status(self) -> int:
        return 128 + self.signal_number

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signal_number).name

    def resumable_checkpoint(self) -> Path | None:
        """The checkpoint `--resume_from_checkpoint last` would take: the saved one, else the newest valid one."""
        return Path(self.saved) if self.saved else last_good_checkpoint(self.output_dir, resumable=True)

    def __str__(self) -> str:
        if self.at_once:
            what = f"interrupted again ({self.signal_name}) during step {self.step}: stopped at once, nothing more saved"
        elif self.step is not None:
            what = f"interrupted at step {self.step} ({self.signal_name})"
        else:
            what = f"interrupted ({self.signal_name})"
        checkpoint = self.resumable_checkpoint()
        if self.saved:
            kept = f"saved {self.saved}"
        elif checkpoint is not None:
            unsaved = " (--save_on_interrupt false)" if not self.save_on_interrupt and not self.at_once and self.step else ""
            kept = f"the last checkpoint is {checkpoint}{unsaved}"
        else:
            return f"{what}; no checkpoint was saved in {self.output_dir}, so there is nothing to resume."
        resume = f"; resume with: {self.resume_command}" if self.resume_command else ""
        return f"{what}; {kept}{resume}"


class StopOnSignal(TrainerCallback):
    """Stop training at the next step boundary on SIGINT / SIGTERM, saving a checkpoint first
    (`save=True`, `--save_on_interrupt`); see the module. Use it as a callback of the Trainer and
    as a context manager around `trainer.train()`."""

    def __init__(self, output_dir: str | Path, save: bool = True):
        self.output_dir, self.save = Path(output_dir), save
        self.received: int | None = None  # the first signal this process received
        self._received_at = 0.0
        self.stopping: int | None = None  # the signal every process agreed to stop on
        self.stopped_at: int | None = None  # the step training stopped at
        self.saved: str | None = None  # the checkpoint saved on the way
        self._pending_save = False
        self._previous: dict[int, object] = {}
        self._group = None
        self._state = None

    # -- the handlers -----------------------------------------------------------------------

    def __enter__(self) -> StopOnSignal:
        # Python delivers signals to the main thread only (and refuses handlers from another one):
        # a run started in another thread keeps the process's handlers.
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            # The agreement is a CPU collective: an NCCL one would wait for the GPU at every step.
            default_is_gloo = torch.distributed.get_backend() == "gloo"
            self._group = None if default_is_gloo else torch.distributed.new_group(backend="gloo")
            self._distributed = True
        else:
            self._distributed = False
        return self

    def __exit__(self, *exc_info) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous = {}

    def _handle(self, number: int, frame) -> None:
        if torch.utils.data.get_worker_info() is not None:
            return  # a data-loader worker forked during training (Ctrl-C reaches it too): the main process decides
        step = self._state.global_step if self._state is not None else None
        if self.received is not None:
            if time.monotonic() - self._received_at < REPEAT_WINDOW:
                return  # the same Ctrl-C, forwarded by a launcher
            raise TrainingInterrupted(number, self.output_dir, step=step, at_once=True)
        self.received, self._received_at = number, time.monotonic()
        saving = "saving a checkpoint, then " if self.save else ""
        logger.warning(f"{signal.Signals(number).name} received: {saving}stopping at the end of this step; "
                       "send it again to stop at once.")

    # -- the callback -----------------------------------------------------------------------

    def _agreed_signal(self) -> int | None:
        """The signal to stop on, the same on every process (the largest any of them received)."""
        if not self._distributed:
            return self.received
        flag = torch.tensor([self.received or 0], dtype=torch.int64)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=self._group)
        return int(flag.item()) or None

    def on_train_begin(self, args, state, control, **kwargs):
        self._state = state  # the step a second signal names

    def on_step_end(self, args, state, control, **kwargs):
        if self.stopping is not None:
            return
        number = self._agreed_signal()
        if number is None:
            return
        if state.global_step >= state.max_steps:
            self.received = None  # handled: the run was finishing anyway
            logger.warning(f"{signal.Signals(number).name} during the last step: the run finishes.")
            return
        self.stopping, self.stopped_at = number, state.global_step
        if _at_epoch_end(state):
            return  # the Trainer's end-of-epoch validation and save come first (`on_epoch_end`)
        self._stop_after_save(control)

    def _stop_after_save(self, control) -> None:
        """Save (with `save`), or keep a save the schedule makes; stop once it is written (`on_save`)."""
        if self.save:
            control.should_save = True
        if control.should_save:
            self._pending_save = True
        else:
            control.should_training_stop = True

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.stopping is None:
            return
        if self.stopped_at == state.global_step and _at_epoch_end(state) and not control.should_training_stop:
            self._stop_after_save(control)  # after the epoch's own validation, as an uninterrupted run
        else:
            # Left the epoch early: its end-of-epoch validation and save do not belong to this step.
            control.should_evaluate = control.should_save = False

    def on_save(self, args, state, control, **kwargs):
        if self._pending_save and self.stopping is not None:
            self._pending_save = False
            self.saved = str(self.output_dir / f"checkpoint-{state.global_step}")
            control.should_training_stop = True

    def raise_if_stopped(self) -> None:
        """Raise `TrainingInterrupted` when training stopped on a signal (call after `trainer.train()`)."""
        if self.stopping is not None:
            raise TrainingInterrupted(self.stopping, self.output_dir, step=self.stopped_at, saved=self.saved,
                                      save_on_interrupt=self.save)


def _at_epoch_end(state) -> bool:
    """Whether the step just ended is the last of its epoch (`state.epoch` is then a whole number)."""
    return state.epoch is not None and float(state.epoch).is_integer()


__all__ = ["REPEAT_WINDOW", "STOP_SIGNALS", "StopOnSignal", "TrainingInterrupted"]
