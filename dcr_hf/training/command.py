"""The training command line: `train_hf.py` and the `dcr-train` console command run this module.

    dcr-train                                          # trunk on synthetic faces (CPU quickstart)
    dcr-train --stage branch --trunk outputs/dcr-trunk
    accelerate launch train_hf.py --dataset casia --data_root /data --architecture dcr ...

`--help` lists DCR's options (model, data, training) and points to the Trainer's; `--help_all`
lists every `TrainingArguments` option as well. Usage errors (bad values, missing or broken files
and models, an `--output_dir` holding a finished run or in use by a live run) end with an argparse-style one-line error and
exit status 2; a run stopped by the divergence guard, or a push that failed after the folder was
saved, with one error line and exit status 1 (`dcr_hf.cli`; `--debug` shows the traceback). SIGINT
(Ctrl-C) or SIGTERM during training stops at the end of the step under way, saves a checkpoint
(`--save_on_interrupt`, default on) and ends with one line naming it and the command that resumes
the run, exit status 130 / 143 (`interrupt`); a second signal stops at once.

A run reads top to bottom, each module left once (`train`):

1. `parse_arguments`: the command line, parsed once into `arguments.ModelArguments`,
   `DataArguments` and `DCRTrainingArguments` (argparse's types and choices, `TrainingArguments`'
   own checks; `--bf16` with no accelerator sets `use_cpu`);
2. `configure_logging`;
3. `plan.plan_training`: every option checked once, in one line, before any data is read or any
   model is built; the `TrainingPlan`: the model's complete `DCRConfig` (which validates its own
   fields), the processor, the `DataSpec` and the completed `TrainingArguments`. The argument
   dataclasses go no further;
4. `run.run_training(plan)`: the output folder's lock (`lock.RunLock`, main process, to the end),
   data (`load_training_data(plan.data)`), model
   (`model.build_model(plan, ...)`), `trainer.DCRTrainer`, train, validate, save, card, push.

One option's path, `--degradation jpeg`: `ModelArguments.degradation` (the string) ->
`plan.plan_training` (refused for a dataset of real LR images; `degradation.resolve_degradation`
reads the preset or JSON file and checks it, the one place) -> `plan.config.degradation` (saved in
config.json) -> `run.train_transform` (`degradation_for(config.degradation)`, the LR copies of every
training batch). `--low_resolution_sizes 8 12` -> `plan.new_trunk_config` -> `DCRConfig` (the one
check) -> `plan.config.low_resolution_sizes` -> the training transform and the validation sizes
(`plan.data.validation_sizes`); for `--trunk` / `--init_from` it must equal the model's
(`plan.stage_config`). The plan module lists where every option is checked.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser, TrainingArguments

from ..cli import DEBUG_HELP, reported_errors, split_debug_flag
from .arguments import DataArguments, DCRTrainingArguments, ModelArguments, UNSUPPORTED_TRAINER_OPTIONS

logger = logging.getLogger(__name__)

TRAINER_GROUP = "Trainer options (transformers.TrainingArguments)"
_TRAINER_POINTER = (
    "Every other option of transformers.TrainingArguments is accepted as well (--bf16, --fp16, "
    "--gradient_accumulation_steps, --gradient_checkpointing, --torch_compile, --resume_from_checkpoint, "
    "--push_to_hub, --hub_model_id, --optim, --weight_decay, --lr_scheduler_type, --warmup_steps, ...); "
    "--help_all lists all {count} of them."
)


def _trainer_only_fields() -> set[str]:
    """`TrainingArguments` fields that DCR neither redefines nor refuses (shown by `--help_all` only)."""
    own = set(DCRTrainingArguments.__annotations__)
    return {f.name for f in dataclasses.fields(TrainingArguments)} - own


class _HelpAll(argparse.Action):
    """`--help_all`: the help with every `TrainingArguments` option, then exit."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        build_parser(show_all=True, prog=parser.prog).print_help()
        parser.exit()


def build_parser(show_all: bool = False, prog: str | None = None) -> HfArgumentParser:
    """The parser of the three argument dataclasses, grouped: DCR model, data, DCR training options,
    then the Trainer's other options (their help only with `show_all`, i.e. `--help_all`)."""
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, DCRTrainingArguments),
        prog=prog,
        usage="%(prog)s [DCR options] [Trainer options]",
        description="Train a DCR model (trunk, branch or fine-tune stage) on the transformers Trainer.",
        epilog=DEBUG_HELP,
    )
    training_group = next(g for g in parser._action_groups if g.title == DCRTrainingArguments._argument_group_name)
    hidden = _trainer_only_fields() | set(UNSUPPORTED_TRAINER_OPTIONS)
    count = len(_trainer_only_fields())
    trainer_group = parser.add_argument_group(TRAINER_GROUP, None if show_all else _TRAINER_POINTER.format(count=count))
    # HfArgumentParser puts every field of a dataclass in its group; the Trainer's own ones move to theirs.
    for action in list(training_group._group_actions):
        if action.dest in hidden:
            training_group._group_actions.remove(action)
            trainer_group._group_actions.append(action)
            if not show_all or action.dest in UNSUPPORTED_TRAINER_OPTIONS:
                action.help = argparse.SUPPRESS
    # The `--no_X` of a true-by-default flag repeats X's help: listed by `--help_all` only (X takes `false`).
    for action in parser._actions:
        if isinstance(action, argparse._StoreFalseAction) and action.help not in (None, argparse.SUPPRESS):
            action.help = f"The same as --{action.dest} false." if show_all else argparse.SUPPRESS
    parser.add_argument("--help_all", action=_HelpAll, help="Show every option, the Trainer's included, and exit.")
    return parser


def check_trainer_options(parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> None:
    """Refuse, with a one-line usage error, the Trainer options a DCR run does not use."""
    defaults = {
        f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
        for f in dataclasses.fields(DCRTrainingArguments)
    }
    for name, reason in UNSUPPORTED_TRAINER_OPTIONS.items():
        if getattr(namespace, name, defaults[name]) != defaults[name]:
            parser.error(f"--{name} is not supported by DCR training: {reason}")


def parse_arguments(
    argv: Sequence[str] | None = None, parser: HfArgumentParser | None = None
) -> tuple[ModelArguments, DataArguments, DCRTrainingArguments]:
    """The three argument dataclasses of a command line; usage errors exit with status 2."""
    parser = parser or build_parser()
    namespace = parser.parse_args(argv)
    check_trainer_options(parser, namespace)
    try:
        return parser.parse_dict(vars(namespace))
    except ValueError as error:  # TrainingArguments' own checks (__post_init__)
        parser.error(str(error))


class _StdoutHandler(logging.StreamHandler):
    """A handler that writes to `sys.stdout` as it is when a record is emitted: a caller that
    redirected stdout for one run (and closed it since) does not break later messages."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property always follows sys.stdout
        pass


def configure_logging(training_args: DCRTrainingArguments) -> None:
    """Logging as in the transformers examples: dcr_hf's messages (validation lines, where the model
    was saved) at INFO on the main process, transformers and datasets at the process's log level."""
    package = logging.getLogger(__name__.split(".")[0])
    # One handler however often a process trains, on the stdout of the moment (a caller may redirect it).
    for earlier in [h for h in package.handlers if getattr(h, "_dcr_hf", False)]:
        package.removeHandler(earlier)
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(name)s - %(message)s", "%m/%d/%Y %H:%M:%S"))
    handler._dcr_hf = True
    package.addHandler(handler)
    package.setLevel(logging.INFO if training_args.should_log else logging.WARNING)
    import datasets
    import transformers

    log_level = training_args.get_process_log_level()
    transformers.utils.logging.set_verbosity(log_level)
    datasets.utils.logging.set_verbosity(log_level)


def train(argv: Sequence[str] | None = None, parser: HfArgumentParser | None = None,
          callbacks: list | None = None) -> dict[str, Any]:
    """Parse a command line, plan the run (every option checked) and train; returns `run_training`'s
    result (bad arguments raise `ValueError` / `OSError` before any data is read). `callbacks`:
    more `TrainerCallback`s for the run (a script embedding the command). A run stopped by SIGINT /
    SIGTERM (or Ctrl-C outside training) raises `interrupt.TrainingInterrupted`, naming the
    checkpoint kept and the command that resumes it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    model_args, data_args, training_args = parse_arguments(argv, parser)
    # Imported once the command line is parsed: `--help` needs only the argument dataclasses.
    from .interrupt import TrainingInterrupted
    from .plan import plan_training
    from .run import run_training

    configure_logging(training_args)
    plan = plan_training(model_args, data_args, training_args)
    try:
        result = run_training(plan, callbacks=callbacks)
    except KeyboardInterrupt as interruption:
        if not isinstance(interruption, TrainingInterrupted):  # Ctrl-C outside training (data, validation)
            interruption = TrainingInterrupted(signal.SIGINT, training_args.output_dir)
        interruption.resume_command = resume_command(argv, (parser or build_parser()).prog)
        raise interruption from None
    if result.get("finished"):
        logger.info(result["finished"])
        return result
    if result.get("table") and training_args.should_log:
        print(f"\nValidation on {result['validation_name']} data:\n{result['table']}")
    if result.get("pushed"):
        logger.info(f"Pushed {result['output_dir']} to {result['hub_model_id']}")
    return result


def resume_command(argv: Sequence[str], prog: str) -> str:
    """The command line that resumes `argv`: the same options with `--resume_from_checkpoint last`
    (any other `--resume_from_checkpoint` value dropped); `python train_hf.py ...` for a script,
    `dcr-train ...` for the console command."""
    kept, skip = [], False
    for index, argument in enumerate(argv):
        if skip:
            skip = False
            continue
        if argument == "--resume_from_checkpoint":
            skip = index + 1 < len(argv) and not argv[index + 1].startswith("--")
            continue
        if not argument.startswith("--resume_from_checkpoint="):
            kept.append(argument)
    script = sys.argv[0] if Path(sys.argv[0]).name == prog else prog
    command = ["python", script] if prog.endswith(".py") else [prog]
    return shlex.join([*command, *kept, "--resume_from_checkpoint", "last"])


def main(argv: Sequence[str] | None = None, callbacks: list | None = None) -> None:
    """Console entry point (`dcr-train`, `train_hf.py`); `callbacks` as in `train`."""
    argv, debug = split_debug_flag(argv)
    parser = build_parser()
    with reported_errors(parser, debug):
        train(argv, parser, callbacks=callbacks)


__all__ = ["build_parser", "check_trainer_options", "configure_logging", "main", "parse_arguments", "resume_command", "train"]
