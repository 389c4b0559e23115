"""M-per-class sampling: batches made of `batch_size // m` classes with `m` images each."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..errors_dcr import DCRInputError


class MPerClassSampler(torch.utils.data.Sampler[int]):
    """Yield dataset indices so that every consecutive `batch_size` chunk holds `batch_size // m`
    distinct classes with `m` images each.

    Classes are visited in random order, every class once before any class repeats, and a class's
    images are used in random order before any repeats; a class with fewer than `m` images is
    completed by drawing from it with replacement. Give the DataLoader (or the HF Trainer) the
    same per-device `batch_size` and no shuffling; under Accelerate each process gets whole
    batches, so the structure holds on every device.

    Args:
        labels: class label of every dataset row (ints), e.g. `dataset["label"]`.
        m: images per class in a batch.
        batch_size: the (per-device) batch size; a multiple of `m`.
        length_before_new_iter: indices per epoch (default: the dataset size), rounded down to a
            multiple of `batch_size`.
        seed: base seed; the order of an epoch depends only on `(seed, epoch)`.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        m: int,
        batch_size: int,
        length_before_new_iter: int | None = None,
        seed: int = 0,
    ) -> None:
        # A numpy column (a RecordIO pack's int32 labels) is taken as it is: no Python int per image.
        if not isinstance(labels, np.ndarray):
            labels = np.asarray(labels.tolist() if torch.is_tensor(labels) else list(labels))
        if labels.ndim != 1 or not len(labels):
            raise DCRInputError(f"labels must be a non-empty 1-D sequence of class ids, got shape {labels.shape}.")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DCRInputError(f"labels must be integers (class ids), got dtype {labels.dtype}.")
        for name, value in (("m", m), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise DCRInputError(f"{name} must be a positive integer, got {value!r}.")
        if batch_size % m:
            raise DCRInputError(f"batch_size={batch_size} must be a multiple of m={m}.")
        classes, inverse = np.unique(labels, return_inverse=True)
        classes_per_batch = batch_size // m
        if len(classes) < classes_per_batch:
            raise DCRInputError(
                f"A batch of {batch_size} with m={m} needs {classes_per_batch} distinct classes, "
                f"but the labels hold only {len(classes)}."
            )
        length = len(labels) if length_before_new_iter is None else length_before_new_iter
        if isinstance(length, bool) or not isinstance(length, int) or length < batch_size:
            raise DCRInputError(
                f"length_before_new_iter must be an integer >= batch_size={batch_size}, got {length!r}."
            )
        self.m = m
        self.batch_size = batch_size
        self.classes_per_batch = classes_per_batch
        self.num_batches = length // batch_size
        self.seed = seed
        self.epoch = 0
        order = np.argsort(inverse, kind="stable")
        self._members = np.split(order, np.cumsum(np.bincount(inverse))[:-1])

    def set_epoch(self, epoch: int) -> None:
        """Select the order of epoch `epoch` (the Trainer and Accelerate call this each epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        num_classes = len(self._members)
        class_order, class_cursor = rng.permutation(num_classes), 0
        image_orders = [None] * num_classes
        image_cursors = [0] * num_classes
        indices = np.empty(self.num_batches * self.batch_size, dtype=np.int64)
        position = 0
        for _ in range(self.num_batches):
            chosen: set[int] = set()
            while len(chosen) < self.classes_per_batch:
                if class_cursor == num_classes:
                    class_order, class_cursor = rng.permutation(num_classes), 0
                label = int(class_order[class_cursor])
                class_cursor += 1
                # A class met again at the seam of two permutations is already in this batch.
                if label in chosen:
                    continue
                chosen.add(label)
                members = self._members[label]
                if len(members) < self.m:
                    picks = np.concatenate([members, rng.choice(members, self.m - len(members))])
                    picks = rng.permutation(picks)
                else:
                    if image_orders[label] is None or image_cursors[label] + self.m > len(members):
                        image_orders[label], image_cursors[label] = rng.permutation(members), 0
                    picks = image_orders[label][image_cursors[label] : image_cursors[label] + self.m]
                    image_cursors[label] += self.m
                indices[position : position + self.m] = picks
                position += self.m
        return map(int, indices)  # Python ints one at a time, not a list of the epoch's millions
