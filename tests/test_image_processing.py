import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest
import torch
from tests.layouts import pil_low_resolution, smooth_photo
from tests.models import tiny_config

from dcr_hf import DCRImageProcessor, DCRModel, convert_to_rgb, simulate_low_resolution


def _checkerboard(size=120):
    board = np.indices((size, size)).sum(0) % 2
    return board.astype(np.float32)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_any_mode_becomes_rgb(mode):
    image = PIL.Image.new(mode, (37, 53))
    assert convert_to_rgb(image).mode == "RGB"
    out = DCRImageProcessor()(image).pixel_values
    assert out.shape == (1, 3, 120, 120) and out.dtype == torch.float32


def test_16_bit_grey_is_rescaled_not_clipped():
    array = np.full((10, 10), 32768, dtype=np.uint16)  # mid grey in 16 bits
    rgb = np.asarray(convert_to_rgb(PIL.Image.fromarray(array)))
    assert 126 <= rgb.mean() <= 130


def test_numpy_and_tensor_inputs_match_pil():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(120, 120, 3), dtype=np.uint8)
    processor = DCRImageProcessor()
    from_pil = processor(PIL.Image.fromarray(array)).pixel_values
    from_hwc = processor(array).pixel_values
    from_chw = processor(torch.from_numpy(array).permute(2, 0, 1)).pixel_values
    torch.testing.assert_close(from_hwc, from_pil)
    torch.testing.assert_close(from_chw, from_pil)
    gray = processor(array[..., 0]).pixel_values
    torch.testing.assert_close(gray[0, 0], gray[0, 2])


def test_rescale_and_normalize_default_mean_std():
    processor = DCRImageProcessor()
    white = processor(PIL.Image.new("RGB", (120, 120), (255, 255, 255))).pixel_values
    black = processor(PIL.Image.new("RGB", (120, 120), (0, 0, 0))).pixel_values
    torch.testing.assert_close(white, torch.ones_like(white))
    torch.testing.assert_close(black, -torch.ones_like(black))


def test_resize_to_image_size():
    out = DCRImageProcessor(image_size=64)([PIL.Image.new("RGB", (250, 90)), np.zeros((20, 20, 3), np.uint8)])
    assert out.pixel_values.shape == (2, 3, 64, 64)


def test_lr_probe_carries_no_detail_finer_than_its_size():
    board = _checkerboard()
    image = PIL.Image.fromarray((board * 255).astype(np.uint8))
    processor = DCRImageProcessor()
    hr = processor(image).pixel_values
    lr = processor(image, low_resolution_size=8).pixel_values
    assert hr.std() > 0.9  # the one-pixel checkerboard is all detail
    assert lr.std() < 0.01  # ...which an 8x8 probe cannot hold: flat grey
    assert lr.mean().abs() < 0.02


def test_lr_keeps_coarse_structure():
    # a left/right split survives 8x8
    array = np.zeros((120, 120), dtype=np.uint8)
    array[:, 60:] = 255
    lr = DCRImageProcessor()(array, low_resolution_size=8).pixel_values[0, 0]
    assert lr[:, :30].mean() < -0.9 and lr[:, 90:].mean() > 0.9


def test_simulate_low_resolution_batched_any_leading_dims_and_torch_modes_are_linear():
    x = torch.rand(2, 5, 3, 40, 40, dtype=torch.float64)
    out = simulate_low_resolution(x, 8, downsample_interpolation="bicubic")
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out[1, 3], simulate_low_resolution(x[1, 3], 8, downsample_interpolation="bicubic"))
    # linear: commutes with an affine normalization
    torch.testing.assert_close(simulate_low_resolution((x - 0.5) / 0.5, 8, downsample_interpolation="bicubic"), (out - 0.5) / 0.5)
    lanczos = simulate_low_resolution(x, 8)  # the default: PIL's 8-bit operator
    assert lanczos.shape == x.shape and lanczos.dtype == x.dtype
    assert torch.equal(lanczos[1, 3], simulate_low_resolution(x[1, 3], 8))
    assert ((lanczos * 255) - (lanczos * 255).round()).abs().max() < 1e-4  # 8-bit levels
    with pytest.raises(ValueError, match="smaller than"):
        simulate_low_resolution(x, 40)
    with pytest.raises(ValueError, match="downsample_interpolation='hamming'"):
        simulate_low_resolution(x, 8, downsample_interpolation="hamming")
    with pytest.raises(ValueError, match="upsample_interpolation='lanczos' is not supported after downsample_interpolation='bicubic'"):
        simulate_low_resolution(x, 8, downsample_interpolation="bicubic", upsample_interpolation="lanczos")
    with pytest.raises(ValueError, match="upsample_interpolation='area'"):
        DCRImageProcessor(upsample_interpolation="area")


def _pil_decoded(path: str, size: int = 120) -> PIL.Image.Image:
    """Independent decode of a photo as the original read it: EXIF-rotated RGB, PIL bilinear to size."""
    image = PIL.ImageOps.exif_transpose(PIL.Image.open(path)).convert("RGB")
    return image if image.size == (size, size) else image.resize((size, size), PIL.Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def photos_120(tmp_path_factory) -> list[str]:
    """120x120 JPEG photos, the size of the original's aligned crops."""
    root = tmp_path_factory.mktemp("photos_120")
    rng = np.random.default_rng(3)
    paths = [str(root / f"{index}.jpg") for index in range(4)]
    for path in paths:
        PIL.Image.fromarray(smooth_photo(rng)).save(path, quality=90)
    return paths


@pytest.mark.parametrize("size", [8, 12, 16, 20])
def test_lanczos_lr_copy_equals_pil_on_jpeg_photos(size, face_photos, photos_120):
    """The default LR operator against PIL itself: Lanczos to s x s, then bilinear back, 8 bits each."""
    processor = DCRImageProcessor(do_normalize=False)
    assert processor.downsample_interpolation == "lanczos" and processor.upsample_interpolation == "bilinear"
    differences = []
    for path in [*face_photos.values(), *photos_120]:
        ours = processor(path, low_resolution_size=size).pixel_values[0].permute(1, 2, 0).numpy() * 255
        assert np.abs(ours - ours.round()).max() < 1e-3  # 8-bit levels
        expected = pil_low_resolution(_pil_decoded(path), size)
        differences.append(np.abs(ours.round() - expected.astype(np.float64)))
    differences = np.concatenate([d.ravel() for d in differences])
    # Measured here: identical to PIL (max and mean 0) for every photo and size.
    assert differences.max() <= 1 and differences.mean() < 0.01


@pytest.mark.parametrize("upsample", ["bilinear", "bicubic", "lanczos"])
def test_8_bit_operator_equals_pil_for_each_upsample_filter_and_odd_shapes(upsample):
    rng = np.random.default_rng(11)
    image = smooth_photo(rng, 45, 70)
    image[::7] = 255  # hard edges: Lanczos' negative lobes reach below 0 and above 255
    filters = {"bilinear": PIL.Image.Resampling.BILINEAR, "bicubic": PIL.Image.Resampling.BICUBIC, "lanczos": PIL.Image.Resampling.LANCZOS}
    pixels = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    for size, output in ((9, (45, 70)), (13, (60, 33))):
        ours = simulate_low_resolution(pixels, size, output_size=output, upsample_interpolation=upsample)
        low = PIL.Image.fromarray(image).resize((size, size), PIL.Image.Resampling.LANCZOS)
        expected = np.asarray(low.resize(output[::-1], filters[upsample]))
        assert np.array_equal((ours.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_lr_simulation_keeps_half_precision_dtype(dtype):
    pixels = torch.rand(2, 3, 32, 32).to(dtype)
    for mode in ("lanczos", "bicubic"):
        processor = DCRImageProcessor(image_size=32, downsample_interpolation=mode)
        out = processor(pixels, low_resolution_size=8).pixel_values
        assert out.shape == (2, 3, 32, 32)
        assert processor.simulate_low_resolution(pixels, 8).dtype == dtype


def test_older_folders_keep_their_bicubic_operator(tmp_path):
    """Folders saved before Lanczos was the default record "bicubic"; loading keeps it."""
    import json

    from transformers import AutoImageProcessor

    assert DCRImageProcessor().downsample_interpolation == "lanczos"
    DCRImageProcessor(image_size=32).save_pretrained(tmp_path)
    config_path = tmp_path / "preprocessor_config.json"
    saved = json.loads(config_path.read_text())
    assert saved["downsample_interpolation"] == "lanczos" and saved["upsample_interpolation"] == "bilinear"
    saved["downsample_interpolation"] = "bicubic"  # what an older folder holds
    config_path.write_text(json.dumps(saved))
    reloaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert reloaded.downsample_interpolation == "bicubic" and not reloaded.low_resolution_in_8_bits
    pixels = torch.rand(1, 3, 32, 32)
    expected = simulate_low_resolution(pixels, 8, downsample_interpolation="bicubic", clamp=(0.0, 1.0))
    torch.testing.assert_close(reloaded.simulate_low_resolution(pixels, 8), expected, atol=0, rtol=0)


def test_processor_saved_and_reloaded(tmp_path):
    from transformers import AutoImageProcessor

    processor = DCRImageProcessor(image_mean=(0.4, 0.5, 0.6), image_std=(0.2, 0.3, 0.4), downsample_interpolation="area")
    processor.save_pretrained(tmp_path)
    reloaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, DCRImageProcessor)
    assert reloaded.image_mean == [0.4, 0.5, 0.6] and reloaded.image_std == [0.2, 0.3, 0.4]
    assert reloaded.downsample_interpolation == "area"


def test_bad_lr_size():
    with pytest.raises(ValueError, match="low_resolution_size"):
        DCRImageProcessor(low_resolution_size=120)
    with pytest.raises(ValueError, match="low_resolution_size"):
        DCRImageProcessor()(PIL.Image.new("RGB", (120, 120)), low_resolution_size=0)


def test_per_call_settings_are_honoured_as_in_transformers(caplog):
    """Every setting may be given for one call (`image_mean`, `image_std`, `do_convert_rgb`, ...):
    the call behaves as a processor made with it, and the processor keeps its own settings."""
    rng = np.random.default_rng(5)
    image = PIL.Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    processor = DCRImageProcessor(image_size=32)
    options = {"image_mean": [0.4, 0.5, 0.6], "image_std": [0.2, 0.25, 0.3], "low_resolution_size": 8,
               "downsample_interpolation": "bicubic", "resample": "bicubic"}
    with caplog.at_level("WARNING"):
        per_call = processor(image, **options).pixel_values
    assert "ignores" not in caplog.text
    assert torch.equal(per_call, DCRImageProcessor(image_size=32, **options)(image).pixel_values)
    assert not torch.equal(per_call, processor(image, low_resolution_size=8).pixel_values)
    assert processor.image_mean == [0.5] * 3 and processor.downsample_interpolation == "lanczos"
    # One number for every channel, transformers' `size`, and no normalization.
    torch.testing.assert_close(processor(image, image_mean=0.5, image_std=0.25).pixel_values,
                               DCRImageProcessor(image_size=32, image_std=[0.25] * 3)(image).pixel_values, atol=0, rtol=0)
    assert processor(image, size={"height": 24, "width": 24}).pixel_values.shape == (1, 3, 24, 24)
    unnormalized = processor(image, do_normalize=False).pixel_values
    assert torch.equal(processor.normalize_pixels(unnormalized), processor(image).pixel_values)
    # do_convert_rgb: a grey image is converted by default, refused in one line without conversion.
    grey = image.convert("L")
    assert processor(grey).pixel_values.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="mode L with do_convert_rgb=False"):
        processor(grey, do_convert_rgb=False)
    with pytest.raises(ValueError, match="image_mean and image_std need 3 values"):
        processor(image, image_mean=[0.5, 0.5])
    with caplog.at_level("WARNING"):
        processor(image, not_an_option=1)
    assert "not_an_option" in caplog.text


def test_input_and_output_data_format_per_call():
    """`input_data_format` says where the channels are (a shape alone can be read both ways);
    `data_format="channels_last"` gives `[batch, H, W, 3]`."""
    rng = np.random.default_rng(6)
    channels_last = rng.random((40, 4, 3), dtype=np.float32)  # 40 x 4 pixels: its last axis could be 4 channels
    processor = DCRImageProcessor(image_size=16)
    expected = processor(channels_last).pixel_values
    channels_first = np.ascontiguousarray(channels_last.transpose(2, 0, 1))  # [3, 40, 4]
    assert torch.equal(processor(channels_first, input_data_format="channels_first").pixel_values, expected)
    guessed = processor(channels_first).pixel_values  # read as 3 rows of 4-channel pixels: another image
    assert guessed.shape == expected.shape and not torch.allclose(guessed, expected)
    batch = torch.rand(2, 16, 16, 3)
    assert torch.equal(
        processor(batch, input_data_format="channels_last").pixel_values, processor(batch.permute(0, 3, 1, 2)).pixel_values
    )
    assert processor(batch, input_data_format="channels_last", data_format="channels_last").pixel_values.shape == (2, 16, 16, 3)
    with pytest.raises(ValueError, match="input_data_format"):
        processor(channels_first, input_data_format="none")
