"""RecordIO packs: every record read back exactly (labels, pixels), split records, both header
conventions, multi-float labels, and one clear line for each corruption."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest

from dcr_hf.data.decode import decode_image
from dcr_hf.data.indexed import IndexedImageDataset
from dcr_hf.data.recordio import MAGIC, load_recordio, open_pack, read_index
from dcr_hf.errors_dcr import DCRFileError, DCRFileNotFoundError, DCRInputError
from dcr_hf.image_processing_dcr import DCRImageProcessor
from tests.layouts import smooth_photo
from tests.recordio_pack import encode_image, encode_record, png_with_magic, record_offsets, write_pack

SIZE = 16


def _faces(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [smooth_photo(rng, SIZE, SIZE) for _ in range(count)]


def _read_all(dataset: IndexedImageDataset) -> tuple[list[np.ndarray], list[int]]:
    processor = DCRImageProcessor(image_size=SIZE)
    rows = dataset.__getitems__(list(range(len(dataset))))
    return [decode_image(row["image"], processor) for row in rows], [row["label"] for row in rows]


@pytest.mark.parametrize("convention", ["insightface", "im2rec"])
@pytest.mark.parametrize("extra_labels", [0, 3])
def test_every_record_reads_back_exactly(tmp_path, convention, extra_labels):
    faces = _faces(7)
    labels = [0, 0, 1, 1, 1, 2, 2]
    images = [encode_image(f) for f in faces[:6]] + [png_with_magic(faces[6])]  # the last one is split in parts
    write_pack(tmp_path, images, labels, convention=convention, extra_labels=extra_labels, size=SIZE)
    pack = open_pack(tmp_path)
    assert pack.convention == convention
    assert pack.num_classes == 3
    assert pack.labels.dtype == np.int32 and pack.labels.tolist() == labels
    decoded, read_labels = _read_all(IndexedImageDataset(pack))
    assert read_labels == labels
    for got, want in zip(decoded, faces):
        np.testing.assert_array_equal(got, want)  # PNG: lossless


def test_split_record_is_split_by_the_writer_and_joined_by_the_reader(tmp_path):
    image = png_with_magic(_faces(1)[0])
    write_pack(tmp_path, [image], [0], convention="im2rec", size=SIZE)
    data = (tmp_path / "train.rec").read_bytes()
    _, lrec = struct.unpack_from("<II", data, 0)
    assert lrec >> 29 == 1  # the writer split it: the magic sat at an aligned position of the payload
    pack = open_pack(tmp_path)
    assert pack.image(0)["bytes"] == image


def test_magic_at_an_unaligned_position_stays_in_one_record(tmp_path):
    magic = struct.pack("<I", MAGIC)
    image = encode_image(_faces(1)[0])
    payload_tail = image + b"\0" + magic + b"\0\0\0"  # trailing bytes after IEND are ignored by PNG decoders
    write_pack(tmp_path, [payload_tail], [0], convention="im2rec", size=SIZE)
    data = (tmp_path / "train.rec").read_bytes()
    assert struct.unpack_from("<II", data, 0)[1] >> 29 == 0
    assert open_pack(tmp_path).image(0)["bytes"] == payload_tail


def test_insightface_pack_without_identity_records_reads_each_header(tmp_path):
    write_pack(tmp_path, [encode_image(f) for f in _faces(4)], [0, 1, 1, 2], identity_records=False, size=SIZE)
    pack = open_pack(tmp_path)
    assert pack.convention == "insightface" and pack.labels.tolist() == [0, 1, 1, 2]
    assert pack.keys.tolist() == [1, 2, 3, 4]


def test_dataset_interface_used_by_training(tmp_path):
    write_pack(tmp_path, [encode_image(f) for f in _faces(4)], [0, 0, 1, 1], size=SIZE)
    dataset = load_recordio(tmp_path)
    assert len(dataset) == 4 and dataset.features["label"].num_classes == 2
    assert dataset.with_format("numpy")["label"].tolist() == [0, 0, 1, 1]
    assert dataset.select([3, 0])["label"].tolist() == [1, 0]
    assert dataset.select(range(3)).select([2])["label"].tolist() == [1]  # --max_train_samples, then a subset
    seen = dataset.with_transform(lambda batch: {"labels": batch["label"]}).__getitems__([2, 1])
    assert seen == [{"labels": 1}, {"labels": 0}]


def test_the_rec_is_reopened_after_fork_and_never_pickled(tmp_path):
    write_pack(tmp_path, [encode_image(f) for f in _faces(2)], [0, 1], size=SIZE)
    dataset = load_recordio(tmp_path)
    dataset[0]
    assert dataset.index.record_file._handle is not None
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy.index.record_file._handle is None
    assert copy[1]["image"]["bytes"] == dataset[1]["image"]["bytes"]
    dataset.index.record_file._pid = -1  # as seen by a forked worker: its own handle is opened
    old = dataset.index.record_file._handle
    dataset[0]
    assert dataset.index.record_file._handle is not old


def test_index_parses_in_blocks_and_names_a_malformed_line(tmp_path):
    path = tmp_path / "train.idx"
    path.write_text("".join(f"{k}\t{k * 8}\n" for k in range(5, 0, -1)))
    keys, offsets = read_index(path)
    assert keys.tolist() == [1, 2, 3, 4, 5] and offsets.tolist() == [8, 16, 24, 32, 40]
    path.write_text("0\t0\n1\t8\n2 x\n")
    with pytest.raises(DCRInputError, match=r"train.idx:3: malformed line '2 x'"):
        read_index(path)


def _pack(tmp_path, count=3):
    write_pack(tmp_path, [encode_image(f) for f in _faces(count)], list(range(count)), convention="im2rec", size=SIZE)
    return tmp_path


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_bad_magic_names_file_offset_and_key(tmp_path):
    root = _pack(tmp_path)
    offsets = record_offsets(root)
    data = bytearray((root / "train.rec").read_bytes())
    data[offsets[1] : offsets[1] + 4] = b"\0\0\0\0"
    (root / "train.rec").write_bytes(bytes(data))
    with pytest.raises(DCRFileError) as error:
        open_pack(root)
    assert f"bad magic 0x00000000 at offset {offsets[1]} (record 1)" in _one_line(error)
    assert "train.rec" in str(error.value)


def test_offset_not_at_a_record(tmp_path):
    root = _pack(tmp_path)
    offsets = record_offsets(root)
    (root / "train.idx").write_text(f"0\t{offsets[0]}\n1\t{offsets[1] + 4}\n2\t{offsets[2]}\n")
    with pytest.raises(DCRFileError) as error:
        open_pack(root)
    assert f"at offset {offsets[1] + 4} (record 1)" in _one_line(error) and "does not match" in str(error.value)


def test_offset_beyond_the_end(tmp_path):
    root = _pack(tmp_path)
    size = (root / "train.rec").stat().st_size
    (root / "train.idx").write_text(f"0\t0\n1\t{size + 100}\n")
    with pytest.raises(DCRFileError) as error:
        open_pack(root)
    assert f"key 1 has offset {size + 100}, beyond the end" in _one_line(error)


def test_truncated_record(tmp_path):
    root = _pack(tmp_path)
    data = (root / "train.rec").read_bytes()
    (root / "train.rec").write_bytes(data[:-20])
    with pytest.raises(DCRFileError) as error:
        open_pack(root)
    assert "record 2" in _one_line(error) and "is truncated" in str(error.value)


def test_split_record_cut_short(tmp_path):
    image = png_with_magic(_faces(1)[0])
    write_pack(tmp_path, [image, encode_image(_faces(1, 1)[0])], [0, 1], convention="im2rec", size=SIZE)
    offsets = record_offsets(tmp_path)
    data = (tmp_path / "train.rec").read_bytes()
    first = encode_record(data[:0])  # an empty whole record, flag 0, in place of the split record's tail
    _, lrec = struct.unpack_from("<II", data, 0)
    tail_at = 8 + (lrec & ((1 << 29) - 1))
    (tmp_path / "train.rec").write_bytes(data[:tail_at] + first + data[offsets[1]:])
    (tmp_path / "train.idx").write_text(f"0\t0\n1\t{tail_at + len(first)}\n")
    with pytest.raises(DCRFileError) as error:
        open_pack(tmp_path)
    assert "record 0 at offset 0 is cut short" in _one_line(error)


@pytest.mark.parametrize("missing", ["train.idx", "property", "train.rec"])
def test_missing_file(tmp_path, missing):
    root = _pack(tmp_path)
    (root / missing).unlink()
    with pytest.raises(DCRFileNotFoundError) as error:
        open_pack(root)
    assert f"RecordIO {missing} not found" in _one_line(error)


def test_malformed_property_and_labels_beyond_it(tmp_path):
    root = _pack(tmp_path)
    (root / "property").write_text("three,16,16\n")
    with pytest.raises(DCRInputError, match=r"property:1: malformed line 'three,16,16'"):
        open_pack(root)
    (root / "property").write_text("2,16,16\n")
    with pytest.raises(DCRInputError, match=r"record 2 has label 2, but .* says 2 classes"):
        open_pack(root)


def test_files_confined_by_real_path(tmp_path):
    outside = _pack(tmp_path / "outside")
    root = tmp_path / "pack"
    root.mkdir()
    for name in ("train.idx", "property"):
        (root / name).write_bytes((outside / name).read_bytes())
    (root / "train.rec").symlink_to(outside / "train.rec")
    with pytest.raises(DCRInputError, match="outside the data root"):
        open_pack(root)
    assert len(open_pack(root, follow_symlinks_outside_root=True)) == 3


def test_a_label_that_is_not_a_class_id(tmp_path):
    write_pack(tmp_path, [encode_image(f) for f in _faces(2)], [0, 1.5], convention="im2rec", num_classes=3, size=SIZE)
    with pytest.raises(DCRFileError) as error:
        open_pack(tmp_path)
    assert "record 1 has label 1.5; expected a class id >= 0." in _one_line(error)


@pytest.mark.parametrize("layout", ["magic first", "two magics in a row", "magic last", "three parts and padding"])
def test_any_split_reads_back_byte_for_byte(tmp_path, layout):
    magic = struct.pack("<I", MAGIC)
    image = {
        "magic first": magic + b"abcd" * 3,
        "two magics in a row": b"abcd" + magic + magic + b"efgh",  # an empty middle part
        "magic last": b"abcdefgh" + magic,
        "three parts and padding": b"ab" * 2 + magic + b"cd" * 4 + magic + b"tail!",
    }[layout]
    write_pack(tmp_path, [image], [0], convention="im2rec", size=SIZE)
    flags = []
    data, position = (tmp_path / "train.rec").read_bytes(), 0
    while position < len(data):
        _, lrec = struct.unpack_from("<II", data, position)
        flags.append(lrec >> 29)
        position += 8 + (((lrec & ((1 << 29) - 1)) + 3) & ~3)
    assert flags[0] == 1 and flags[-1] == 3 and set(flags[1:-1]) <= {2}
    assert open_pack(tmp_path).image(0)["bytes"] == image
