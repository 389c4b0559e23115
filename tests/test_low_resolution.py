"""The batched fast path of the LR operator against the processor whose matrices it uses."""

import pytest
import torch

from dcr_hf.image_processing_dcr import DCRImageProcessor
from dcr_hf.low_resolution import make_low_resolution_copies


@pytest.mark.parametrize(
    "downsample,upsample",
    [("lanczos", "bilinear"), ("lanczos", "bicubic"), ("lanczos", "lanczos"),
     ("bicubic", "bilinear"), ("bilinear", "bicubic"), ("area", "nearest")],
)
def test_make_low_resolution_copies_matches_the_processor(downsample, upsample):
    torch.manual_seed(6)
    processor = DCRImageProcessor(
        image_size=40, image_mean=(0.4, 0.5, 0.6), image_std=(0.2, 0.25, 0.3),
        downsample_interpolation=downsample, upsample_interpolation=upsample,
    )
    # Pixels of 8-bit images, as decoding makes them (the 8-bit operator rounds to those levels anyway).
    pixels01 = processor.rescale_pixels(torch.randint(0, 256, (3, 3, 40, 40)))
    copies = make_low_resolution_copies(pixels01, (5, 16), processor)
    normalized = make_low_resolution_copies(processor.normalize_pixels(pixels01), (5, 16), processor, normalized=True)
    assert copies.shape == (3, 2, 3, 40, 40)
    for index, size in enumerate((5, 16)):
        # Oracle: the processor's own LR simulation (one size at a time, clamped to [0, 1]).
        expected = processor.simulate_low_resolution(pixels01, size)
        if processor.low_resolution_in_8_bits:
            # Same matrices, same rounding points, exact float64 products: equal to the bit.
            assert torch.equal(copies[:, index], expected)
            assert torch.equal(normalized[:, index], processor.normalize_pixels(expected))
        else:
            torch.testing.assert_close(copies[:, index], expected, atol=2e-6, rtol=0)
            torch.testing.assert_close(normalized[:, index], processor.normalize_pixels(expected), atol=2e-5, rtol=0)


@pytest.mark.parametrize("downsample", ["lanczos", "bicubic"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_make_low_resolution_copies_keeps_the_dtype_and_the_input(downsample, dtype):
    pixel_values = torch.rand(2, 3, 32, 32).to(dtype)
    before = pixel_values.clone()
    processor = DCRImageProcessor(image_size=32, downsample_interpolation=downsample)
    copies = make_low_resolution_copies(pixel_values, (8,), processor, normalized=True)
    assert copies.dtype == dtype and copies.shape == (2, 1, 3, 32, 32)
    assert torch.equal(pixel_values, before)  # not modified in place
    expected = processor.normalize_pixels(processor.simulate_low_resolution(pixel_values.float() * 0.5 + 0.5, 8))
    torch.testing.assert_close(copies[:, 0].float(), expected, atol=1e-2, rtol=0)


def test_sizes_and_image_shape_are_checked():
    processor = DCRImageProcessor(image_size=32)
    with pytest.raises(ValueError, match="below image_size=32"):
        make_low_resolution_copies(torch.rand(1, 3, 32, 32), (8, 32), processor)
    with pytest.raises(ValueError, match="needs 32x32 images"):
        make_low_resolution_copies(torch.rand(1, 3, 40, 40), (8,), processor)
