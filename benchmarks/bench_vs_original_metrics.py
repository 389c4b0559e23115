"""The metrics from embeddings side by side with the original DCR's own metric code, in one run.

    python benchmarks/bench_vs_original_metrics.py [--tiny] [--repeats 7] [--threads 2]
        [--original /work/.mirror/gyfastas+CS7319E1G16/repo] [--original_python /work/orig-venv/bin/python]

The original (`gyfastas/CS7319E1G16`) runs in its own venv, in a worker process started once, on
a copy of its `utils/` and `datasets/base_dataset.py` in a temporary folder; both sides read the
same embeddings from `.npy` files there. The two sides are timed alternately, each call timed by
the side that makes it (no transfer counted), `--repeats` times; the table shows the min and
median seconds of each and the ratio original / ours of each, and the script fails unless both
give the same numbers.

Workloads (drawn as in `bench_metrics.py`, fixed seeds):
- verification: LFW's 6000 pairs (10 folds of 300 same + 300 different), 512-d float32, one HR
  side and 4 probe sides (one per LR size). Original: `BaseDataset.evaluate_verification` (torch
  cosine, `KFold`, `find_best_threshold` on `np.arange(-1, 1, 0.005)`); ours:
  `cosine_similarity_pairs` of the HR side with the 4 probe sets in one call (`[4, 6000]`
  scores), then `verification_accuracy(threshold_grid="original")` of those `[4, 6000]` scores (one
  result per size).
- retrieval: 5000 LR queries against their 5000 HR images, 300 identities, 512-d, raw L2
  distances, each query's first neighbour dropped. Original: `AccuracyCalculator.get_accuracy(
  query, reference, labels, labels, True)` with precision@1, R-precision and MAP@R (faiss
  `IndexFlatL2`, k = the largest identity); ours: `retrieval_metrics(..., metric="l2",
  rule="original")`.

Shims applied to the temporary copy of the original (none changes what is computed):
- `utils/__init__.py` is replaced by explicit imports of the names `base_dataset.py` takes from it
  (the original builds them with `mkinit.dynamic_init`, a package not needed otherwise);
- `np.int = int` before the original's code runs (NumPy removed the alias; it was the built-in).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _limits import describe_machine  # noqa: E402
from _timing import print_table, set_threads  # noqa: E402

from dcr_hf.metrics import cosine_similarity_pairs, retrieval_metrics, verification_accuracy  # noqa: E402

ORIGINAL = Path("/work/.mirror/gyfastas+CS7319E1G16/repo")
ORIGINAL_PYTHON = Path("/work/orig-venv/bin/python")
ORIGINAL_FILES = ("utils", "datasets/base_dataset.py")
#: Seconds between the two sides' calls: the worker threads (OpenMP, OpenBLAS) of the side that just
#: ran spin for a while before they sleep, and would take the cores from the other side's timing.
PAUSE = 0.5

# Replaces the original's `utils/__init__.py` (`exec(mkinit.dynamic_init(__name__))`): the same
# names, imported explicitly.
UTILS_INIT = """from .accuracy_calculator import AccuracyCalculator
from .dist import master_only
from .eval import KFold, eval_acc, find_best_threshold
"""

# The original's side: one process, started once, answering one JSON line per request on stdin.
WORKER = r'''
import importlib.util, json, sys, time
import numpy as np
np.int = int  # shim: the alias NumPy removed (it was the built-in int)
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[3]))
import faiss
faiss.omp_set_num_threads(int(sys.argv[3]))
spec = importlib.util.spec_from_file_location("base_dataset", sys.argv[1] + "/datasets/base_dataset.py")
base_dataset = importlib.util.module_from_spec(spec)
spec.loader.exec_module(base_dataset)
from utils import AccuracyCalculator
data = {name: np.load(f"{sys.argv[2]}/{name}.npy") for name in ("hr", "probes", "is_same", "queries", "references", "labels")}

class Pairs:  # what evaluate_verification reads from `self`: the number of pairs
    def __len__(self):
        return len(data["is_same"])

def verification():
    reference = torch.from_numpy(data["hr"])
    queries = {str(i + 1): torch.from_numpy(p) for i, p in enumerate(data["probes"])}
    labels = torch.from_numpy(data["is_same"].astype(np.float32))
    metrics = base_dataset.BaseDataset.evaluate_verification(Pairs(), {k: reference for k in queries}, queries, labels)
    return {k: [float(v["acc"]), float(v["std"]), float(v["thr"])] for k, v in metrics.items() if k != "criterion"}

def retrieval():
    calculator = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"))
    found = calculator.get_accuracy(data["queries"], data["references"], data["labels"], data["labels"], True)
    return {k: float(v) for k, v in found.items()}

for line in sys.stdin:
    step = {"verification": verification, "retrieval": retrieval}[line.strip()]
    start = time.perf_counter()
    result = step()
    print(json.dumps({"seconds": time.perf_counter() - start, "result": result}), flush=True)
'''


def workloads(tiny: bool) -> dict[str, np.ndarray]:
    """The embeddings both sides read (verification: `hr`, `probes` `[sizes, pairs, dim]`, `is_same`;
    retrieval: `queries`, `references`, `labels`), as `bench_metrics.py` draws them."""
    # Full: LFW's 10 folds of 300 + 300 pairs, 5000 x 5000 x 512-d, 300 identities; tiny: 10 x (30 + 30), 500 x 500 x 64-d, 20.
    per_fold, count, identities, dim = (30, 500, 20, 64) if tiny else (300, 5000, 300, 512)
    rng = np.random.default_rng(0)
    is_same = np.tile(np.repeat([True, False], per_fold), 10)
    hr = rng.normal(size=(len(is_same), dim)).astype(np.float32)
    probes = np.stack([
        (np.where(is_same[:, None], hr, rng.normal(size=hr.shape)) + noise * rng.normal(size=hr.shape)).astype(np.float32)
        for noise in np.linspace(0.8, 2.0, 4)
    ])
    # The original's retrieval setting: reference i is query i's HR image (same identity), both
    # noisy copies of the identity's center.
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(identities, dim)).astype(np.float32)
    labels = rng.integers(0, identities, count)
    queries = (centers[labels] + 1.5 * rng.normal(size=(count, dim))).astype(np.float32)
    references = (centers[labels] + 1.5 * rng.normal(size=(count, dim))).astype(np.float32)
    return {"hr": hr, "probes": probes, "is_same": is_same, "queries": queries, "references": references, "labels": labels}


def ours_verification(data: dict[str, np.ndarray]) -> dict[str, list[float]]:
    # Every size's probes against the one HR side: `[sizes, pairs]` scores, the HR side read once,
    # and the 10-fold grid search of the sizes together.
    scores = cosine_similarity_pairs(data["hr"], data["probes"])
    results = verification_accuracy(scores, data["is_same"], threshold_grid="original")
    return {str(index + 1): [result.accuracy, result.accuracy_std, result.threshold] for index, result in enumerate(results)}


def ours_retrieval(data: dict[str, np.ndarray]) -> dict[str, float]:
    result = retrieval_metrics(data["queries"], data["labels"], data["references"], data["labels"], metric="l2", rule="original")
    return {"precision_at_1": result.precision_at_1, "r_precision": result.r_precision,
            "mean_average_precision_at_r": result.mean_average_precision_at_r}


def same_numbers(ours: dict, original: dict) -> bool:
    """Equal up to float64 rounding of the means (the original sums in another order)."""
    if ours.keys() != original.keys():
        return False
    return all(np.allclose(np.asarray(ours[key], dtype=np.float64), np.asarray(original[key], dtype=np.float64),
                           rtol=0, atol=1e-12) for key in ours)


def prepare_original(original: Path, folder: Path) -> Path:
    """A copy of the original's metric files in `folder/original`, with the `utils/__init__.py` shim."""
    target = folder / "original"
    target.mkdir()
    if (original / "utils").is_dir():  # a checkout
        for name in ORIGINAL_FILES:
            source = original / name
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if source.is_dir() else shutil.copy)(source, target / name)
    else:  # a bare mirror: its committed files
        archive = subprocess.run(["git", "-C", str(original), "archive", "HEAD", *ORIGINAL_FILES],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    (target / "utils" / "__init__.py").write_text(UTILS_INIT)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small workloads (a test that the script runs)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--original", type=Path, default=ORIGINAL, help="the original's repository (checkout or git mirror)")
    parser.add_argument("--original_python", type=Path, default=ORIGINAL_PYTHON, help="python of the original's venv")
    args = parser.parse_args()
    for path, what in ((args.original, "--original"), (args.original_python, "--original_python")):
        if not path.exists():
            sys.exit(f"{what} {path} does not exist: the side-by-side needs the original's code and its venv.")
    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data = workloads(args.tiny)
        for name, array in data.items():
            np.save(folder / f"{name}.npy", array)
        code = prepare_original(args.original, folder)
        (folder / "worker.py").write_text(WORKER)
        worker = subprocess.Popen(
            [str(args.original_python), str(folder / "worker.py"), str(code), str(folder), str(args.threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

        def original(step: str) -> tuple[float, dict]:
            worker.stdin.write(step + "\n")
            worker.stdin.flush()
            line = worker.stdout.readline()
            if not line:
                sys.exit(f"the original's worker stopped during {step} (its error is above)")
            answer = json.loads(line)
            return answer["seconds"], answer["result"]

        ours = {"verification": lambda: ours_verification(data), "retrieval": lambda: ours_retrieval(data)}
        times = {(side, step): [] for side in ("original", "ours") for step in ours}
        results: dict = {}
        try:
            for repeat in range(args.repeats + 1):  # the first round warms both sides up, not counted
                for step, run_ours in ours.items():
                    time.sleep(PAUSE)
                    seconds, results[("original", step)] = original(step)
                    time.sleep(PAUSE)
                    start = time.perf_counter()
                    results[("ours", step)] = run_ours()
                    ours_seconds = time.perf_counter() - start
                    if repeat:
                        times[("original", step)].append(seconds)
                        times[("ours", step)].append(ours_seconds)
        finally:
            worker.stdin.close()
            worker.wait()
    size = "tiny" if args.tiny else "full"
    rows, mismatches = [], []
    for step in ours:
        original_times, our_times = times[("original", step)], times[("ours", step)]
        same = same_numbers(results[("ours", step)], results[("original", step)])
        if not same:
            mismatches.append(f"{step}: ours {results[('ours', step)]} vs original {results[('original', step)]}")
        rows.append([
            step, f"{min(original_times) * 1e3:.1f} / {statistics.median(original_times) * 1e3:.1f} ms",
            f"{min(our_times) * 1e3:.2f} / {statistics.median(our_times) * 1e3:.2f} ms",
            f"{min(original_times) / min(our_times):.1f}x / {statistics.median(original_times) / statistics.median(our_times):.1f}x",
            "yes" if same else "NO",
        ])
    print_table(
        f"Metrics from embeddings ({size} workloads), the original vs dcr-hf, {args.repeats} alternating repeats: "
        f"{describe_machine()}",
        ["workload", "original min / median", "ours min / median", "ratio min / median", "same numbers"], rows,
    )
    print(json.dumps({"results": {f"{side} {step}": value for (side, step), value in results.items()}}))
    if mismatches:
        sys.exit("different numbers: " + "; ".join(mismatches))


if __name__ == "__main__":
    main()
