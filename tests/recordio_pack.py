"""A small RecordIO pack writer for the tests, written from the format (not from the reader).

It writes what mxnet's `MXIndexedRecordIO` + `recordio.pack` write: each payload is the `IfQQ`
header, the float labels when `flag > 0`, then the image bytes; a payload is split into parts at
every 4-byte-aligned occurrence of the magic (continuation flags 1, 2, 3), the magic itself left
out; each record is padded to 4 bytes and its `key\\toffset` line goes to `train.idx`.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

MAGIC = 0xCED7230A


def encode_record(payload: bytes) -> bytes:
    """The bytes of one record in a `.rec` file (split where the magic sits at an aligned position)."""
    magic = struct.pack("<I", MAGIC)
    out = bytearray()
    start = 0
    for position in range(0, len(payload) - len(payload) % 4, 4):
        if payload[position : position + 4] == magic:
            out += magic + struct.pack("<I", ((1 if start == 0 else 2) << 29) | (position - start))
            out += payload[start:position]
            start = position + 4
    out += magic + struct.pack("<I", ((3 if start else 0) << 29) | (len(payload) - start))
    out += payload[start:]
    out += b"\0" * (-len(payload) % 4)
    return bytes(out)


def pack_payload(label: float | Sequence[float], image: bytes, id_: int = 0, id2: int = 0) -> bytes:
    """A payload: the header (`flag` = number of float labels, 0 for one scalar label), labels, image."""
    if isinstance(label, (int, float)):
        return struct.pack("<IfQQ", 0, float(label), id_, id2) + image
    labels = np.asarray(label, dtype="<f4")
    return struct.pack("<IfQQ", len(labels), 0.0, id_, id2) + labels.tobytes() + image


def encode_image(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def write_pack(
    root: Path,
    images: Sequence[np.ndarray | bytes],
    labels: Sequence[int],
    *,
    convention: str = "insightface",
    num_classes: int | None = None,
    extra_labels: int = 0,
    identity_records: bool = True,
    size: int = 112,
) -> list[int]:
    """Write `train.rec`, `train.idx`, `property` under `root`; returns the image keys in order.

    `convention`: "insightface" (record 0 a header, identity records after the images: labels must
    then be grouped by identity, 0, 0, 1, 1, ...) or "im2rec" (keys 0.. are the images).
    `extra_labels` > 0 stores each image's label as `1 + extra_labels` float labels (the class first).
    """
    root.mkdir(parents=True, exist_ok=True)
    records: list[tuple[int, bytes]] = []

    def label_of(label: int, index: int) -> float | list[float]:
        return float(label) if not extra_labels else [float(label)] + [0.5 + index + k for k in range(extra_labels)]

    first = 1 if convention == "insightface" else 0
    keys = list(range(first, first + len(images)))
    for key, image, label in zip(keys, images, labels):
        data = image if isinstance(image, bytes) else encode_image(image)
        records.append((key, pack_payload(label_of(label, key), data, id_=key)))
    if convention == "insightface":
        image_end = first + len(images)
        identities = sorted(set(labels))
        if identity_records:
            for offset, identity in enumerate(identities):
                members = [k for k, lab in zip(keys, labels) if lab == identity]
                records.append((image_end + offset, pack_payload([members[0], members[-1] + 1], b"")))
        end = image_end + (len(identities) if identity_records else 0)
        records.insert(0, (0, pack_payload([image_end, end], b"")))
    rec, idx = bytearray(), []
    for key, payload in records:
        idx.append(f"{key}\t{len(rec)}\n")
        rec += encode_record(payload)
    (root / "train.rec").write_bytes(bytes(rec))
    (root / "train.idx").write_text("".join(idx))
    classes = num_classes if num_classes is not None else max(labels) + 1
    (root / "property").write_text(f"{classes},{size},{size}\n")
    return keys


def record_offsets(root: Path) -> dict[int, int]:
    """key -> offset, from the pack's `train.idx`."""
    lines = (root / "train.idx").read_text().split()
    return {int(k): int(o) for k, o in zip(lines[::2], lines[1::2])}


def png_with_magic(pixels: np.ndarray) -> bytes:
    """PNG bytes of `pixels` with the magic placed at a 4-byte-aligned position inside them (in a
    private ancillary chunk, which decoders skip), so that the writer must split the record."""
    data = encode_image(pixels)
    magic = struct.pack("<I", MAGIC)
    # The chunk goes after the 8-byte signature and the 25-byte IHDR chunk; the payload adds 24
    # header bytes, so pad the chunk's data to put the magic at an aligned position of the payload.
    import zlib

    insert_at = 33
    for pad in range(4):
        body = b"x" * pad + magic + b"tail"
        chunk = struct.pack(">I", len(body)) + b"ruSt" + body
        chunk += struct.pack(">I", zlib.crc32(b"ruSt" + body) & 0xFFFFFFFF)
        candidate = data[:insert_at] + chunk + data[insert_at:]
        if (24 + insert_at + 8 + pad) % 4 == 0:
            return candidate
    raise AssertionError("unreachable")
