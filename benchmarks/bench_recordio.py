"""RecordIO packs: indexing cost and memory, and the loader reading records by offset.

    python benchmarks/bench_recordio.py [--records 1000000] [--images 2000] [--workers 2] [--tiny]

1. the index: a synthetic `train.idx` of `--records` lines parsed by `recordio.read_index`, as
   seconds and the bytes a record it keeps (tracemalloc, measured in a second pass);
2. the loader: a pack of `--images` 112x112 JPEG faces in insightface's layout, read through a
   `DataLoader` with `--workers` workers (batch 64, the device-first transform: decoded uint8),
   as samples/s and the fraction of `workers` x this machine's JPEG decodes/s per core, beside the
   same images as a prepared Arrow dataset (what `python -m dcr_hf.data prepare --dataset recordio`
   writes). Reading by offset should cost next to nothing beside the decode.

Best of `--repeats` passes (the machine may be shared). `--tiny` runs it at toy sizes (the test).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _limits import describe_machine, jpeg_decodes_per_second, smooth_face_jpeg  # noqa: E402
from _timing import percent, print_table, set_threads  # noqa: E402
from bench_data import loader_rate  # noqa: E402

from dcr_hf import DCRImageProcessor  # noqa: E402
from dcr_hf.data.recordio import load_recordio, pack_to_dataset, read_index  # noqa: E402
from dcr_hf.data.transforms import TrainTransform  # noqa: E402
from tests.recordio_pack import write_pack  # noqa: E402  -- the format writer of the tests


def bench_index(args: argparse.Namespace, rows: list, root: Path) -> None:
    path = root / "big.idx"
    offsets = np.cumsum(np.full(args.records, 4_000, dtype=np.int64)) - 4_000
    with open(path, "w") as handle:
        for start in range(0, args.records, 1 << 16):
            handle.writelines(f"{k}\t{o}\n" for k, o in zip(range(start, start + (1 << 16)), offsets[start:start + (1 << 16)]))
    seconds = min(_timed(lambda: read_index(path)) for _ in range(args.repeats))
    gc.collect()
    tracemalloc.start()
    kept = read_index(path)
    resident, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    rows.append([f"read_index, {args.records} records", f"{seconds:.2f} s", f"{args.records / seconds / 1e6:.1f} M records/s"])
    rows.append(["  kept / peak while parsing", f"{resident / args.records:.1f} B a record",
                 f"peak {peak / args.records:.0f} B a record"])


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def bench_loader(args: argparse.Namespace, rows: list, root: Path, decode_rate: float) -> None:
    per_identity = 20
    labels = [index // per_identity for index in range(args.images)]
    write_pack(root / "pack", [smooth_face_jpeg(size=112, seed=i) for i in range(args.images)], labels, size=112)
    seconds = _timed(lambda: load_recordio(root / "pack"))
    rows.append([f"open_pack, {args.images} images (insightface layout)", f"{seconds * 1e3:.0f} ms", ""])
    limit = decode_rate * max(args.workers, 1)
    prepared = pack_to_dataset(root / "pack")
    transform = TrainTransform(DCRImageProcessor(image_size=112), (8, 12), defer_low_resolution=True)
    for name, dataset in (("RecordIO by offset", load_recordio(root / "pack")), ("prepared Arrow", prepared)):
        rate = loader_rate(dataset, transform, args)
        rows.append([f"loader, {name}, uint8 HR (device-first)", f"{rate:.0f} samples/s",
                     f"{percent(rate, limit)} of {max(args.workers, 1)} x JPEG decode"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="toy sizes: 10^4 index records, 128 images, no workers")
    args = parser.parse_args()
    if args.tiny:
        args.records, args.images, args.workers, args.repeats, args.batch_size = 10_000, 128, 0, 1, 32
    set_threads(args.threads)
    decode_rate = jpeg_decodes_per_second(size=112)
    rows: list[list[str]] = [["PIL JPEG decode, 112x112, one core (the limit)", f"{decode_rate:.0f} images/s", ""]]
    with tempfile.TemporaryDirectory() as root:
        bench_index(args, rows, Path(root))
        bench_loader(args, rows, Path(root), decode_rate)
    print_table(f"RecordIO, {args.workers} workers: {describe_machine()}", ["workload", "figure", "vs the limit"], rows)


if __name__ == "__main__":
    main()
