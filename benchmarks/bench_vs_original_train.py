"""End-to-end training speed against the original DCR implementation, side by side in one run.

    python benchmarks/bench_vs_original_train.py [--rounds 3] [--steps 30] [--warmup 5] [--tiny]
        [--original_repo /work/.mirror/gyfastas+CS7319E1G16/repo] [--original_python /work/orig-venv/bin/python]

Both sides train the trunk stage as their users run it, loader included, on the same CASIA-layout
JPEG folder this script writes (`DATA_ROOT/Casia/casia_cleaned_list.txt` and
`DATA_ROOT/Casia/120x120_120/<subject>/<n>.jpg`, the layout both `CasiaDataset` and
`dcr_hf.data.casia` read): 200 identities, batch 32, 2 loader workers, 120x120 faces with the four
LR copies (8/12/16/20), validation and checkpoints off.

- **original** (gyfastas/CS7319E1G16, its git HEAD copied to a temporary folder, run by the Python of
  its own venv): its `train.py` itself (`main()`: its `CasiaDataset`, transforms, `DataLoader`, DCR
  model, `TrunkLoss`, Adam, and `core.train`'s loop over `core.train_trunk`), with the shims of
  `SHIMS` (printed with the figures) so that it runs on a CPU with today's Pillow and without the
  `mkinit` package; none changes what a step computes.
- **dcr-hf** (this checkout): `train_hf.py`'s code (`parse_arguments`, `plan_training`,
  `run_training`, as `dcr_hf.training.command.train` calls them) with `--dataset casia --architecture
  dcr --use_cpu true`, float32 and then `--bf16 true`.

Each side runs in its own process, the sides alternating round after round (original, dcr-hf
float32, dcr-hf bf16, then again), so that the machine's drift touches all of them alike. A side's
rate is `batch x steps / time` from the end of its last warm-up step to the end of its last step
(the time at the end of every optimizer step, loader waits included); the figure is the median over
rounds. For dcr-hf the step-only rate is also measured (each Trainer step from `on_step_begin` to
`on_step_end`, which excludes the wait for the next batch): the ratio end-to-end / step-only says
how much of the time the step waits for the loader (>= 90%: the loader is not the bottleneck).

Not the same work, as each project defines it: the original's classifier has 10,575 rows (its
`CasiaDataset` fixes the CASIA subject count; under 1% of a step's flops) where dcr-hf's has the 200
identities present; the original applies the flip per resolution copy in the loader and Adam,
dcr-hf flips each sample once in the step and trains with AdamW; torch versions differ (each venv's).

`--tiny` (2 steps after 1 warm-up, batch 8, one round, 2 images per identity) checks that the
script runs; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _limits import describe_machine, smooth_face_jpeg  # noqa: E402
from _timing import print_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ORIGINAL_REPO = Path("/work/.mirror/gyfastas+CS7319E1G16/repo")
ORIGINAL_PYTHON = Path("/work/orig-venv/bin/python")
NUM_IDENTITIES, FIRST_SUBJECT = 200, 2000
# The original's CasiaDataset keeps for training the subjects outside its validation fold
# (`--subset 0`: ids below 1057.5 are held out), so the benchmark's subjects start at 2000.

#: The original's files patched in the temporary copy: (file, text, replacement, why). Each text must
#: be found exactly once, so a change upstream stops the script instead of silently running another patch.
FILE_SHIMS = [
    ("config.py", "parser.add_argument('--gpu', default=0, type=int,", "parser.add_argument('--gpu', default=None, type=int,",
     "--gpu defaults to GPU 0; None is the original's own CPU path (train_trunk skips .cuda() when gpu is None)"),
    ("utils/monitor.py", "from torch._six import inf", "from math import inf",
     "torch 2 removed torch._six; its inf was math.inf"),
    ("train.py", 'raise NotImplementedError("Only CUDA or DistributedDataParallel is supported.")',
     "pass  # bench shim: on a CPU the model and loss stay where they are (train_trunk skips .cuda() when gpu is None)",
     "train.py refuses to run without CUDA; with args.gpu None its step already runs on the CPU"),
]
#: What the driver does around `train.main()` (listed with the figures).
DRIVER_SHIMS = [
    ("PIL.Image.ANTIALIAS = PIL.Image.LANCZOS",
     "Pillow 10 removed the ANTIALIAS name; it was an alias of LANCZOS, the same filter"),
    ("mkinit stand-in: `from .<module> import *` for every module of utils/",
     "utils/__init__.py builds its namespace with the mkinit package, absent from the venv"),
    ("core.val -> returns 0.0 (no validation)",
     "its evaluation gathers results on 'cuda'; validation is off in both runs"),
    ("core.train_trunk wrapped: the time after each step, stop after warm-up + steps",
     "the measurement; the step itself is the original's"),
]

MKINIT_STANDIN = '''"""Stand-in for mkinit's dynamic_init (benchmark shim): import every module of the package."""
import pkgutil
import sys


def dynamic_init(modname):
    package = sys.modules[modname]
    names = sorted(info.name for info in pkgutil.iter_modules(package.__path__))
    return "\\n".join(f"from .{name} import *" for name in names)
'''

ORIGINAL_DRIVER = '''"""Run the original train.py (trunk stage) and record the time at the end of every step."""
import json
import sys
import time

import PIL.Image

PIL.Image.ANTIALIAS = PIL.Image.LANCZOS

import core
import train


class Done(Exception):
    pass


settings = json.loads(sys.argv[1])
times = []
step = core.train_trunk


def timed_step(*args, **kwargs):
    step(*args, **kwargs)
    times.append(time.perf_counter())
    if len(times) >= settings["steps"]:
        raise Done


core.train_trunk = timed_step
core.val = lambda *args, **kwargs: 0.0
sys.argv = ["train.py", *settings["argv"]]
try:
    train.main()
except Done:
    pass
with open(settings["output"], "w") as handle:
    json.dump({"end": times}, handle)
'''

DCR_DRIVER = '''"""Run train_hf.py's code (trunk stage) with a callback that records the time of every step."""
import json
import sys
import time

from transformers import TrainerCallback

from dcr_hf.training.command import configure_logging, parse_arguments
from dcr_hf.training.plan import plan_training
from dcr_hf.training.run import run_training


class StepTimes(TrainerCallback):
    def __init__(self):
        self.begin, self.end = [], []

    def on_step_begin(self, args, state, control, **kwargs):
        self.begin.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self.end.append(time.perf_counter())


settings = json.loads(sys.argv[1])
timer = StepTimes()
model_args, data_args, training_args = parse_arguments(settings["argv"])
configure_logging(training_args)
run_training(plan_training(model_args, data_args, training_args), callbacks=[timer])
with open(settings["output"], "w") as handle:
    json.dump({"begin": timer.begin, "end": timer.end}, handle)
'''


def write_casia(root: Path, images_per_identity: int) -> Path:
    """The CASIA layout both projects read, `NUM_IDENTITIES` subjects of 120x120 JPEG faces."""
    casia = root / "Casia"
    lines = []
    for subject in range(FIRST_SUBJECT, FIRST_SUBJECT + NUM_IDENTITIES):
        folder = casia / "120x120_120" / f"{subject:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(1, images_per_identity + 1):
            (folder / f"{index:03d}.jpg").write_bytes(smooth_face_jpeg(120, seed=subject * 1000 + index))
            lines.append(f"{subject:07d}/{index:03d}.jpg {subject}")
    (casia / "casia_cleaned_list.txt").write_text("\n".join(lines) + "\n")
    return root


def copy_original(repo: Path, destination: Path) -> list[str]:
    """The original's git HEAD in `destination`, with `FILE_SHIMS`, the mkinit stand-in and the
    driver added; returns the shims as printed lines."""
    archive = subprocess.run(["git", "-C", str(repo), "archive", "HEAD"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(destination, filter="data")
    for name, text, replacement, _ in FILE_SHIMS:
        path = destination / name
        source = path.read_text()
        if source.count(text) != 1:
            raise SystemExit(f"shim for {name} not applicable: {text!r} found {source.count(text)} times upstream.")
        path.write_text(source.replace(text, replacement))
    (destination / "mkinit.py").write_text(MKINIT_STANDIN)
    (destination / "bench_driver.py").write_text(ORIGINAL_DRIVER)
    return [f"{name}: {text!r} -> {replacement.split('  #')[0]!r} ({why})" for name, text, replacement, why in FILE_SHIMS] + [
        f"driver: {what} ({why})" for what, why in DRIVER_SHIMS
    ]


def run_original(python: Path, copy: Path, data: Path, work: Path, batch: int, workers: int, steps: int) -> dict:
    """The original's `train.py` trunk stage on `data`; the time at the end of each of `steps` steps."""
    output, run_dir = work / "original.json", Path(tempfile.mkdtemp(prefix="original-run-", dir=work))
    argv = [str(data), str(run_dir), "trunk", "-b", str(batch), "-j", str(workers), "--seed", "0", "--epochs", "1000"]
    settings = {"argv": argv, "steps": steps, "output": str(output)}
    _run([str(python), "bench_driver.py", json.dumps(settings)], cwd=copy, env={"PYTHONPATH": str(copy)})
    return json.loads(output.read_text())


def run_dcr(data: Path, work: Path, name: str, batch: int, workers: int, steps: int, extra: list[str]) -> dict:
    """`train_hf.py`'s trunk stage on `data` with `extra` options; the times each step begins and ends."""
    output, run_dir = work / f"{name}.json", Path(tempfile.mkdtemp(prefix=f"{name}-run-", dir=work)) / "out"
    argv = [
        "--output_dir", str(run_dir), "--dataset", "casia", "--data_root", str(data), "--use_cpu", "true",
        "--architecture", "dcr", "--per_device_train_batch_size", str(batch), "--dataloader_num_workers", str(workers),
        "--max_steps", str(steps), "--validation_dataset", "none", "--eval_strategy", "no", "--save_strategy", "no",
        "--load_best_model_at_end", "false", "--evaluate_before_training", "false", "--report_to", "none",
        "--disable_tqdm", "true", "--logging_steps", "1000", "--seed", "0", *extra,
    ]
    driver = work / "dcr_driver.py"
    driver.write_text(DCR_DRIVER)
    settings = {"argv": argv, "output": str(output)}
    _run([sys.executable, str(driver), json.dumps(settings)], cwd=work,
         env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    return json.loads(output.read_text())


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(command, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{command[1]} failed ({done.returncode}):\n{done.stderr[-4000:]}")


def rate(ends: list[float], warmup: int, batch: int) -> float:
    """Samples per second from the end of step `warmup` to the end of the last step."""
    timed = ends[warmup - 1:] if warmup > 0 else ends
    return batch * (len(timed) - 1) / (timed[-1] - timed[0])


def step_only_rate(begins: list[float], ends: list[float], warmup: int, batch: int) -> float:
    """Samples per second of the Trainer's steps alone (each from on_step_begin to on_step_end)."""
    spans = [end - begin for begin, end in zip(begins[warmup:], ends[warmup:])]
    return batch * len(spans) / sum(spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (the median is reported)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (loader start, allocator)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images_per_identity", type=int, default=10)
    parser.add_argument("--skip_bf16", action="store_true", help="no dcr-hf bf16 run")
    parser.add_argument("--original_repo", type=Path, default=ORIGINAL_REPO, help="git directory of gyfastas/CS7319E1G16")
    parser.add_argument("--original_python", type=Path, default=ORIGINAL_PYTHON, help="the Python of the original's venv")
    parser.add_argument("--tiny", action="store_true", help="a few steps, to check the script runs")
    args = parser.parse_args()
    if args.tiny:
        args.rounds, args.steps, args.warmup, args.batch_size, args.images_per_identity = 1, 2, 1, 8, 2
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the rate starts at the end of the last warm-up step)")
    total = args.warmup + args.steps
    sides = {"original": [], "dcr-hf float32": [], "dcr-hf bf16 (--use_cpu)": []}
    step_only = {"dcr-hf float32": [], "dcr-hf bf16 (--use_cpu)": []}
    if args.skip_bf16:
        del sides["dcr-hf bf16 (--use_cpu)"], step_only["dcr-hf bf16 (--use_cpu)"]
    with tempfile.TemporaryDirectory(prefix="bench-vs-original-") as temporary:
        work = Path(temporary)
        data = write_casia(work / "data", args.images_per_identity)
        copy = work / "original"
        shims = copy_original(args.original_repo, copy)
        for _ in range(args.rounds):
            times = run_original(args.original_python, copy, data, work, args.batch_size, args.workers, total)
            sides["original"].append(rate(times["end"], args.warmup, args.batch_size))
            for name, extra in (("dcr-hf float32", []), ("dcr-hf bf16 (--use_cpu)", ["--bf16", "true"])):
                if name not in sides:
                    continue
                times = run_dcr(data, work, name.split()[1], args.batch_size, args.workers, total, extra)
                sides[name].append(rate(times["end"], args.warmup, args.batch_size))
                step_only[name].append(step_only_rate(times["begin"], times["end"], args.warmup, args.batch_size))
    original = statistics.median(sides["original"])
    rows = []
    for name, rates in sides.items():
        median = statistics.median(rates)
        row = [name, f"{median:.2f}", " / ".join(f"{r:.2f}" for r in rates), f"{median / original:.2f}x"]
        if name in step_only:
            alone = statistics.median(step_only[name])
            row += [f"{alone:.2f}", f"{median / alone:.0%}"]
        else:
            row += ["", ""]
        rows.append(row)
    print_table(
        f"End-to-end trunk training, loader included: batch {args.batch_size}, {args.workers} workers, "
        f"{NUM_IDENTITIES} ids x {args.images_per_identity} JPEG faces 120x120 + 4 LR copies, {args.steps} steps after "
        f"{args.warmup} warm-up, median of {args.rounds} alternating rounds; {describe_machine('cpu')}",
        ["run", "samples/s", "per round", "vs original", "dcr-hf step only", "end-to-end / step only"], rows,
    )
    print("\nShims applied to the original's temporary copy (none changes what a step computes):")
    for line in shims:
        print(f"  - {line}")


if __name__ == "__main__":
    main()
