"""P x K batches from a streamed dataset (`dcr_hf.data.stream`): read through the same
`load_dataset(..., streaming=True)` call a Hub id takes, from a folder in the Hub's layout."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from dcr_hf.data.generic import load_face_stream
from dcr_hf.data.stream import IdentityBatchStream
from dcr_hf.errors_dcr import DCRInputError
from tests.layouts import make_hub_dataset


def _batches(stream: IdentityBatchStream, count: int) -> list[list[dict]]:
    iterator = iter(stream)
    return [next(iterator) for _ in range(count)]


def _labels(batch: list[dict]) -> list[int]:
    return [row["label"] for row in batch]


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    # 6 identities x 4 images, sorted by identity as face packs are, in 3 parquet shards.
    return make_hub_dataset(tmp_path_factory.mktemp("hub"), [i for i in range(6) for _ in range(4)], num_shards=3, size=8)


def test_batches_hold_p_identities_of_k_images(hub_folder):
    stream = load_face_stream(hub_folder)
    assert stream.features["label"].num_classes == 6
    batches = _batches(IdentityBatchStream(stream, 6, samples_per_class=2, batch_size=4, max_buffered_images=64), 30)
    for batch in batches:
        labels = _labels(batch)
        assert len(labels) == 4 and labels[0] == labels[1] and labels[2] == labels[3] and labels[0] != labels[2]
        assert all(set(row["image"]) == {"bytes", "path"} and row["image"]["bytes"] for row in batch)
    # 24 images make 6 batches a pass: every image is used once a pass, every identity trained on.
    first_pass = [row["image"]["bytes"] for batch in batches[:6] for row in batch]
    assert len(set(first_pass)) == 24
    assert Counter(label for batch in batches for label in _labels(batch)) == {i: 20 for i in range(6)}


def test_a_full_buffer_evicts_the_oldest_image_and_says_so(tmp_path, caplog):
    # Identity 0 holds one image: it never makes a batch of K=2 and, waiting, fills the buffer's oldest slot.
    folder = make_hub_dataset(tmp_path, [0, 1, 2, 1, 2, 3, 4, 3, 4], num_shards=1, size=8)
    stream = IdentityBatchStream(load_face_stream(folder), 5, samples_per_class=2, batch_size=4, max_buffered_images=4)
    with caplog.at_level(logging.WARNING, logger="dcr_hf.data.stream"):
        batches = _batches(stream, 2)
    assert sorted(set(_labels(batches[0]))) == [1, 2] and sorted(set(_labels(batches[1]))) == [3, 4]
    assert stream.state_dict()[0]["evicted"] == 1 and 0 not in stream.state_dict()[0]["rows"]["label"]
    assert "the stream buffer is full (--stream_buffer_images 4): 1 image evicted so far" in caplog.text


def test_a_pass_without_a_batch_is_one_line(tmp_path):
    folder = make_hub_dataset(tmp_path, [0, 1, 2, 3], num_shards=1, size=8)
    with pytest.raises(DCRInputError, match="a whole pass over the streamed dataset made no batch of 2 identities x 2"):
        _batches(IdentityBatchStream(load_face_stream(folder), 4, 2, 4, 64), 1)


def test_the_state_continues_the_batches_exactly(hub_folder):
    def stream():
        return IdentityBatchStream(load_face_stream(hub_folder), 6, 2, 4, max_buffered_images=5, seed=3)

    uninterrupted = _batches(stream(), 14)
    first = stream()
    iterator = iter(first)
    for _ in range(8):  # into the second pass, with images buffered and some evicted
        next(iterator)
    state, blob = first.state_dict()
    assert state["epoch"] == 1 and state["rows"]["label"] and blob
    resumed = stream()
    resumed.load_state_dict(state, blob)
    assert _batches(resumed, 6) == uninterrupted[8:]


def test_processes_get_disjoint_parts_of_the_same_batch_size(hub_folder):
    parts = [IdentityBatchStream(load_face_stream(hub_folder), 6, 2, 4, 64).for_process(rank, 2, seed=0)
             for rank in range(2)]
    seen = [{row["image"]["bytes"] for batch in _batches(part, 3) for row in batch} for part in parts]
    assert all(len(batch) == 4 for part in parts for batch in _batches(part, 3))
    assert not seen[0] & seen[1]


def test_bad_columns_are_one_line(tmp_path):
    folder = make_hub_dataset(tmp_path / "ints", [0, 0, 1, 1], num_shards=1, size=8, label_column="person", class_label=False)
    with pytest.raises(DCRInputError, match=r"--label_column 'label': the streamed dataset .* has no such column; it has \['image', 'person'\]"):
        load_face_stream(folder)
    with pytest.raises(DCRInputError, match="holds ints, not a ClassLabel: give --num_classes N"):
        load_face_stream(folder, label_column="person")
    with pytest.raises(DCRInputError, match="--image_column 'person' .* must be an Image column"):
        load_face_stream(folder, image_column="person", label_column="person", num_classes=2)
    stream = load_face_stream(folder, label_column="person", num_classes=2)
    assert stream.features["label"].num_classes == 2 and list(stream.features) == ["image", "label"]


def test_a_label_outside_the_classes_is_one_line(tmp_path):
    folder = make_hub_dataset(tmp_path, [0, 0, 5, 5], num_shards=1, size=8, class_label=False)
    with pytest.raises(DCRInputError, match=r"streamed row 2: label 5 is not a class id in 0..2"):
        _batches(IdentityBatchStream(load_face_stream(folder, num_classes=3), 3, 2, 4, 64), 1)


def test_the_saved_state_loads_back_and_a_damaged_one_is_one_line(tmp_path, hub_folder):
    import json

    from dcr_hf.data.stream import load_stream_state, save_stream_state

    stream = IdentityBatchStream(load_face_stream(hub_folder), 6, 2, 4, max_buffered_images=5, seed=3)
    iterator = iter(stream)
    for _ in range(3):
        next(iterator)
    save_stream_state(stream, tmp_path, rank=0)
    assert load_stream_state(tmp_path, 0) == stream.state_dict()
    state = json.loads((tmp_path / "stream_state-0.json").read_text())
    state["rows"]["length"][0] += 1
    (tmp_path / "stream_state-0.json").write_text(json.dumps(state))
    with pytest.raises(DCRInputError, match=r"stream_state-0.safetensors holds \d+ bytes of buffered images; its .json "
                                            r"names \d+: the checkpoint is damaged"):
        load_stream_state(tmp_path, 0)
