"""RecordIO packs (`train.rec`, `train.idx`, `property`), read without mxnet.

The packs MS1MV2/MS1MV3, Glint360K and WebFace42M are distributed in are mxnet RecordIO files. This
module reads them with numpy and the file API alone (mxnet is no longer maintained and has no wheel
for current Pythons), so it is written by hand from the format:

- `train.idx`: one `key<TAB>offset` line per record; `offset` is where the record starts in `train.rec`.
- A record starts with the magic `0xCED7230A` and `lrec` (both uint32 little endian): the
  continuation flag `cflag = lrec >> 29`, the length `lrec & (2**29 - 1)`, then the payload padded
  to 4 bytes. The writer splits a payload wherever the magic occurs at a 4-byte-aligned position:
  `cflag` 1, 2, 3 mark the first, a middle and the last part, and the reader puts the magic back
  between them; 0 is a record in one part.
- A payload is the 24-byte header `IfQQ` (`flag`, `label`, `id`, `id2`), then, when `flag > 0`,
  `flag` float32 labels (the header's own `label` is then unused), then the image bytes (JPEG/PNG).
- Packs written by insightface's tools start with a header record (key 0: `flag = 2`, labels
  `(end of the images, end of the identity records)`, no image): the images are keys
  `1 .. labels[0] - 1`, and keys `labels[0] .. labels[1] - 1` are one record per identity, whose
  labels are `(first image key, end image key)` of that identity. Packs written by `im2rec` have no
  such record: every key of the `.idx` is an image and its label is read from its own header.
- `property` holds `num_classes,height,width` on its first line.

`open_pack` reads the index into a few numpy arrays (20 bytes an image: key, offset, int32 label),
and `load_recordio` serves it as an `indexed.IndexedImageDataset`, which reads each record by its
offset in the DataLoader workers, each process opening the `.rec` for itself.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers.utils import logging

from ..errors_dcr import DCRFileError, DCRFileNotFoundError, DCRInputError
from ._layout import PathLike, confine_to_root
from .indexed import IndexedImageDataset

logger = logging.get_logger(__name__)

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_MASK = (1 << 29) - 1
#: `flag` (uint32), `label` (float32), `id`, `id2` (uint64): mxnet's `IRHeader`.
HEADER = struct.Struct("<IfQQ")
REC_FILE, IDX_FILE, PROPERTY_FILE = "train.rec", "train.idx", "property"

# What a head read fetches: the record prefix, the header and up to 6 float labels (more: read again).
_HEAD_BYTES = 8 + HEADER.size + 24


@dataclass(frozen=True)
class RecordHeader:
    """The `IfQQ` header of a record; `labels` holds the `flag` float labels (`[flag]` float32) when `flag > 0`."""

    flag: int
    label: float
    id: int
    id2: int
    labels: np.ndarray | None = None

    @property
    def class_label(self) -> float:
        """The identity of an image record: its first float label, or `label` when it has none (as insightface reads it)."""
        return float(self.labels[0]) if self.labels is not None and len(self.labels) else self.label


def unpack_record(payload: bytes) -> tuple[RecordHeader, bytes]:
    """A record's payload -> its header and the bytes after it (the image, empty for header records)."""
    if len(payload) < HEADER.size:
        raise DCRInputError(f"a record payload of {len(payload)} bytes is shorter than its {HEADER.size}-byte header.")
    flag, label, id_, id2 = HEADER.unpack_from(payload)
    start = HEADER.size
    labels = None
    if flag > 0:
        end = start + 4 * flag
        if end > len(payload):
            raise DCRInputError(f"a record header announces {flag} float labels, but the payload has {len(payload)} bytes.")
        labels = np.frombuffer(payload, dtype="<f4", count=flag, offset=start).copy()
        start = end
    return RecordHeader(flag, label, id_, id2, labels), payload[start:]


def read_property(path: PathLike) -> tuple[int, int, int]:
    """`num_classes, height, width` from a pack's `property` file (its first line)."""
    path = Path(path)
    if not path.is_file():
        raise DCRFileNotFoundError(f"RecordIO property file not found: '{path}'; expected 'num_classes,height,width'.")
    first = path.read_text(errors="replace").strip().splitlines()[:1]
    fields = first[0].replace(" ", "").split(",") if first else []
    try:
        num_classes, height, width = (int(value) for value in fields)
    except ValueError:
        raise DCRInputError(f"{path}:1: malformed line {first[0] if first else ''!r}; expected 'num_classes,height,width'.") from None
    if num_classes < 1:
        raise DCRInputError(f"{path}:1: num_classes is {num_classes}; expected >= 1.")
    return num_classes, height, width


def read_index(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A `.idx` file -> `(keys, offsets)`, both int64 `[records]`, sorted by key.

    Parsed a megabyte at a time by numpy, so that no Python object per line is ever made (a 17M-record
    index holds 270 MB of arrays, and would take ~2 GB as lists); a malformed line raises naming the
    file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise DCRFileNotFoundError(f"RecordIO index not found: '{path}'; expected 'key<TAB>offset' lines next to train.rec.")
    blocks, line_base, tail = [], 0, b""
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(1 << 20)
            data = tail + chunk
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            body, tail = data[:cut], data[cut:]
            if body.strip():
                blocks.append(_parse_index_block(body, path, line_base))
            line_base += body.count(b"\n")
            if not chunk:
                break
    pairs = np.concatenate(blocks) if blocks else np.empty((0, 2), dtype=np.int64)
    if not len(pairs):
        raise DCRInputError(f"RecordIO index '{path}' holds no records.")
    order = np.argsort(pairs[:, 0], kind="stable")
    keys, offsets = pairs[order, 0].copy(), pairs[order, 1].copy()
    duplicated = np.flatnonzero(np.diff(keys) == 0)
    if len(duplicated):
        raise DCRInputError(f"RecordIO index '{path}' lists key {keys[duplicated[0]]} twice; each key must be listed once.")
    return keys, offsets


def _parse_index_block(body: bytes, path: Path, line_base: int) -> np.ndarray:
    """`[pairs, 2]` int64 from whole lines of a `.idx`; checked and parsed by numpy, with no Python
    object per line (a regular expression or `split` would cost ~50 or ~7 bytes of memory a byte)."""
    raw = np.frombuffer(body, dtype=np.uint8)
    digit = (raw >= ord("0")) & (raw <= ord("9"))
    newline = raw == ord("\n")
    allowed = digit | newline | (raw == ord(" ")) | (raw == ord("\t")) | (raw == ord("\r"))
    line = np.cumsum(newline, dtype=np.int32) - newline  # the line of every byte
    starts = digit.copy()
    starts[1:] &= ~digit[:-1]  # the first digit of every number
    fields = np.bincount(line[starts], minlength=int(line[-1]) + 1 if len(line) else 0)
    bad = np.union1d(line[~allowed], np.flatnonzero((fields != 0) & (fields != 2)))
    if len(bad):
        text = body.split(b"\n")[bad[0]].decode(errors="replace").rstrip()
        raise DCRInputError(f"{path}:{line_base + bad[0] + 1}: malformed line {text!r}; expected 'key<TAB>offset' "
                            "(two non-negative integers).")
    return np.fromstring(body.decode("ascii"), dtype=np.int64, sep=" ").reshape(-1, 2)


class RecordFile:
    """One `.rec` file, opened on first use by each process (a DataLoader worker forked from the main
    process reopens it: the pid is checked, and the handle is never pickled)."""

    def __init__(self, path: PathLike) -> None:
        self.path = str(path)
        self.size = os.path.getsize(self.path)
        self._handle = None
        self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])

    def _file(self):
        if self._handle is None or self._pid != os.getpid():
            self._handle = open(self.path, "rb")  # noqa: SIM115 -- kept open for the life of the process
            self._pid = os.getpid()
        return self._handle

    def _part(self, offset: int, key: int) -> tuple[int, bytes, int]:
        """The part at `offset`: `(cflag, data, offset of the next part)`."""
        handle = self._file()
        handle.seek(offset)
        head = handle.read(8)
        if len(head) < 8:
            raise DCRFileError(f"{self.path}: record {key} is truncated: its header at offset {offset} runs past the "
                               f"end of the file ({self.size} bytes).")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise DCRFileError(f"{self.path}: bad magic {magic:#010x} at offset {offset} (record {key}); expected "
                               f"{MAGIC:#010x}: the .idx does not match this .rec, or the file is corrupt.")
        cflag, length = lrec >> 29, lrec & LENGTH_MASK
        data = handle.read(length)
        if len(data) < length:
            raise DCRFileError(f"{self.path}: record {key} at offset {offset} is truncated: {length} bytes announced, "
                               f"{len(data)} left in the file.")
        return cflag, data, offset + 8 + ((length + 3) & ~3)

    def read(self, offset: int, key: int) -> bytes:
        """The payload of the record at `offset` (key `key`, for messages), its parts joined."""
        cflag, data, following = self._part(offset, key)
        if cflag == 0:
            return data
        if cflag != 1:
            raise DCRFileError(f"{self.path}: record {key} at offset {offset} starts with continuation flag {cflag}; "
                               "a record starts with 0 (whole) or 1 (first part): the .idx does not match this .rec.")
        parts = [data]
        while cflag != 3:
            cflag, data, following = self._part(following, key)
            if cflag not in (2, 3):
                raise DCRFileError(f"{self.path}: record {key} at offset {offset} is cut short: a part with flag "
                                   f"{cflag} follows its first part (expected 2 or 3).")
            parts.append(data)
        return MAGIC_BYTES.join(parts)

    def read_header(self, offset: int, key: int) -> RecordHeader:
        """The header of the record at `offset`, reading only its first bytes when it is not split."""
        handle = self._file()
        handle.seek(offset)
        head = handle.read(_HEAD_BYTES)
        if len(head) >= 8 + HEADER.size:
            magic, lrec = struct.unpack_from("<II", head)
            length, flag = lrec & LENGTH_MASK, HEADER.unpack_from(head, 8)[0]
            if magic == MAGIC and lrec >> 29 == 0 and length >= HEADER.size + 4 * flag and 8 + HEADER.size + 4 * flag <= len(head):
                if offset + 8 + length > self.size:
                    raise DCRFileError(f"{self.path}: record {key} at offset {offset} is truncated: {length} bytes "
                                       f"announced, {self.size - offset - 8} left in the file.")
                return unpack_record(head[8 : 8 + HEADER.size + 4 * flag])[0]
        return self.unpack(offset, key)[0]

    def unpack(self, offset: int, key: int) -> tuple[RecordHeader, bytes]:
        """The header and image bytes of the record at `offset`."""
        try:
            return unpack_record(self.read(offset, key))
        except DCRFileError:
            raise
        except DCRInputError as error:
            raise DCRFileError(f"{self.path}: record {key} at offset {offset}: {error}") from None


@dataclass
class RecordIOPack:
    """The index of a pack: the images' `keys` and `offsets` (int64 `[images]`) and `labels` (int32
    `[images]`, identities 0..num_classes-1), and the pack's `num_classes` and image size (an
    `indexed.ImageIndex`)."""

    root: str
    record_file: RecordFile
    keys: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    num_classes: int
    image_size: tuple[int, int]
    convention: str  # "insightface" (header record 0 and identity records) or "im2rec" (every key an image)

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def label_names(self) -> list[str]:
        return [str(i) for i in range(self.num_classes)]

    def image(self, position: int) -> dict[str, Any]:
        """Image `position` as the value of an undecoded `datasets.Image`: `{"bytes", "path"}`, the
        path naming the file and the key for messages."""
        key = int(self.keys[position])
        _, image = self.record_file.unpack(int(self.offsets[position]), key)
        return {"bytes": image, "path": f"{self.record_file.path}[key {key}]"}


def open_pack(root: PathLike, *, follow_symlinks_outside_root: bool = False) -> RecordIOPack:
    """Read a pack's index and labels from `root` (holding `train.rec`, `train.idx`, `property`).

    insightface packs: labels come from their identity records (one read per identity); im2rec
    packs: from each image's header (one small read per image, done once here). Raises
    `DCRFileNotFoundError` for a missing file, `DCRFileError` for an index that does not match
    the `.rec` (an offset past its end, an offset not at a record), a bad magic or a truncated record.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise DCRFileNotFoundError(f"RecordIO folder not found: '{root}'; expected a folder holding "
                                   f"{REC_FILE}, {IDX_FILE} and {PROPERTY_FILE}.")
    paths = {}
    for name in (REC_FILE, IDX_FILE, PROPERTY_FILE):
        path = root_path / name
        if not path.is_file():
            raise DCRFileNotFoundError(f"RecordIO {name} not found in '{root}'; a pack is {REC_FILE}, {IDX_FILE} and "
                                       f"{PROPERTY_FILE} (num_classes,height,width) side by side.")
        paths[name] = confine_to_root(path, root_path, follow_symlinks_outside_root=follow_symlinks_outside_root)
    num_classes, height, width = read_property(paths[PROPERTY_FILE])
    keys, offsets = read_index(paths[IDX_FILE])
    record_file = RecordFile(paths[REC_FILE])
    beyond = np.flatnonzero(offsets + 8 > record_file.size)
    if len(beyond):
        raise DCRFileError(f"{paths[IDX_FILE]}: key {keys[beyond[0]]} has offset {offsets[beyond[0]]}, beyond the end of "
                           f"{record_file.path} ({record_file.size} bytes): the .idx does not match the .rec.")
    first = record_file.unpack(int(offsets[0]), int(keys[0]))
    if _is_insightface_header(int(keys[0]), *first):
        keys, offsets, labels = _insightface_images(paths[IDX_FILE], record_file, keys, offsets, first[0])
        convention = "insightface"
    else:
        labels = _header_labels(record_file, keys, offsets)
        convention = "im2rec"
    if len(labels) and (labels.max() >= num_classes):
        bad = int(np.argmax(labels))
        raise DCRInputError(f"{record_file.path}: record {keys[bad]} has label {labels[bad]}, but "
                            f"{paths[PROPERTY_FILE]} says {num_classes} classes (labels 0..{num_classes - 1}).")
    logger.info(f"RecordIO pack {root}: {len(offsets)} images, {num_classes} identities ({convention} layout).")
    return RecordIOPack(str(root), record_file, keys, offsets, labels, num_classes, (height, width), convention)


def _is_insightface_header(key: int, header: RecordHeader, image: bytes) -> bool:
    # Record 0 with two labels and no image; an im2rec image with two labels has its image bytes.
    return key == 0 and header.flag == 2 and not image


def _insightface_images(idx_path: Path, record_file: RecordFile, keys: np.ndarray, offsets: np.ndarray,
                        header: RecordHeader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The images (keys `1 .. end-1`) of an insightface pack, labelled by its identity records."""
    image_end, identity_end = (int(value) for value in header.labels)
    image_keys = np.arange(1, image_end, dtype=np.int64)
    positions = _positions(keys, image_keys, idx_path, "image")
    labels = np.full(len(image_keys), -1, dtype=np.int32)
    identity_keys = np.arange(image_end, identity_end, dtype=np.int64)
    if len(identity_keys):
        for identity, position in enumerate(_positions(keys, identity_keys, idx_path, "identity record")):
            key = int(keys[position])
            record = record_file.read_header(int(offsets[position]), key)
            if record.labels is None or len(record.labels) < 2:
                raise DCRFileError(f"{record_file.path}: identity record {key} has no (first image key, end key) labels.")
            start, stop = int(record.labels[0]), int(record.labels[1])
            if not 1 <= start <= stop <= image_end:
                raise DCRFileError(f"{record_file.path}: identity record {key} spans image keys {start}..{stop - 1}, "
                                   f"outside the images 1..{image_end - 1} of its header record.")
            labels[start - 1 : stop - 1] = identity
    unlabelled = np.flatnonzero(labels < 0)
    if len(unlabelled):
        # No identity records (or some images outside them): each image's own header says.
        labels[unlabelled] = _header_labels(record_file, keys[positions[unlabelled]], offsets[positions[unlabelled]])
    return keys[positions], offsets[positions], labels


def _positions(keys: np.ndarray, wanted: np.ndarray, idx_path: Path, what: str) -> np.ndarray:
    positions = np.searchsorted(keys, wanted)
    found = positions < len(keys)
    found[found] = keys[positions[found]] == wanted[found]
    if not found.all():
        raise DCRFileError(f"{idx_path}: the header record announces {what} key {wanted[~found][0]}, which the .idx "
                           "does not list: the .idx does not match the .rec.")
    return positions


def _header_labels(record_file: RecordFile, keys: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The identity of every record, read from its header (one small read each), as int32 `[records]`."""
    if len(keys) > 100_000:
        logger.info(f"{record_file.path}: reading the labels of {len(keys)} records from their headers (once).")
    labels = np.empty(len(keys), dtype=np.int32)
    block = 1 << 16  # Python ints for one block of keys at a time, not for the whole pack
    for start in range(0, len(keys), block):
        stop = start + block
        for position, key, offset in zip(range(start, stop), keys[start:stop].tolist(), offsets[start:stop].tolist()):
            value = record_file.read_header(offset, key).class_label
            if value < 0 or value != int(value) or value >= 2**31:
                raise DCRFileError(f"{record_file.path}: record {key} has label {value}; expected a class id >= 0.")
            labels[position] = int(value)
    return labels


def _pack_rows(pack: RecordIOPack):
    """The rows of a pack, each image checked to decode (a record that does not is named)."""
    import PIL.Image

    from .decode import DECODE_ERRORS

    for position in range(len(pack)):
        image = pack.image(position)
        try:
            with PIL.Image.open(io.BytesIO(image["bytes"])) as opened:
                opened.verify()
        except DECODE_ERRORS as error:
            raise DCRFileError(f"{image['path']}: the image bytes cannot be decoded ({error}); nothing was written.") from None
        yield {"image": {"bytes": image["bytes"], "path": None}, "label": int(pack.labels[position])}


def pack_to_dataset(root: PathLike, *, cache_dir: PathLike | None = None, follow_symlinks_outside_root: bool = False):
    """A pack as a `datasets.Dataset` with the image bytes embedded (`image` + `label` ClassLabel),
    written record by record to an Arrow file under `cache_dir` (`Dataset.from_generator`; default
    the `datasets` cache), never held in memory."""
    from datasets import ClassLabel, Dataset
    from datasets.exceptions import DatasetGenerationError

    from .features import identity_features

    pack = open_pack(root, follow_symlinks_outside_root=follow_symlinks_outside_root)
    features = identity_features(ClassLabel(names=pack.label_names))
    try:
        # The pack's index is in the generator's arguments: a rewritten pack is not read back from the cache.
        return Dataset.from_generator(_pack_rows, features=features, gen_kwargs={"pack": pack},
                                      cache_dir=None if cache_dir is None else str(cache_dir))
    except DatasetGenerationError as error:
        # The generator's own one-line errors, not the builder's wrapper around them.
        if isinstance(error.__cause__, DCRInputError):
            raise error.__cause__ from None
        raise


def load_recordio(root: PathLike, *, follow_symlinks_outside_root: bool = False):
    """The training set of a pack: a `RecordIODataset` for a RecordIO folder, or the `train` split of
    a folder written by `python -m dcr_hf.data prepare --dataset recordio`."""
    from ._layout import load_prepared

    prepared = load_prepared(root, "recordio", splits=("train",))
    if prepared is not None:
        return prepared["train"]
    return IndexedImageDataset(open_pack(root, follow_symlinks_outside_root=follow_symlinks_outside_root))


__all__ = [
    "HEADER",
    "MAGIC",
    "RecordFile",
    "RecordHeader",
    "RecordIOPack",
    "load_recordio",
    "open_pack",
    "pack_to_dataset",
    "read_index",
    "read_property",
    "unpack_record",
]
