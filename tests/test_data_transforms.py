import logging
import pickle

import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest
import torch
from datasets import Dataset, Image, List

from tests.layouts import pil_low_resolution_batch, smooth_photo

from dcr_hf.data.transforms import (
    CorruptImageError,
    EvalTransform,
    FinetuneTransform,
    PairTransform,
    TrainTransform,
    apply_transform,
)
from dcr_hf.image_processing_dcr import DCRImageProcessor
from dcr_hf.low_resolution import make_low_resolution_copies


SIZES = (8, 12, 16, 20)


def save(path, array_or_image, **kwargs):
    image = array_or_image if isinstance(array_or_image, PIL.Image.Image) else PIL.Image.fromarray(array_or_image)
    image.save(path, **kwargs)
    return str(path)


@pytest.fixture(scope="module")
def jpeg_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    paths = []
    for index in range(8):
        folder = root / f"id_{index // 2}"
        folder.mkdir(exist_ok=True)
        paths.append(save(folder / f"{index}.jpg", smooth_photo(rng), quality=95))
    return paths


def path_dataset(paths, labels=None):
    labels = list(range(len(paths))) if labels is None else labels
    return Dataset.from_dict({"image": paths, "label": labels}).cast_column("image", Image())


def oracle(path, size=120):
    """Independent decode: PIL RGB, resized by PIL if needed, normalized with mean = std = 0.5."""
    image = PIL.Image.open(path).convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), PIL.Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy((array - 0.5) / 0.5).permute(2, 0, 1)


def lr_oracle(pixel_values, sizes=SIZES):
    """The original's LR copies of normalized HR pixels, made by PIL itself (independent of dcr_hf)."""
    return torch.stack([pil_low_resolution_batch(pixel_values, s) for s in sizes], dim=1)


@pytest.mark.parametrize("augmentation", ["none", "flip", "aug_plus"])
def test_train_batch_shapes_dtypes_and_range(jpeg_files, augmentation):
    dataset = apply_transform(path_dataset(jpeg_files), TrainTransform(augmentation=augmentation))
    torch.manual_seed(0)
    batch = dataset[:5]
    assert batch["pixel_values"].shape == (5, 3, 120, 120)
    assert batch["low_resolution_pixel_values"].shape == (5, 4, 3, 120, 120)
    assert batch["pixel_values"].dtype == batch["low_resolution_pixel_values"].dtype == torch.float32
    assert batch["labels"].dtype == torch.int64 and batch["labels"].tolist() == [0, 1, 2, 3, 4]
    for key in ("pixel_values", "low_resolution_pixel_values"):
        assert batch[key].min() >= -1.0 and batch[key].max() <= 1.0
        assert batch[key].std() > 0.05


def test_no_augmentation_matches_independent_decoding(jpeg_files):
    batch = apply_transform(path_dataset(jpeg_files), TrainTransform(augmentation="none"))[:]
    expected = torch.stack([oracle(path) for path in jpeg_files])
    torch.testing.assert_close(batch["pixel_values"], expected, atol=1e-6, rtol=0)


def test_flip_flips_some_samples_whole(jpeg_files):
    torch.manual_seed(1)
    batch = apply_transform(path_dataset(jpeg_files), TrainTransform(augmentation="flip"))[:]
    flipped = []
    for pixel_values, path in zip(batch["pixel_values"], jpeg_files):
        reference = oracle(path)
        if torch.allclose(pixel_values, reference, atol=1e-6):
            flipped.append(False)
        else:
            torch.testing.assert_close(pixel_values, reference.flip(-1), atol=1e-6, rtol=0)
            flipped.append(True)
    assert any(flipped) and not all(flipped)


@pytest.mark.parametrize("augmentation", ["flip", "aug_plus"])
def test_low_resolution_copies_come_from_the_augmented_view(jpeg_files, augmentation):
    torch.manual_seed(2)
    batch = apply_transform(path_dataset(jpeg_files), TrainTransform(augmentation=augmentation))[:]
    torch.testing.assert_close(
        batch["low_resolution_pixel_values"], lr_oracle(batch["pixel_values"]), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("augmentation", ["flip", "aug_plus"])
def test_deterministic_under_torch_seed(jpeg_files, augmentation):
    dataset = apply_transform(path_dataset(jpeg_files), TrainTransform(augmentation=augmentation))
    torch.manual_seed(3)
    first = dataset[:]
    torch.manual_seed(3)
    second = dataset[:]
    torch.manual_seed(4)
    third = dataset[:]
    for key in first:
        assert torch.equal(first[key], second[key])
    assert not torch.equal(first["pixel_values"], third["pixel_values"])


@pytest.mark.parametrize("augmentation", ["none", "flip", "aug_plus"])
def test_deferred_transform_sends_uint8_and_the_step_makes_the_same_inputs(jpeg_files, augmentation):
    options = {"augmentation": augmentation, "low_resolution_sizes": (8, 20, 12)}
    torch.manual_seed(5)
    eager = apply_transform(path_dataset(jpeg_files), TrainTransform(**options))[:]
    transform = TrainTransform(defer_low_resolution=True, **options)
    deferred = apply_transform(path_dataset(jpeg_files), transform)[:]
    # The loader side: the decoded images as they are (uint8, 4x fewer bytes than float32).
    assert set(deferred) == {"pixel_values", "labels"}
    assert deferred["pixel_values"].dtype == torch.uint8 and deferred["pixel_values"].shape == (8, 3, 120, 120)
    expected = torch.stack([oracle(path) for path in jpeg_files])
    torch.testing.assert_close(DCRImageProcessor().normalize_pixels(deferred["pixel_values"] / 255), expected, atol=1e-6, rtol=0)
    assert torch.equal(eager["labels"], deferred["labels"])
    # The step side, with the same draws: the same model inputs to the bit.
    torch.manual_seed(5)
    on_device = transform.model_inputs(deferred["pixel_values"])
    assert set(on_device) == {"pixel_values", "low_resolution_pixel_values"}
    for key in on_device:
        assert torch.equal(eager[key], on_device[key]), key


def test_step_side_draws_come_from_the_global_cpu_generator(jpeg_files):
    """kornia samples aug-plus's parameters on the CPU from torch's global generator (the state a
    Trainer checkpoint restores), whatever else the process draws from other generators."""
    transform = TrainTransform(augmentation="aug_plus", defer_low_resolution=True)
    images = apply_transform(path_dataset(jpeg_files), transform)[:]["pixel_values"]
    torch.manual_seed(6)
    state = torch.get_rng_state()
    first = transform.model_inputs(images)
    assert not torch.equal(torch.get_rng_state(), state)  # the draws advanced the global generator
    torch.set_rng_state(state)
    torch.Generator().manual_seed(99).seed()  # a private generator does not take part
    second = transform.model_inputs(images)
    third = transform.model_inputs(images)  # the generator moved on: other draws
    assert torch.equal(first["pixel_values"], second["pixel_values"])
    assert not torch.equal(first["pixel_values"], third["pixel_values"])
    assert all(module.device.type == "cpu" for module in transform._aug_plus.children())


def test_step_side_refuses_float_images(jpeg_files):
    with pytest.raises(ValueError, match="uint8"):
        TrainTransform(defer_low_resolution=True).model_inputs(torch.zeros(2, 3, 120, 120))


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: TrainTransform(low_resolution_sizes=(8, 120)), "below image_size"),
        (lambda: TrainTransform(DCRImageProcessor(image_size=16), low_resolution_sizes=(8, 20)), "below image_size"),
        (lambda: TrainTransform(low_resolution_sizes=(8, 8)), "duplicates"),
        (lambda: TrainTransform(low_resolution_sizes=(0,)), "whole number of pixels"),
        (lambda: TrainTransform(low_resolution_sizes=(8.5,)), "whole number of pixels"),
        (lambda: TrainTransform(augmentation="mixup"), "augmentation"),
        (lambda: TrainTransform(DCRImageProcessor(downsample_interpolation="hamming")), "downsample_interpolation"),
        (lambda: TrainTransform(DCRImageProcessor(upsample_interpolation="area")), "upsample_interpolation"),
        (lambda: TrainTransform(DCRImageProcessor(image_std=(0.5, 0.0, 0.5))), "std > 0"),
    ],
)
def test_invalid_options_fail_at_construction(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_odd_modes_and_sizes_become_image_size_rgb(tmp_path):
    rng = np.random.default_rng(7)
    rgb = smooth_photo(rng, 97, 131)
    large = smooth_photo(rng, 480, 480)
    paths = {
        "grey": save(tmp_path / "grey.png", PIL.Image.fromarray(rgb).convert("L")),
        "cmyk": save(tmp_path / "cmyk.jpg", PIL.Image.fromarray(rgb).convert("CMYK"), quality=95),
        "rgba": save(tmp_path / "rgba.png", PIL.Image.fromarray(rgb).convert("RGBA")),
        "sixteen": save(tmp_path / "sixteen.png", PIL.Image.fromarray(np.full((50, 50), 65535, np.uint16))),
        "odd": save(tmp_path / "odd.jpg", rgb, quality=95),
        "large": save(tmp_path / "large.jpg", large, quality=95),
    }
    batch = apply_transform(path_dataset(list(paths.values())), TrainTransform(augmentation="none"))[:]
    pixel_values = dict(zip(paths, batch["pixel_values"]))
    assert batch["pixel_values"].shape == (6, 3, 120, 120)
    assert batch["low_resolution_pixel_values"].shape == (6, 4, 3, 120, 120)
    grey = pixel_values["grey"]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    # A white 16-bit image stays white (PIL's plain convert would clip it).
    assert torch.allclose(pixel_values["sixteen"], torch.ones(3, 120, 120))
    reference = torch.from_numpy(np.array(PIL.Image.fromarray(rgb).resize((120, 120), PIL.Image.Resampling.BILINEAR)))
    reference = (reference.permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert (pixel_values["rgba"] - reference).abs().max() < 0.02
    assert (pixel_values["odd"] - reference).abs().mean() < 0.05
    # The large JPEG is decoded in full and resized by PIL (bilinear), exactly as the processor does.
    full = PIL.Image.open(paths["large"]).convert("RGB").resize((120, 120), PIL.Image.Resampling.BILINEAR)
    full = (torch.from_numpy(np.array(full)).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(pixel_values["large"], full, atol=1e-6, rtol=0)


def test_transform_accepts_decoded_pil_images(jpeg_files):
    images = [PIL.Image.open(path) for path in jpeg_files[:3]]
    batch = TrainTransform(augmentation="none")({"image": images, "label": [0, 1, 2]})
    expected = torch.stack([oracle(path) for path in jpeg_files[:3]])
    torch.testing.assert_close(batch["pixel_values"], expected, atol=1e-6, rtol=0)


def test_transforms_pickle(jpeg_files):
    transform = TrainTransform(augmentation="aug_plus")
    clone = pickle.loads(pickle.dumps(transform))
    batch = {"image": [{"bytes": None, "path": path} for path in jpeg_files[:4]], "label": [0, 1, 2, 3]}
    torch.manual_seed(8)
    first = transform(batch)
    torch.manual_seed(8)
    second = clone(batch)
    assert torch.equal(first["low_resolution_pixel_values"], second["low_resolution_pixel_values"])


@pytest.fixture
def files_with_truncated_jpeg(jpeg_files, tmp_path):
    with open(jpeg_files[0], "rb") as file:
        data = file.read()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    return [*jpeg_files[:3], str(truncated), *jpeg_files[3:6]], truncated


def test_corrupt_jpeg_is_skipped_with_a_warning_through_a_dataloader(files_with_truncated_jpeg, caplog):
    paths, truncated = files_with_truncated_jpeg
    dataset = apply_transform(path_dataset(paths), TrainTransform())
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False)
    with caplog.at_level(logging.WARNING):
        batches = list(loader)
    assert [len(batch["labels"]) for batch in batches] == [3, 3]
    assert torch.cat([batch["labels"] for batch in batches]).tolist() == [0, 1, 2, 4, 5, 6]
    assert batches[0]["low_resolution_pixel_values"].shape == (3, 4, 3, 120, 120)
    assert str(truncated) in caplog.text


def test_corrupt_jpeg_is_skipped_in_dataloader_workers(files_with_truncated_jpeg):
    paths, _ = files_with_truncated_jpeg
    dataset = apply_transform(path_dataset(paths), TrainTransform(augmentation="aug_plus"))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=1)
    assert sorted(torch.cat([batch["labels"] for batch in loader]).tolist()) == [0, 1, 2, 4, 5, 6]


def test_corrupt_jpeg_in_strict_mode_raises_naming_the_file(files_with_truncated_jpeg):
    paths, truncated = files_with_truncated_jpeg
    dataset = apply_transform(path_dataset(paths), TrainTransform(strict=True))
    with pytest.raises(CorruptImageError, match="truncated.jpg"):
        dataset[:4]


def test_batch_of_only_corrupt_images_is_an_empty_batch(files_with_truncated_jpeg, caplog):
    """The training step skips it (`DCRTrainer`); it used to raise and end training."""
    paths, truncated = files_with_truncated_jpeg
    dataset = apply_transform(path_dataset([str(truncated)] * 2), TrainTransform(low_resolution_sizes=[8, 12]))
    batch = dataset[:2]
    assert batch["pixel_values"].shape == (0, 3, 120, 120) and batch["labels"].shape == (0,)
    assert batch["low_resolution_pixel_values"].shape == (0, 2, 3, 120, 120)
    assert f"No row of this batch of 2 could be decoded (['{truncated}', '{truncated}'])" in caplog.text
    with pytest.raises(CorruptImageError, match=str(truncated)):
        apply_transform(path_dataset([str(truncated)] * 2), TrainTransform(strict=True))[:2]


def test_corrupt_embedded_bytes_are_named_by_their_path(jpeg_files):
    with open(jpeg_files[0], "rb") as file:
        data = file.read()
    rows = [{"bytes": data, "path": "id_0/good.jpg"}, {"bytes": data[:100], "path": "id_0/bad.jpg"}]
    dataset = Dataset.from_dict({"image": rows, "label": [0, 1]}).cast_column("image", Image())
    with pytest.raises(CorruptImageError, match="id_0/bad.jpg"):
        apply_transform(dataset, TrainTransform(strict=True))[:]


@pytest.mark.parametrize("intra_scale", [False, True])
def test_pair_transform(jpeg_files, intra_scale):
    pairs = Dataset.from_dict(
        {"image_a": jpeg_files[:4], "image_b": jpeg_files[4:8], "is_same": [1, 0, 1, 0]}
    ).cast_column("image_a", Image()).cast_column("image_b", Image())
    batch = apply_transform(pairs, PairTransform(intra_scale=intra_scale))[:]
    expected_a = torch.stack([oracle(path) for path in jpeg_files[:4]])
    expected_b = torch.stack([oracle(path) for path in jpeg_files[4:8]])
    torch.testing.assert_close(batch["pixel_values_a"], expected_a, atol=1e-6, rtol=0)
    torch.testing.assert_close(batch["pixel_values_b"], expected_b, atol=1e-6, rtol=0)
    torch.testing.assert_close(batch["low_resolution_pixel_values_b"], lr_oracle(expected_b), atol=1e-5, rtol=0)
    assert batch["is_same"].dtype == torch.bool and batch["is_same"].tolist() == [True, False, True, False]
    if intra_scale:
        torch.testing.assert_close(batch["low_resolution_pixel_values_a"], lr_oracle(expected_a), atol=1e-5, rtol=0)
    else:
        assert "low_resolution_pixel_values_a" not in batch


def test_eval_transform_with_and_without_synthetic_low_resolution(jpeg_files, tmp_path):
    rng = np.random.default_rng(9)
    real_probe = save(tmp_path / "probe.jpg", smooth_photo(rng, 40, 30), quality=95)
    dataset = path_dataset([jpeg_files[0], real_probe], labels=[3, 7])
    with_lr = apply_transform(dataset, EvalTransform())[:]
    torch.testing.assert_close(with_lr["low_resolution_pixel_values"], lr_oracle(with_lr["pixel_values"]), atol=1e-5, rtol=0)
    as_they_are = apply_transform(dataset, EvalTransform(low_resolution_sizes=()))[:]
    assert set(as_they_are) == {"pixel_values", "labels"} and as_they_are["labels"].tolist() == [3, 7]
    torch.testing.assert_close(as_they_are["pixel_values"][0], oracle(jpeg_files[0]), atol=1e-6, rtol=0)
    # The real low-resolution probe is only enlarged (bilinear), never degraded further.
    assert (as_they_are["pixel_values"][1] - oracle(real_probe)).abs().max() < 1e-5


def test_eval_transform_raises_on_corrupt_images(files_with_truncated_jpeg):
    paths, _ = files_with_truncated_jpeg
    with pytest.raises(CorruptImageError, match="truncated.jpg"):
        apply_transform(path_dataset(paths), EvalTransform(low_resolution_sizes=()))[:]


def test_finetune_transform_flips_all_copies_of_a_sample_together(jpeg_files, tmp_path):
    rng = np.random.default_rng(10)
    captures = [[save(tmp_path / f"{row}_{d}.jpg", smooth_photo(rng, 24 + 8 * d, 20 + 8 * d), quality=95) for d in range(3)] for row in range(6)]
    dataset = Dataset.from_dict(
        {"image": jpeg_files[:6], "low_resolution_images": captures, "label": list(range(6))}
    ).cast_column("image", Image()).cast_column("low_resolution_images", List(Image()))
    torch.manual_seed(11)
    batch = apply_transform(dataset, FinetuneTransform())[:]
    assert batch["pixel_values"].shape == (6, 3, 120, 120)
    assert batch["low_resolution_pixel_values"].shape == (6, 3, 3, 120, 120)
    flips = []
    for row in range(6):
        expected = torch.stack([oracle(jpeg_files[row]), *[oracle(path) for path in captures[row]]])
        got = torch.cat([batch["pixel_values"][row : row + 1], batch["low_resolution_pixel_values"][row]])
        flipped = not torch.allclose(got, expected, atol=1e-5)
        if flipped:
            torch.testing.assert_close(got, expected.flip(-1), atol=1e-5, rtol=0)
        flips.append(flipped)
    assert any(flips) and not all(flips)


def test_finetune_transform_rejects_ragged_capture_lists(jpeg_files):
    batch = {"image": jpeg_files[:2], "low_resolution_images": [jpeg_files[2:4], jpeg_files[4:5]], "label": [0, 1]}
    with pytest.raises(ValueError, match="same, non-zero number"):
        FinetuneTransform()(batch)


def test_apply_transform_reports_missing_columns(jpeg_files):
    with pytest.raises(KeyError, match="image_a"):
        apply_transform(path_dataset(jpeg_files), PairTransform())


@pytest.mark.parametrize("photo", ["large", "small", "exact", "grey", "exif"])
def test_every_transform_preprocesses_exactly_as_the_processor(face_photos, photo):
    """The one preprocessing definition: the HR and every LR tensor of the training, pair and SCface
    transforms equal `processor(image, low_resolution_size=s)` for the same file."""
    processor = DCRImageProcessor(image_mean=(0.45, 0.4, 0.35), image_std=(0.22, 0.25, 0.3))
    sizes = (8, 12, 16, 20)
    path = face_photos[photo]
    hr = processor(path).pixel_values[0]
    low = torch.stack([processor(path, low_resolution_size=s).pixel_values[0] for s in sizes])
    torch.testing.assert_close(processor(PIL.Image.open(path)).pixel_values[0], hr, atol=0, rtol=0)

    def exact(actual, expected):
        torch.testing.assert_close(actual, expected, atol=2e-5, rtol=0)

    train = TrainTransform(processor, sizes, augmentation="none")({"image": [path], "label": [0]})
    exact(train["pixel_values"][0], hr)
    exact(train["low_resolution_pixel_values"][0], low)
    pair = PairTransform(processor, sizes, intra_scale=True)({"image_a": [path], "image_b": [path], "is_same": [True]})
    for side in ("a", "b"):
        exact(pair[f"pixel_values_{side}"][0], hr)
        exact(pair[f"low_resolution_pixel_values_{side}"][0], low)
    evaluation = EvalTransform(processor, sizes)({"image": [{"bytes": open(path, "rb").read(), "path": None}]})
    exact(evaluation["pixel_values"][0], hr)
    exact(evaluation["low_resolution_pixel_values"][0], low)
    # SCface: real LR probes and fine-tuning captures are used as they are, like `processor(image)`.
    probe = EvalTransform(processor, low_resolution_sizes=())({"image": [path]})
    exact(probe["pixel_values"][0], hr)
    finetune = FinetuneTransform(processor, augmentation="none")(
        {"image": [path], "low_resolution_images": [[path, path]], "label": [0]}
    )
    exact(finetune["pixel_values"][0], hr)
    exact(finetune["low_resolution_pixel_values"][0], torch.stack([hr, hr]))


def test_exif_orientation_is_applied(face_photos):
    processor = DCRImageProcessor()
    upright = PIL.ImageOps.exif_transpose(PIL.Image.open(face_photos["exif"]))
    assert upright.size == (90, 140)  # stored 140 wide x 90 high, shown rotated
    torch.testing.assert_close(processor(face_photos["exif"]).pixel_values, processor(upright).pixel_values, atol=0, rtol=0)
    stored = PIL.Image.open(face_photos["exif"])
    stored.load()
    without_tag = PIL.Image.frombytes(stored.mode, stored.size, stored.tobytes())
    assert not torch.equal(processor(without_tag).pixel_values, processor(upright).pixel_values)
