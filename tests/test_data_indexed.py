"""Compact indexes for training sets larger than memory: what stays resident after indexing a
10^5-record RecordIO pack or a folder tree (a few bytes an image), and the folder index serving the
same rows as the `imagefolder` loader."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest

from dcr_hf.data import registry
from dcr_hf.data.generic import index_image_folder, load_image_folder
from dcr_hf.data.indexed import IndexedImageDataset
from dcr_hf.data.recordio import open_pack, read_index
from dcr_hf.errors_dcr import DCRInputError
from dcr_hf.training.arguments import DataArguments
from tests.layouts import make_identity_folder
from tests.recordio_pack import encode_record, pack_payload

RECORDS, IDENTITIES = 100_000, 1_000


@pytest.fixture(scope="module")
def big_pack(tmp_path_factory) -> Path:
    """An insightface-layout pack of 10^5 tiny records (100 an identity) and its identity records."""
    root = tmp_path_factory.mktemp("big_pack")
    per = RECORDS // IDENTITIES
    chunks, lines, offset = [], [], 0

    def add(key: int, payload: bytes) -> None:
        nonlocal offset
        record = encode_record(payload)
        chunks.append(record)
        lines.append(f"{key}\t{offset}\n")
        offset += len(record)

    add(0, pack_payload([RECORDS + 1, RECORDS + 1 + IDENTITIES], b""))
    for key in range(1, RECORDS + 1):
        add(key, pack_payload(float((key - 1) // per), b"\x89PNG"))
    for identity in range(IDENTITIES):
        add(RECORDS + 1 + identity, pack_payload([1 + identity * per, 1 + (identity + 1) * per], b""))
    (root / "train.rec").write_bytes(b"".join(chunks))
    (root / "train.idx").write_text("".join(lines))
    (root / "property").write_text(f"{IDENTITIES},112,112\n")
    return root


def _resident(build):
    """What `build()` returns and the bytes it keeps allocated (tracemalloc), with the peak on the way."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = build()
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, current - before, peak - before


def test_the_index_of_a_pack_keeps_a_few_bytes_an_image(big_pack):
    (keys, offsets), idx_bytes, idx_peak = _resident(lambda: read_index(big_pack / "train.idx"))
    assert len(keys) == RECORDS + 1 + IDENTITIES
    assert idx_bytes <= 17 * len(keys)  # two int64 arrays, nothing per line
    pack, resident, peak = _resident(lambda: open_pack(big_pack))
    assert len(pack) == RECORDS and pack.labels[-1] == IDENTITIES - 1
    assert resident <= 24 * RECORDS  # key + offset (int64) + label (int32) an image
    # The transient cost is bounded by the .idx block being parsed (~2 MB here), not a Python object a record for ever.
    assert peak <= 200 * RECORDS


def test_folder_index_serves_the_rows_of_the_imagefolder_loader(tmp_path):
    make_identity_folder(tmp_path, {"ann": 3, "bob": 2, "cid": 2})
    index = index_image_folder(tmp_path)
    loaded = load_image_folder(tmp_path)
    names = loaded.features["label"].names
    assert index.label_names == names
    expected = sorted((Path(row["image"].filename).relative_to(tmp_path).as_posix(), names[row["label"]]) for row in loaded)
    got = sorted((Path(index.path(i)).relative_to(tmp_path).as_posix(), index.label_names[index.labels[i]])
                 for i in range(len(index)))
    assert got == expected


def test_folder_index_keeps_a_few_bytes_and_the_path_an_image(tmp_path):
    for identity in range(20):
        folder = tmp_path / f"id{identity:03d}"
        folder.mkdir()
        for image in range(25):
            (folder / f"{image:04d}.jpg").write_bytes(b"")  # never read while indexing
    index, resident, _ = _resident(lambda: index_image_folder(tmp_path))
    assert len(index) == 500
    path_bytes = len("id000/0000.jpg")
    # offsets (int64), labels (int32), the paths' bytes; 16 kB for the identity names and the arrays' own headers
    assert resident <= 500 * (12 + path_bytes) + 16_000


def test_folder_index_refuses_links_out_of_the_root(tmp_path):
    make_identity_folder(tmp_path / "outside", {"eve": 1})
    root = tmp_path / "root"
    make_identity_folder(root, {"ann": 1})
    (root / "eve").symlink_to(tmp_path / "outside" / "eve")
    with pytest.raises(DCRInputError, match="outside the data root"):
        index_image_folder(root)
    assert len(index_image_folder(root, follow_symlinks_outside_root=True)) == 2


def test_streaming_option_selects_the_folder_index(tmp_path):
    make_identity_folder(tmp_path, {"ann": 2, "bob": 2})
    options = DataArguments(dataset="folder", data_root=str(tmp_path), streaming=True)
    split = registry.load_training_split("folder", options, 32)
    assert isinstance(split.dataset, IndexedImageDataset) and len(split.dataset) == 4
    assert split.dataset["label"].tolist() == [0, 0, 1, 1]
    assert isinstance(registry.load_training_split(str(tmp_path), options, 32).dataset, IndexedImageDataset)
    with pytest.raises(DCRInputError, match="--dataset casia is loaded whole: drop --streaming"):
        registry.load_training_split("casia", DataArguments(dataset="casia", data_root=str(tmp_path), streaming=True), 32)


def test_the_sampler_over_a_large_pack_keeps_a_few_bytes_an_image(big_pack):
    from dcr_hf.data.sampler import MPerClassSampler

    labels = open_pack(big_pack).labels
    sampler, resident, _ = _resident(lambda: MPerClassSampler(labels, m=4, batch_size=32))
    # One int64 order of the images, a view per identity (~100 bytes each).
    assert resident <= 8 * RECORDS + 200 * IDENTITIES
    gc.collect()
    tracemalloc.start()
    iterator = iter(sampler)
    first = [next(iterator) for _ in range(32)]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert all(type(index) is int for index in first)
    assert len({int(labels[i]) for i in first}) == 8
    # The epoch's order is one int64 array and the identities' shuffled images, not a list of Python ints.
    assert peak <= 24 * RECORDS + 300 * IDENTITIES
