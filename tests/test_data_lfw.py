"""LFW loaders: both pairs formats (with and without header), folds, missing images, identities."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from datasets import Image
from tests.layouts import lfw_name, make_lfw, pixels, read_pixels, write_official_pairs, write_original_pairs
from sklearn.model_selection import KFold

from dcr_hf.data.lfw import load_lfw_identities, load_lfw_pairs

IDENTITIES = {"Ann_Lee": 4, "Bo_Chen": 3, "Cy_Dee": 2, "Di_Eve": 1}


@pytest.fixture(scope="module")
def lfw_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lfw_root")
    make_lfw(root, IDENTITIES)
    return root


def _relative_paths(dataset, column: str) -> list[str]:
    items = dataset.cast_column(column, Image(decode=False))[column]
    return ["/".join(Path(item["path"]).parts[-2:]) for item in items]


def _official_sets() -> list[tuple[list, list]]:
    """Two sets of 3 matched + 3 mismatched pairs."""
    return [
        (
            [("Ann_Lee", 1, 2), ("Bo_Chen", 1, 3), ("Cy_Dee", 1, 2)],
            [("Ann_Lee", 1, "Bo_Chen", 2), ("Cy_Dee", 2, "Di_Eve", 1), ("Bo_Chen", 3, "Di_Eve", 1)],
        ),
        (
            [("Ann_Lee", 3, 4), ("Bo_Chen", 2, 3), ("Ann_Lee", 1, 4)],
            [("Di_Eve", 1, "Ann_Lee", 2), ("Bo_Chen", 1, "Cy_Dee", 1), ("Ann_Lee", 4, "Cy_Dee", 2)],
        ),
    ]


def _original_pairs(count: int) -> list[tuple[str, str, int]]:
    rng = np.random.default_rng(0)
    names = list(IDENTITIES)
    pairs = []
    for index in range(count):
        a, b = rng.choice(len(names), size=2)
        same = index % 2
        b = a if same else (a + 1) % len(names)
        pairs.append(
            (
                lfw_name(names[a], int(rng.integers(1, IDENTITIES[names[a]] + 1))),
                lfw_name(names[b], int(rng.integers(1, IDENTITIES[names[b]] + 1))),
                same,
            )
        )
    return pairs


def test_original_list_columns_and_contiguous_folds(tmp_path):
    make_lfw(tmp_path, IDENTITIES)
    pairs = _original_pairs(23)
    write_original_pairs(tmp_path, pairs)
    dataset = load_lfw_pairs(tmp_path)

    assert dataset.column_names == ["image_a", "image_b", "is_same", "fold"]
    assert isinstance(dataset.features["image_a"], Image) and dataset.features["is_same"].dtype == "bool"
    assert _relative_paths(dataset, "image_a") == [a for a, _, _ in pairs]
    assert _relative_paths(dataset, "image_b") == [b for _, b, _ in pairs]
    assert dataset["is_same"][:] == [bool(s) for _, _, s in pairs]
    # Oracle: unshuffled 10-fold KFold test blocks in file order.
    expected = np.empty(len(pairs), dtype=int)
    for fold, (_, test_index) in enumerate(KFold(n_splits=10).split(np.arange(len(pairs)))):
        expected[test_index] = fold
    assert dataset["fold"][:] == expected.tolist()
    row = dataset[0]
    np.testing.assert_array_equal(
        pixels(row["image_a"]), read_pixels(tmp_path / "LFW" / "LFW_120x120_120" / pairs[0][0])
    )


@pytest.mark.parametrize("header", [True, False])
def test_official_pairs_with_and_without_header(lfw_root, tmp_path, header):
    sets = _official_sets()
    pairs_file = write_official_pairs(tmp_path, sets, header=header)
    dataset = load_lfw_pairs(lfw_root, pairs_file=pairs_file)

    expected_a, expected_b, expected_same, expected_fold = [], [], [], []
    for fold, (matched, mismatched) in enumerate(sets):
        for name, n1, n2 in matched:
            expected_a.append(lfw_name(name, n1))
            expected_b.append(lfw_name(name, n2))
            expected_same.append(True)
            expected_fold.append(fold)
        for name1, n1, name2, n2 in mismatched:
            expected_a.append(lfw_name(name1, n1))
            expected_b.append(lfw_name(name2, n2))
            expected_same.append(False)
            expected_fold.append(fold)
    assert _relative_paths(dataset, "image_a") == expected_a
    assert _relative_paths(dataset, "image_b") == expected_b
    assert dataset["is_same"][:] == expected_same
    assert dataset["fold"][:] == expected_fold


def test_pairs_file_is_auto_detected_and_can_be_relative(lfw_root, tmp_path):
    make_lfw(tmp_path, IDENTITIES)
    write_official_pairs(tmp_path, _official_sets(), header=True)  # only LFW/pairs.txt exists
    assert len(load_lfw_pairs(tmp_path)) == 12
    write_official_pairs(tmp_path, _official_sets()[:1], header=False, name="one_set.txt")
    assert load_lfw_pairs(tmp_path, pairs_file="one_set.txt")["fold"][:] == [0] * 6
    # The original list takes precedence when both exist.
    write_original_pairs(tmp_path, _original_pairs(4))
    assert len(load_lfw_pairs(tmp_path)) == 4


def test_missing_images_dropped_in_one_warning_or_strict_error(tmp_path, caplog):
    make_lfw(tmp_path, IDENTITIES)
    pairs = _original_pairs(20)
    pairs[3] = (lfw_name("Ann_Lee", 1), lfw_name("Ghost_Face", 1), 0)
    pairs[17] = (lfw_name("Ann_Lee", 9), lfw_name("Ann_Lee", 1), 1)
    write_original_pairs(tmp_path, pairs)
    with caplog.at_level(logging.WARNING):
        dataset = load_lfw_pairs(tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Dropped 2 of 20 pairs" in warnings[0]
    assert len(dataset) == 18
    kept = [p for i, p in enumerate(pairs) if i not in (3, 17)]
    assert _relative_paths(dataset, "image_b") == [b for _, b, _ in kept]
    # Folds are the contiguous tenths of the pairs that remain.
    assert dataset["fold"][:] == np.repeat(np.arange(10), [2] * 8 + [1] * 2).tolist()

    with pytest.raises(
        FileNotFoundError, match=r"(?s)2 of 20 pairs.*Ghost_Face/Ghost_Face_0001\.jpg.*Ann_Lee_0009\.jpg"
    ):
        load_lfw_pairs(tmp_path, strict=True)


def test_missing_root_pairs_file_and_image_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)nowhere'.*Expected layout.*lfw_test_pair\.txt"):
        load_lfw_pairs(tmp_path / "nowhere")
    (tmp_path / "LFW" / "LFW_120x120_120").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"(?s)lfw_test_pair\.txt'.*Expected layout"):
        load_lfw_pairs(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"my_pairs\.txt"):
        load_lfw_pairs(tmp_path, pairs_file="my_pairs.txt")
    (tmp_path / "LFW" / "LFW_120x120_120").rmdir()
    write_original_pairs(tmp_path, _original_pairs(2))
    with pytest.raises(FileNotFoundError, match=r"(?s)LFW_120x120_120'.*Expected layout"):
        load_lfw_pairs(tmp_path)


@pytest.mark.parametrize(
    "lines, message",
    [
        (["A/A_0001.jpg A/A_0002.jpg 1", "A/A_0001.jpg B/B_0001.jpg 2"], r"lfw_test_pair\.txt:2: malformed line"),
        (["A/A_0001.jpg A/A_0002.jpg 1", "", "A/A_0001.jpg 0"], r"lfw_test_pair\.txt:3: malformed line"),
        (
            ["1\t2", "A\t1\t2", "A\t1\tB\t1", "B\t1\t2", "A\t1\tB\t2"],
            r"lfw_test_pair\.txt:3: malformed line 'A\\t1\\tB\\t1'; expected a matched",
        ),
        (["2\t1", "A\t1\t2", "A\t1\tB\t1"], r"lfw_test_pair\.txt:1: the header announces 2 sets of 1"),
        (["A\t1\t2", "A\tone\tB\t1"], r"lfw_test_pair\.txt:2: malformed line"),
    ],
)
def test_malformed_pairs_name_file_and_line(lfw_root, tmp_path, lines, message):
    path = tmp_path / "LFW" / "lfw_test_pair.txt"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        load_lfw_pairs(lfw_root, pairs_file=path)


def test_identities_one_class_per_folder(lfw_root, tmp_path):
    dataset = load_lfw_identities(lfw_root, cache_dir=tmp_path)
    # Di_Eve has a single image: not enough for retrieval with the default minimum of 2.
    assert dataset.features["label"].names == ["Ann_Lee", "Bo_Chen", "Cy_Dee"]
    names = [dataset.features["label"].int2str(label) for label in dataset["label"]]
    assert sorted(names) == sorted(name for name, count in IDENTITIES.items() if count >= 2 for _ in range(count))
    assert names == [path.split("/")[0] for path in _relative_paths(dataset, "image")]

    everyone = load_lfw_identities(lfw_root, min_images_per_identity=1, cache_dir=tmp_path)
    assert everyone.features["label"].names == sorted(IDENTITIES) and len(everyone) == sum(IDENTITIES.values())
    assert load_lfw_identities(lfw_root, min_images_per_identity=4, cache_dir=tmp_path).features["label"].names == [
        "Ann_Lee"
    ]
    with pytest.raises(ValueError, match="No LFW identity"):
        load_lfw_identities(lfw_root, min_images_per_identity=5, cache_dir=tmp_path)


@pytest.mark.parametrize(
    "line", ["/etc/passwd A/A_0001.jpg 0", "A/A_0001.jpg ../../secret.jpg 0", "A/A_0001.jpg A/../../x.jpg 1"]
)
def test_pairs_may_not_leave_the_image_folder(lfw_root, tmp_path, line):
    path = tmp_path / "pairs.txt"
    path.write_text(f"A/A_0001.jpg A/A_0002.jpg 1\n{line}\n")
    with pytest.raises(ValueError, match=r"pairs\.txt:2: image path .* leaves the image folder"):
        load_lfw_pairs(lfw_root, pairs_file=path)


def test_official_pairs_may_not_leave_the_image_folder(lfw_root, tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("A\t1\t2\n..\t1\tB\t1\n")
    with pytest.raises(ValueError, match=r"pairs\.txt:2: image path '\.\./\.\._0001\.jpg' leaves"):
        load_lfw_pairs(lfw_root, pairs_file=path)


def test_byte_order_mark_and_bad_bytes(lfw_root, tmp_path):
    path = tmp_path / "bom.txt"
    lines = _original_pairs(2)
    path.write_bytes(b"\xef\xbb\xbf" + "".join(f"{a} {b} {s}\n" for a, b, s in lines).encode())
    pairs = load_lfw_pairs(lfw_root, pairs_file=path)
    assert len(pairs) == 2  # the first line is read, not dropped or taken for a malformed one
    path.write_bytes(b"A/A_0001.jpg A/A_0002.jpg 1\nA/A_0001.jpg B/B\xe9.jpg 0\n")
    with pytest.raises(ValueError, match=r"bom\.txt:2: byte 0xe9 at column 17 is not UTF-8"):
        load_lfw_pairs(lfw_root, pairs_file=path)
