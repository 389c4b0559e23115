"""Memory per process and step time of the trunk stage's classifier: replicated (one process
holding every class) against sharded over 2 gloo processes (`--partial_fc`).

    python benchmarks/bench_partial_fc.py                 # 100k, 1M, 2M identities, 512-d, float32 and bf16
    python benchmarks/bench_partial_fc.py --tiny          # seconds: a check that it runs

The step is the classifier's forward + backward with the loss (ArcFace margin, center loss and its
momentum update) on a batch of features (`--batch` in all: each of 2 processes holds half and the
features are all-gathered), as `training.partial_fc.ShardedClassifier.loss_terms` runs it in
training; no trunk, no optimizer. Each layout runs in processes of its own (forked), so each peak
is its own:

- `tensors / process`: the classifier's weight, its gradient and the centers, counted (the
  momentum state of SGD adds one more weight-sized tensor, AdamW two: see docs/training.md);
- `step peak / process`: the peak resident memory above what the process held before the
  classifier was made (the tensors, the backward's weight-sized temporaries, the logits of the
  batch and their gradient);
- `step ms`: best of `--repeats` steps after a warm-up.

bf16: the weight, centers and features stored in bf16 (the logits' softmax stays in float32).
Memory: a step peaks at about 7 weight-sized tensors in all (the weight, its gradient, the centers
and the backward's temporaries; measured at 100k), so 2M identities need ~28 GB in float32 and
~14 GB in bf16, in either layout (the 2 processes together hold one classifier). A layout that
would not fit the memory available now is skipped, and its row says what it needs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import print_table, set_threads  # noqa: E402

from dcr_hf import DCRConfig  # noqa: E402
from dcr_hf.training.partial_fc import ShardedClassifier  # noqa: E402

DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}


def _resident_mb() -> float:
    """This process's resident memory now, in MB (Linux `/proc/self/statm`)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _proc_kb(path: str, key: str) -> float:
    """The `key:` line's value (kB) of a Linux `/proc` status file, in MB."""
    with open(path) as lines:
        for line in lines:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in {path}")


def _peak_resident_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    return _proc_kb("/proc/self/status", "VmHWM")


def _available_mb() -> float:
    """The memory available for new work now (MemAvailable), in MB."""
    return _proc_kb("/proc/meminfo", "MemAvailable")


def _reset_peak() -> None:
    """Start the peak (VmHWM) from the present resident memory (Linux: write 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def _worker(rank: int, world_size: int, port: int, options: dict, queue) -> None:
    try:
        set_threads(options["threads"])
        if world_size > 1:
            torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                                 world_size=world_size)
        ids, dim, batch, dtype = options["ids"], options["dim"], options["batch"], DTYPES[options["dtype"]]
        # The config's label dict is made before the measurement starts: it is the run's, not the classifier's.
        config = DCRConfig(embedding_size=dim, head="arcface", num_labels=ids)
        generator = torch.Generator().manual_seed(rank)
        local = batch // world_size
        features = torch.randn(local, 1, dim, generator=generator).to(dtype).requires_grad_()
        labels = torch.randint(0, ids, (local,), generator=generator)
        _reset_peak()
        before = _resident_mb()
        shard = ShardedClassifier(config, dim, sample_rate=options["rate"], rank=rank, world_size=world_size).to(dtype)

        def step() -> None:
            shard.zero_grad(set_to_none=True)  # as the Trainer clears gradients
            features.grad = None
            terms = shard.loss_terms(features, labels)
            (terms["cross_entropy_loss"] + terms["center_loss"]).backward()

        step()  # warm-up
        times = []
        for _ in range(options["repeats"]):
            if world_size > 1:
                torch.distributed.barrier()
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        tensors = sum(t.numel() * t.element_size() for t in (shard.weight, shard.weight.grad, shard.centers)) / 2**20
        queue.put((rank, tensors, _peak_resident_mb() - before, min(times)))
        queue.close()
        queue.join_thread()  # os._exit below would drop what the queue's feeder thread has not sent
        if world_size > 1:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure(world_size: int, options: dict) -> tuple[float, float, float]:
    """(tensors MB, step peak MB, step seconds) per process, the largest over the processes."""
    context = multiprocessing.get_context("fork")  # the children reuse the imported modules
    queue = context.Queue()
    port = _free_port()
    workers = [context.Process(target=_worker, args=(rank, world_size, port, options, queue)) for rank in range(world_size)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=3600) for _ in workers]
    for worker in workers:
        worker.join(timeout=600)
    if any(worker.exitcode != 0 for worker in workers):
        raise RuntimeError(f"a benchmark process failed ({options}); its traceback is above")
    return tuple(max(result[i] for result in results) for i in (1, 2, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a check that the script runs")
    parser.add_argument("--ids", type=int, nargs="+", default=[100_000, 1_000_000, 2_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64, help="features per step, over all processes")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--rate", type=float, default=1.0, help="--partial_fc_rate of the sharded layout")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    args = parser.parse_args()
    if args.tiny:
        args.ids, args.dim, args.batch, args.repeats = [1001], 32, 8, 1  # odd: a remainder row
    rows = []
    # The step's peak in weight-sized tensors, from the layouts measured so far (a guess before the first).
    peak_per_weight = 10.0
    for ids in args.ids:
        for dtype in args.dtypes:
            for world_size, layout in ((1, "replicated"), (2, "sharded, 2 processes")):
                options = dict(ids=ids, dim=args.dim, batch=args.batch, dtype=dtype, threads=args.threads,
                               repeats=args.repeats, rate=args.rate if world_size > 1 else 1.0)
                weight_mb = ids * args.dim * DTYPES[dtype].itemsize / 2**20
                needed, available = peak_per_weight * weight_mb * 1.1, _available_mb()
                if needed > available:  # all the processes of a layout together hold about one classifier's worth
                    rows.append([f"{ids:,} ids", dtype, layout, "-", f"skipped: needs ~{needed / 1024:,.1f} GB, "
                                 f"{available / 1024:,.1f} GB available", "-"])
                    continue
                tensors, peak, seconds = measure(world_size, options)
                peak_per_weight = max(peak_per_weight if rows else 0.0, peak * world_size / weight_mb)
                rows.append([f"{ids:,} ids", dtype, layout, f"{tensors:,.2f}", f"{peak:,.0f}", f"{seconds * 1e3:,.1f}"])
    print_table(
        f"Classifier step (ArcFace + center loss), {args.dim}-d, batch {args.batch}, {args.threads} thread(s) per process",
        ["identities", "dtype", "layout", "tensors / process MB", "step peak / process MB", "step ms"], rows,
    )


if __name__ == "__main__":
    main()
