"""Speed of the evaluation metrics from embeddings (not a test), against this machine's own limits.

    python benchmarks/bench_metrics.py [--threads 2] [--device cpu|cuda]

Workloads (random data, fixed seeds):
- verification: 6000 LFW-sized pairs, 512-d float32 embeddings, one HR gallery side and 4 probe
  sides (one per LR size): cosine scores and the 10-fold accuracy (exact thresholds) of each size,
  as `eval_hf.py` scores a column, with and without the ROC figures; compared with the memory
  bandwidth (the cosine reads both sides once) measured here;
- exact kNN, 5000 queries x 5000 references x 512-d, k = the largest identity (R): `ExactKNN`
  (blocked products, by oneDNN on a CPU, + top-k; with `use_faiss=True` faiss' flat index as well), the bare products of torch and numpy, and faiss' `IndexFlatIP`
  (its bundled OpenBLAS with the CPU it detects, and with `OPENBLAS_CORETYPE=SkylakeX`), as
  GFLOP/s and % of the float32 GEMM peak measured here;
- retrieval metrics end to end (`retrieval_metrics`: embeddings -> precision@1, R-precision,
  MAP@R), split into its parts, and pytorch-metric-learning's `AccuracyCalculator.get_accuracy`
  on the same kNN for comparison.

Best of N repeats (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _limits import copy_gbytes_per_second, describe_machine, gemm_gflops  # noqa: E402
from _timing import best_time, percent, print_table, set_threads, synchronize  # noqa: E402

from dcr_hf.metrics import ExactKNN, cosine_similarity_pairs, retrieval_metrics, roc_metrics, verification_accuracy  # noqa: E402
from dcr_hf.metrics._checks import _as_embeddings  # noqa: E402

NUM_PAIRS, NUM_SIZES, DIM = 6000, 4, 512
NUM_QUERIES, NUM_IDENTITIES = 5000, 300

FAISS_SEARCH = """
import json, sys, time
import numpy as np
import faiss
from threadpoolctl import threadpool_info
faiss.omp_set_num_threads({threads})
rng = np.random.default_rng(0)
queries = rng.normal(size=({n}, {d})).astype(np.float32)
references = rng.normal(size=({n}, {d})).astype(np.float32)
best = 1e9
for _ in range({repeats} + 1):
    start = time.perf_counter()
    index = faiss.IndexFlatIP({d})
    index.add(references)
    index.search(queries, {k})
    best = min(best, time.perf_counter() - start)
cores = sorted({{i.get("architecture") for i in threadpool_info() if i.get("internal_api") == "openblas"}} - {{None}})
print(json.dumps({{"seconds": best, "openblas": cores}}))
"""


def verification_workload(rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """HR side `[pairs, dim]`, one probe side per size, `is_same` `[pairs]` (LFW's 10 x (300 + 300))."""
    is_same = np.tile(np.repeat([True, False], 300), 10)
    first = rng.normal(size=(NUM_PAIRS, DIM)).astype(np.float32)
    seconds = []
    for noise in np.linspace(0.8, 2.0, NUM_SIZES):
        other = np.where(is_same[:, None], first, rng.normal(size=(NUM_PAIRS, DIM)))
        seconds.append((other + noise * rng.normal(size=(NUM_PAIRS, DIM))).astype(np.float32))
    return first, seconds, is_same


def bench_verification(args, rows: list, bandwidth: float) -> None:
    rng = np.random.default_rng(0)
    first, seconds, is_same = verification_workload(rng)
    if args.device != "cpu":
        first_on, seconds_on = torch.from_numpy(first).to(args.device), [torch.from_numpy(s).to(args.device) for s in seconds]
    else:
        first_on, seconds_on = first, seconds
    scores = [cosine_similarity_pairs(first_on, second) for second in seconds_on]

    def cosine_only():
        for second in seconds_on:
            cosine_similarity_pairs(first_on, second)

    def accuracy_from_embeddings(roc: bool = False):
        for second in seconds_on:
            score = cosine_similarity_pairs(first_on, second)
            verification_accuracy(score, is_same)
            if roc:
                roc_metrics(score, is_same)

    repeats = args.repeats * 10
    cosine = best_time(cosine_only, warmup=2, repeats=repeats)
    accuracy = best_time(lambda: [verification_accuracy(s, is_same) for s in scores], warmup=2, repeats=repeats)
    total = best_time(accuracy_from_embeddings, warmup=2, repeats=repeats)
    with_roc = best_time(lambda: accuracy_from_embeddings(roc=True), warmup=2, repeats=repeats)
    grid = best_time(lambda: [verification_accuracy(s, is_same, threshold_grid="original") for s in scores],
                     warmup=2, repeats=repeats)
    read = 2 * NUM_SIZES * NUM_PAIRS * DIM * 4 / 1e9  # both sides of every size, once
    rows += [
        [f"verification from embeddings, {NUM_PAIRS} pairs x {NUM_SIZES} sizes", f"{total * 1e3:.2f} ms", ""],
        ["  cosine scores (both sides read once)", f"{cosine * 1e3:.2f} ms",
         f"{percent(read / cosine, bandwidth)} of copy bandwidth"],
        ["  10-fold accuracy, exact thresholds", f"{accuracy * 1e3:.2f} ms", ""],
        ["  + ROC, AUC, EER, TAR@FAR (an eval_hf.py column)", f"{with_roc * 1e3:.2f} ms", ""],
        ["10-fold accuracy, the original's grid", f"{grid * 1e3:.2f} ms", ""],
    ]


def retrieval_workload(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    centers = rng.normal(size=(NUM_IDENTITIES, DIM)).astype(np.float32)
    query_labels = rng.integers(0, NUM_IDENTITIES, NUM_QUERIES)
    reference_labels = rng.integers(0, NUM_IDENTITIES, NUM_QUERIES)
    queries = centers[query_labels] + 1.5 * rng.normal(size=(NUM_QUERIES, DIM)).astype(np.float32)
    references = centers[reference_labels] + 1.5 * rng.normal(size=(NUM_QUERIES, DIM)).astype(np.float32)
    return queries, query_labels, references, reference_labels


def faiss_search_seconds(k: int, threads: int, repeats: int, coretype: str | None) -> tuple[float, str] | None:
    """faiss' exact inner-product search in a fresh process (OpenBLAS reads OPENBLAS_CORETYPE when it loads)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("OPENBLAS_CORETYPE", None)
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    code = FAISS_SEARCH.format(threads=threads, n=NUM_QUERIES, d=DIM, k=k, repeats=repeats)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["seconds"], "/".join(result["openblas"])


def bench_knn_and_retrieval(args, rows: list, peak: float) -> None:
    rng = np.random.default_rng(1)
    queries, query_labels, references, reference_labels = retrieval_workload(rng)
    k = int(np.bincount(reference_labels).max())
    flops = 2 * NUM_QUERIES * NUM_QUERIES * DIM
    device = torch.device(args.device)
    tq, tr = torch.from_numpy(queries).to(device), torch.from_numpy(references).to(device)

    def timed(step):
        def run():
            step()
            synchronize(device)

        return best_time(run, warmup=1, repeats=args.repeats)

    knn = timed(lambda: ExactKNN("cosine").search(tq, tr, k))
    knn_faiss = timed(lambda: ExactKNN("cosine", use_faiss=True).search(tq, tr, k))
    torch_product = timed(lambda: tq @ tr.T)
    rows += [
        [f"exact kNN {NUM_QUERIES} x {NUM_QUERIES} x {DIM}, k={k}: ExactKNN (blocked products + top-k)", f"{knn * 1e3:.1f} ms",
         f"{flops / knn / 1e9:.0f} GFLOP/s = {percent(flops / knn / 1e9, peak)} of GEMM"],
        ["  ExactKNN(use_faiss=True): faiss' flat index on a CPU", f"{knn_faiss * 1e3:.1f} ms",
         percent(flops / knn_faiss / 1e9, peak)],
        ["  the torch product alone", f"{torch_product * 1e3:.1f} ms", percent(flops / torch_product / 1e9, peak)],
    ]
    if device.type == "cpu":
        numpy_product = best_time(lambda: queries @ references.T, warmup=1, repeats=args.repeats)
        rows.append(["  the numpy product alone", f"{numpy_product * 1e3:.1f} ms", percent(flops / numpy_product / 1e9, peak)])
        for coretype in (None, "SkylakeX"):
            found = faiss_search_seconds(k, args.threads, args.repeats, coretype)
            if found is not None:
                seconds, detected = found
                name = f"OPENBLAS_CORETYPE={coretype}" if coretype else "its own CPU detection"
                rows.append([f"  faiss IndexFlatIP, {name} (OpenBLAS {detected})", f"{seconds * 1e3:.1f} ms",
                             percent(flops / seconds / 1e9, peak)])

    total = best_time(lambda: retrieval_metrics(queries, query_labels, references, reference_labels), warmup=1,
                      repeats=args.repeats)
    paired = best_time(lambda: retrieval_metrics(queries, query_labels, references, query_labels, rule="exclude_own"),
                       warmup=1, repeats=args.repeats)
    checks = best_time(lambda: [_as_embeddings("x", x) for x in (queries, references)], repeats=args.repeats)
    rows += [
        ["retrieval_metrics, embeddings -> P@1, R-precision, MAP@R", f"{total * 1e3:.1f} ms", ""],
        ["  of which the exact kNN", f"{knn * 1e3:.1f} ms", percent(knn, total) + " of the call"],
        ["  of which copying and checking the inputs", f"{checks * 1e3:.1f} ms", percent(checks, total)],
        ["  the rest: labels, metric functions", f"{max(total - knn - checks, 0) * 1e3:.1f} ms", ""],
        ["retrieval_metrics, LR queries vs own HR images (exclude_own)", f"{paired * 1e3:.1f} ms", ""],
    ]
    calculator = _accuracy_calculator_seconds(tq, tr, query_labels, reference_labels, args.repeats)
    rows.append(["  for comparison: AccuracyCalculator.get_accuracy, same kNN", f"{calculator * 1e3:.1f} ms", ""])


def _accuracy_calculator_seconds(tq, tr, query_labels, reference_labels, repeats: int) -> float:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calculator = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                                    k="max_bin_count", knn_func=ExactKNN("cosine"), device=tq.device)
    labels = torch.from_numpy(query_labels).to(tq.device), torch.from_numpy(reference_labels).to(tq.device)
    return best_time(lambda: calculator.get_accuracy(tq, labels[0], tr, labels[1]), warmup=1, repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    set_threads(args.threads)
    peak = gemm_gflops(args.device)
    bandwidth = copy_gbytes_per_second(args.device)
    rows: list[list[str]] = []
    bench_verification(args, rows, bandwidth)
    bench_knn_and_retrieval(args, rows, max(peak, gemm_gflops(args.device)))
    print_table(
        f"Metrics from embeddings on {args.device}: {describe_machine(args.device)}; "
        f"measured peaks: float32 GEMM {peak:.0f} GFLOP/s, copy {bandwidth:.1f} GB/s",
        ["workload", "time", "vs this machine's limit"], rows,
    )


if __name__ == "__main__":
    main()
