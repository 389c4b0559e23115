"""A training set read lazily from a compact index: a map-style dataset over an `ImageIndex`.

The index (a RecordIO pack's offsets, a folder's file list) holds a few bytes an image in numpy
arrays; an image is read only when its row is fetched, in the DataLoader worker that fetches it.
Random access is what the identity-balanced P x K batches need (`sampler.MPerClassSampler` picks
any image of any identity), and what makes a resume exact: the sampler's order depends only on
`(seed, epoch)`, and the Trainer skips the batches a checkpoint has already seen without reading them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ..errors_dcr import DCRInputError


class ImageIndex(Protocol):
    """What `IndexedImageDataset` reads: `labels` int32 `[images]`, the identities' names, and each
    image as an undecoded `datasets.Image` value (`{"bytes", "path"}`)."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    @property
    def label_names(self) -> list[str]: ...

    def image(self, position: int) -> dict[str, Any]: ...


def transformed_rows(batch: dict[str, list[Any]], transform=None) -> list[dict[str, Any]]:
    """The rows of `batch` (`{"image": [...], "label": [...]}`) after `transform`, as `datasets` applies a
    transform (one call per batch), split into rows for the collator."""
    if transform is None:
        return [{"image": image, "label": label} for image, label in zip(batch["image"], batch["label"])]
    output = transform(batch)
    count = len(next(iter(output.values()))) if output else 0
    return [{name: value[i] for name, value in output.items()} for i in range(count)]


class IndexedImageDataset:
    """Row `i` is `{"image": {"bytes", "path"}, "label": int}`, read from the index when fetched.

    It offers the part of the `datasets.Dataset` interface the training path uses (`features`,
    `column_names`, `select`, `with_format`, `cast_column` to an undecoded `Image`, `with_transform`,
    `dataset["label"]` as a numpy array and `__getitems__` for a batch), so the transforms, the
    sampler and the Trainer serve it as they serve an Arrow dataset.
    """

    def __init__(self, index: ImageIndex, rows: np.ndarray | None = None, transform=None) -> None:
        from datasets import ClassLabel, Features, Image

        self.index = index
        self.rows = rows
        self.transform = transform
        self.features = Features({"image": Image(decode=False), "label": ClassLabel(names=index.label_names)})
        self.column_names = ["image", "label"]

    def __len__(self) -> int:
        return len(self.index) if self.rows is None else len(self.rows)

    @property
    def labels(self) -> np.ndarray:
        """int32 `[rows]`: the identity of every row."""
        return self.index.labels if self.rows is None else self.index.labels[self.rows]

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            if key != "label":
                raise KeyError(f"an indexed dataset reads column {key!r} per row; only 'label' is held as a column.")
            return self.labels
        return self.__getitems__([key])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        positions = [int(i) if self.rows is None else int(self.rows[i]) for i in indices]
        batch = {"image": [self.index.image(p) for p in positions],
                 "label": [int(self.index.labels[p]) for p in positions]}
        return transformed_rows(batch, self.transform)

    def select(self, indices: Sequence[int]) -> IndexedImageDataset:
        selected = np.asarray(indices, dtype=np.int64)
        return IndexedImageDataset(self.index, selected if self.rows is None else self.rows[selected], self.transform)

    def with_format(self, type: str | None = None, **kwargs) -> IndexedImageDataset:  # noqa: A002 -- datasets' name
        return self  # rows are plain Python values; the `label` column is always a numpy array

    def cast_column(self, column: str, feature) -> IndexedImageDataset:
        from datasets import Image

        if column != "image" or not isinstance(feature, Image) or feature.decode:
            raise DCRInputError(f"an indexed dataset keeps its images undecoded; cannot cast {column!r} to {feature}.")
        return self

    def with_transform(self, transform) -> IndexedImageDataset:
        return IndexedImageDataset(self.index, self.rows, transform)


__all__ = ["ImageIndex", "IndexedImageDataset", "transformed_rows"]
