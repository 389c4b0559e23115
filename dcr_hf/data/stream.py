"""Identity-balanced P x K batches from a `datasets.IterableDataset` (a Hub dataset streamed with
`load_dataset(..., streaming=True)`), with the state an exact resume needs.

No library makes such batches from a stream (pytorch-metric-learning's `MPerClassSampler`, like
`sampler.MPerClassSampler` here, needs every label up front), so this is written by hand: rows
are read one by one into a bounded per-identity buffer, and a batch is emitted as soon as `P`
identities hold `K` images there (`P = batch_size // K`, chosen at random among the ready
identities, each giving its `K` oldest images). At the bound (`max_buffered_images`) the oldest
buffered image is evicted, whatever its identity, and the evictions are logged: an identity that
never gathers `K` images within the bound is never trained on, and the log says how many images
that cost. A finished stream starts again (the next epoch, `IterableDataset.set_epoch`) with the
buffer kept.

The state of a process (`state_dict`): the stream's position (`IterableDataset.state_dict()`, taken
when the last batch was emitted), the epoch, the RNG and the buffer's content (its images'
bytes), so that a resumed run emits exactly the batches an uninterrupted one would have.
`IterableDataset.shuffle` is not used: its shuffle buffer is not part of `datasets`' state (a
resume refills it with other rows), which would make a resume inexact; the random choice of
identities here is what mixes the batches.
"""

from __future__ import annotations

import copy
import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from ..errors_dcr import DCRInputError

logger = logging.get_logger(__name__)


class _Buffer:
    """The images waiting for a batch, by identity, with the state that continues the stream."""

    def __init__(self, seed: int | list[int]) -> None:
        self.images: dict[int, deque[tuple[int, dict[str, Any]]]] = {}
        self.arrival: deque[tuple[int, int]] = deque()  # (sequence, label), oldest first; emitted ones skipped
        self.emitted: set[int] = set()  # sequences taken into a batch but still in `arrival`
        self.ready: set[int] = set()  # identities with at least K images buffered
        self.count = 0
        self.sequence = 0
        self.epoch = 0
        self.position: dict[str, Any] | None = None  # the stream's state after the last row read
        self.batches = 0
        self.batches_this_epoch = 0
        self.evicted = 0
        self.rng = np.random.default_rng(seed)

    def add(self, label: int, image: dict[str, Any], samples_per_class: int) -> None:
        self.images.setdefault(label, deque()).append((self.sequence, image))
        self.arrival.append((self.sequence, label))
        self.sequence += 1
        self.count += 1
        if len(self.images[label]) >= samples_per_class:
            self.ready.add(label)

    def evict_oldest(self, samples_per_class: int) -> None:
        while True:
            sequence, label = self.arrival.popleft()
            if sequence in self.emitted:
                self.emitted.discard(sequence)
                continue
            self.images[label].popleft()
            if not self.images[label]:
                del self.images[label]
            if len(self.images.get(label, ())) < samples_per_class:
                self.ready.discard(label)
            self.count -= 1
            self.evicted += 1
            return

    def take(self, classes: int, samples_per_class: int) -> list[tuple[int, dict[str, Any]]]:
        chosen = self.rng.choice(np.array(sorted(self.ready)), size=classes, replace=False)
        rows = []
        for label in (int(c) for c in chosen):
            queue = self.images[label]
            for _ in range(samples_per_class):
                sequence, image = queue.popleft()
                self.emitted.add(sequence)
                rows.append((label, image))
            if not queue:
                del self.images[label]
            if len(queue) < samples_per_class:
                self.ready.discard(label)
        self.count -= classes * samples_per_class
        self.batches += 1
        self.batches_this_epoch += 1
        return rows

    # -- the checkpointed state ------------------------------------------------------------------

    def state(self) -> tuple[dict[str, Any], bytes]:
        """`(JSON-able state, the buffered images' bytes joined)`: images in arrival order."""
        rows = sorted((sequence, label, image) for label, queue in self.images.items() for sequence, image in queue)
        blobs = [image.get("bytes") or b"" for _, _, image in rows]
        state = {
            "epoch": self.epoch, "position": self.position, "sequence": self.sequence, "batches": self.batches,
            "batches_this_epoch": self.batches_this_epoch, "evicted": self.evicted,
            "rng": self.rng.bit_generator.state,
            "rows": {"sequence": [r[0] for r in rows], "label": [r[1] for r in rows],
                     "path": [r[2].get("path") for r in rows], "has_bytes": [r[2].get("bytes") is not None for r in rows],
                     "length": [len(b) for b in blobs]},
        }
        return state, b"".join(blobs)

    def restore(self, state: dict[str, Any], blob: bytes, samples_per_class: int) -> None:
        self.epoch, self.position, self.sequence = state["epoch"], state["position"], state["sequence"]
        self.batches, self.batches_this_epoch, self.evicted = state["batches"], state["batches_this_epoch"], state["evicted"]
        self.rng.bit_generator.state = state["rng"]
        rows, offset = state["rows"], 0
        self.images, self.arrival, self.emitted, self.ready, self.count = {}, deque(), set(), set(), 0
        for sequence, label, path, has_bytes, length in zip(rows["sequence"], rows["label"], rows["path"],
                                                          rows["has_bytes"], rows["length"]):
            image = {"bytes": blob[offset:offset + length] if has_bytes else None, "path": path}
            offset += length
            self.images.setdefault(label, deque()).append((sequence, image))
            self.arrival.append((sequence, label))
            self.count += 1
        self.ready = {label for label, queue in self.images.items() if len(queue) >= samples_per_class}


class IdentityBatchStream(torch.utils.data.IterableDataset):
    """Yields batches (lists of `batch_size` rows, identity by identity) made from `stream`.

    `stream`: a `datasets.IterableDataset` with an undecoded `image` column (`{"bytes", "path"}`)
    and an int `label` column in `0..num_classes-1`. A row is `{"image", "label"}`, or what
    `transform` makes of a batch (as `datasets`' `with_transform`: one call per batch). It offers
    the part of the `datasets` interface `transforms.apply_transform` uses (`features`,
    `column_names`, `cast_column` to an undecoded `Image`, `with_transform`).

    Give it to a `torch.utils.data.DataLoader` with `batch_size=None` (the batches are made here) and
    no workers: the state lives in this object, in the process that iterates it.
    """

    def __init__(self, stream, num_classes: int, samples_per_class: int, batch_size: int, max_buffered_images: int,
                 seed: int = 0, transform=None) -> None:
        self.stream = stream
        self.num_classes = num_classes
        self.samples_per_class = samples_per_class
        self.batch_size = batch_size
        self.classes_per_batch = batch_size // samples_per_class
        self.max_buffered_images = max_buffered_images
        self.seed = seed
        self.transform = transform
        self.features = stream.features
        self.column_names = ["image", "label"]
        self._resume: tuple[dict[str, Any], bytes] | None = None
        self._buffer: _Buffer | None = None

    # -- the datasets interface apply_transform uses ---------------------------------------------

    def cast_column(self, column: str, feature) -> IdentityBatchStream:
        from datasets import Image

        if column != "image" or not isinstance(feature, Image) or feature.decode:
            raise DCRInputError(f"a streamed dataset keeps its images undecoded; cannot cast {column!r} to {feature}.")
        return self

    def with_transform(self, transform) -> IdentityBatchStream:
        return self._copy(transform=transform)

    def for_process(self, rank: int, world_size: int, seed: int) -> IdentityBatchStream:
        """This process's part of the stream (`datasets.distributed.split_dataset_by_node`: whole shards
        when their number divides by `world_size`, every `world_size`-th row otherwise), seeded per process."""
        from datasets.distributed import split_dataset_by_node

        stream = self.stream if world_size == 1 else split_dataset_by_node(self.stream, rank=rank, world_size=world_size)
        return self._copy(stream=stream, seed=[seed, rank] if world_size > 1 else seed)

    def _copy(self, **changes) -> IdentityBatchStream:
        values = {"stream": self.stream, "num_classes": self.num_classes, "samples_per_class": self.samples_per_class,
                  "batch_size": self.batch_size, "max_buffered_images": self.max_buffered_images, "seed": self.seed,
                  "transform": self.transform, **changes}
        return IdentityBatchStream(**values)

    # -- state -------------------------------------------------------------------------------------

    def state_dict(self) -> tuple[dict[str, Any], bytes]:
        """The state after the last batch yielded: `(JSON-able dict, the buffered images' bytes)`."""
        if self._buffer is None:
            return self._resume if self._resume is not None else _Buffer(0).state()
        return self._buffer.state()

    @property
    def batches_emitted(self) -> int:
        """Batches yielded since the start of training (a resumed run counts the checkpoint's too)."""
        if self._buffer is None:
            return self._resume[0]["batches"] if self._resume is not None else 0
        return self._buffer.batches

    def load_state_dict(self, state: dict[str, Any], blob: bytes) -> None:
        """Continue from `state` (`state_dict`) at the next iteration."""
        self._resume, self._buffer = (state, blob), None

    # -- iteration ---------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        buffer = _Buffer(self.seed)
        if self._resume is not None:
            buffer.restore(*self._resume, self.samples_per_class)
            self._resume = None
        self._buffer = buffer
        while True:
            source = copy.deepcopy(self.stream)
            source.set_epoch(buffer.epoch)
            if buffer.position is not None:
                source.load_state_dict(buffer.position)
            for row in source:
                label = row["label"]
                if not isinstance(label, (int, np.integer)) or not 0 <= label < self.num_classes:
                    raise DCRInputError(f"streamed row {buffer.sequence}: label {label!r} is not a class id in "
                                        f"0..{self.num_classes - 1} (the dataset's {self.num_classes} classes).")
                buffer.add(int(label), row["image"], self.samples_per_class)
                if buffer.count > self.max_buffered_images:
                    buffer.evict_oldest(self.samples_per_class)
                    self._log_eviction(buffer.evicted)
                if len(buffer.ready) >= self.classes_per_batch:
                    rows = buffer.take(self.classes_per_batch, self.samples_per_class)
                    buffer.position = source.state_dict()
                    yield self._rows(rows)
            if buffer.batches_this_epoch == 0:
                raise DCRInputError(
                    f"a whole pass over the streamed dataset made no batch of {self.classes_per_batch} identities x "
                    f"{self.samples_per_class} images within --stream_buffer_images {self.max_buffered_images}: it has "
                    "too few identities with that many images, or they are spread wider than the buffer holds."
                )
            buffer.epoch, buffer.position, buffer.batches_this_epoch = buffer.epoch + 1, None, 0

    def _log_eviction(self, evicted: int) -> None:
        # At every power of two and every 10,000: the first eviction says why, the later ones how many so far, never silently.
        if evicted & (evicted - 1) == 0 or evicted % 10000 == 0:
            logger.warning(
                f"the stream buffer is full (--stream_buffer_images {self.max_buffered_images}): {evicted} image"
                f"{'s' * (evicted != 1)} evicted so far, the oldest buffered first (their identities had fewer than "
                f"{self.samples_per_class} images waiting); a larger buffer keeps more of them."
            )

    def _rows(self, rows: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
        from .indexed import transformed_rows

        return transformed_rows({"image": [image for _, image in rows], "label": [label for label, _ in rows]},
                                self.transform)


#: A checkpoint's stream state, one pair of files per process: `{name}-{rank}.json` / `.safetensors`.
STATE_FILE = "stream_state"


def save_stream_state(stream: IdentityBatchStream, folder: str | Path, rank: int) -> None:
    """Write `stream`'s state (`state_dict`) into a checkpoint folder: the JSON state and the buffered
    images' bytes (a safetensors uint8 tensor: nothing a load would run)."""
    from safetensors.torch import save_file

    from ..saving import write_text_atomic

    state, blob = stream.state_dict()
    folder = Path(folder)
    save_file({"bytes": torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.empty(0, dtype=torch.uint8)},
              str(folder / f"{STATE_FILE}-{rank}.safetensors"))
    write_text_atomic(folder / f"{STATE_FILE}-{rank}.json", json.dumps(state))


def load_stream_state(folder: str | Path, rank: int) -> tuple[dict[str, Any], bytes]:
    """The state `save_stream_state` wrote for process `rank`, for `IdentityBatchStream.load_state_dict`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    state = json.loads((folder / f"{STATE_FILE}-{rank}.json").read_text(encoding="utf-8"))
    blob = load_file(str(folder / f"{STATE_FILE}-{rank}.safetensors"))["bytes"].numpy().tobytes()
    if len(blob) != sum(state["rows"]["length"]):
        raise DCRInputError(f"{folder}/{STATE_FILE}-{rank}.safetensors holds {len(blob)} bytes of buffered images; "
                            f"its .json names {sum(state['rows']['length'])}: the checkpoint is damaged.")
    return state, blob


def check_stream_checkpoint(folder: str | Path, world_size: int) -> None:
    """Refuse, in one line, a checkpoint a streamed run cannot continue exactly: no stream state (a
    run of another dataset kind), or the states of another number of processes."""
    folder = Path(folder)
    ranks = sorted(int(p.stem.rsplit("-", 1)[1]) for p in folder.glob(f"{STATE_FILE}-*.json"))
    if not ranks:
        raise DCRInputError(f"{folder} holds no stream state ({STATE_FILE}-*.json): it was not saved by a streamed run, "
                            "which a streamed run cannot continue exactly.")
    if ranks != list(range(world_size)):
        raise DCRInputError(f"{folder} holds the stream states of {len(ranks)} process{'es' * (len(ranks) != 1)}; "
                            f"resume it on {len(ranks)}, not {world_size} (each process continues its own part).")


__all__ = ["STATE_FILE", "IdentityBatchStream", "check_stream_checkpoint", "load_stream_state", "save_stream_state"]
