import numpy as np
import PIL.Image
import pytest
import torch
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


def test_simulate_low_resolution_batched_any_leading_dims_and_is_linear():
    x = torch.rand(2, 5, 3, 40, 40, dtype=torch.float64)
    out = simulate_low_resolution(x, 8)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out[1, 3], simulate_low_resolution(x[1, 3], 8))
    # linear: commutes with an affine normalization
    torch.testing.assert_close(simulate_low_resolution((x - 0.5) / 0.5, 8), (out - 0.5) / 0.5)
    with pytest.raises(ValueError, match="smaller than"):
        simulate_low_resolution(x, 40)
    with pytest.raises(ValueError, match="interpolation"):
        simulate_low_resolution(x, 8, downsample_interpolation="lanczos")


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
