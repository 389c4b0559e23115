"""Image processor for DCR models, and the one low-resolution simulation used everywhere.

`simulate_low_resolution` is the single implementation of "make an s x s probe and bring it
back to the model's input size"; the image processor, the dataset transforms and the
on-device LR synthesis of the trainer all call it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.utils import logging

logger = logging.get_logger(__name__)

#: Interpolation modes accepted for the downsampling and upsampling steps.
INTERPOLATION_MODES = ("bicubic", "bilinear", "area", "nearest")


def convert_to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Return an 8-bit RGB copy of any PIL image (L, LA, P, RGBA, CMYK, YCbCr, 16-bit, float).

    PIL's own `convert("RGB")` clips 16-bit grey levels at 255 (a 16-bit scan turns white), so
    wide integer and float modes are rescaled to 8 bits first. Transparent images are composited
    on black, the same as dropping the alpha channel.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if mode == "F":
            peak = 1.0 if array.size and np.nanmax(array) <= 1.0 else 255.0
        elif mode == "I":
            peak = 65535.0 if array.size and array.max() > 255 else 255.0
        else:
            peak = 65535.0
        array = np.clip(np.nan_to_num(array) / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return PIL.Image.fromarray(array, mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB")


def _check_mode(name: str, mode: str) -> None:
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"{name}={mode!r} is not supported; expected one of {INTERPOLATION_MODES}.")


def simulate_low_resolution(
    pixel_values: torch.Tensor,
    size: int,
    output_size: int | Sequence[int] | None = None,
    downsample_interpolation: str = "bicubic",
    upsample_interpolation: str = "bilinear",
    antialias: bool = True,
    clamp: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Simulate a low-resolution probe: downsample to `size` x `size`, then resize back.

    Works on any float tensor shaped `[..., channels, height, width]` (a single image, a batch
    `[batch, 3, H, W]` or a multi-resolution batch) on any device, without a per-image loop.

    The original implementation used PIL's Lanczos filter for the downsampling step. torch has no
    Lanczos kernel, so the default is antialiased bicubic (PIL's other separable antialiasing
    filter): both low-pass the image before decimation, which is what removes detail finer than
    the probe size. Upsampling defaults to bilinear, as in the original.

    Resizing is linear, so the result is the same whether it is applied before or after a
    per-channel normalization (up to `clamp`); pass `clamp=(0, 1)` for `[0, 1]` pixels to mimic
    the uint8 rounding range of an image file.

    Args:
        pixel_values: float tensor `[..., C, H, W]`.
        size: side of the low-resolution image, in pixels (> 0).
        output_size: side (or `(height, width)`) to bring the image back to; defaults to the
            input's own height and width.
        downsample_interpolation / upsample_interpolation: one of `INTERPOLATION_MODES`.
        antialias: low-pass filter while downsampling (only for bilinear/bicubic).
        clamp: optional `(min, max)` to clamp the result to.

    Returns:
        Tensor with the same leading dimensions, `[..., C, out_h, out_w]`, same dtype and device.
    """
    if not torch.is_tensor(pixel_values) or not pixel_values.is_floating_point():
        raise ValueError(
            f"pixel_values must be a floating point tensor [..., C, H, W], got "
            f"{type(pixel_values).__name__}{'' if not torch.is_tensor(pixel_values) else ' of ' + str(pixel_values.dtype)}."
        )
    if pixel_values.ndim < 3:
        raise ValueError(f"pixel_values must have shape [..., C, H, W], got {tuple(pixel_values.shape)}.")
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive integer, got {size!r}.")
    _check_mode("downsample_interpolation", downsample_interpolation)
    _check_mode("upsample_interpolation", upsample_interpolation)

    *lead, channels, height, width = pixel_values.shape
    if output_size is None:
        out_hw = (height, width)
    elif isinstance(output_size, int):
        out_hw = (output_size, output_size)
    else:
        out_hw = (int(output_size[0]), int(output_size[1]))
    if size >= min(out_hw):
        raise ValueError(
            f"low-resolution size {size} must be smaller than the output size {out_hw}; "
            "the high-resolution image is not a low-resolution probe."
        )

    flat = pixel_values.reshape(-1, channels, height, width)
    # Interpolation kernels are fastest and best supported in float32; bf16/fp16 batches come back
    # in their own dtype.
    work = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()

    def _resize(x: torch.Tensor, hw: tuple[int, int], mode: str) -> torch.Tensor:
        kwargs = {}
        if mode in ("bilinear", "bicubic"):
            kwargs = {"align_corners": False, "antialias": antialias}
        return F.interpolate(x, size=hw, mode=mode, **kwargs)

    low = _resize(work, (size, size), downsample_interpolation)
    restored = _resize(low, out_hw, upsample_interpolation)
    if clamp is not None:
        restored = restored.clamp(clamp[0], clamp[1])
    return restored.to(pixel_values.dtype).reshape(*lead, channels, *out_hw)


def _to_float_tensor(image) -> torch.Tensor:
    """One image (PIL, numpy or torch; HWC or CHW; 8/16-bit integer, bool or float in [0, 1])
    -> float32 tensor `[3, H, W]` in [0, 1] (on the tensor's own device)."""
    if isinstance(image, PIL.Image.Image):
        array = np.asarray(convert_to_rgb(image))
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
    if isinstance(image, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(image))
    elif torch.is_tensor(image):
        tensor = image
    else:
        raise ValueError(f"cannot read an image from {type(image).__name__}; expected a PIL image, numpy array or tensor.")
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    elif tensor.ndim == 3:
        channels_first = tensor.shape[0] in (1, 2, 3, 4) and tensor.shape[-1] not in (1, 2, 3, 4)
        if not channels_first:
            tensor = tensor.permute(2, 0, 1)
    else:
        raise ValueError(f"an image must have 2 or 3 dimensions ([H, W], [C, H, W] or [H, W, C]), got {tuple(tensor.shape)}.")
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255.0
    elif tensor.dtype in (torch.uint16, torch.int16, torch.int32):
        tensor = tensor.float() / (65535.0 if tensor.max() > 255 else 255.0)
    else:
        tensor = tensor.float()
    channels = tensor.shape[0]
    if channels in (1, 2):  # grey or grey + alpha
        tensor = tensor[:1].expand(3, -1, -1)
    elif channels == 4:  # RGBA: drop alpha (CMYK should come as a PIL image)
        tensor = tensor[:3]
    elif channels != 3:
        raise ValueError(f"an image must have 1 to 4 channels, got {channels} (shape {tuple(tensor.shape)}).")
    return tensor.contiguous()


class DCRImageProcessor(BaseImageProcessor):
    r"""
    Prepares faces for a DCR model: any PIL / numpy / tensor image (grayscale, RGBA, CMYK, 16-bit
    included) -> RGB -> resized to `image_size` -> rescaled to [0, 1] -> optionally turned into a
    simulated low-resolution probe -> normalized.

    Args:
        image_size (`int`, defaults to 120): side of the square model input.
        do_resize (`bool`, defaults to `True`): resize inputs to `image_size`.
        interpolation (`str`, defaults to `"bilinear"`): resize mode (antialiased when shrinking).
        image_mean, image_std (`list[float]`, default 0.5 each): per-channel normalization.
        do_normalize (`bool`, defaults to `True`).
        low_resolution_size (`int`, *optional*): make every image an LR probe of this size (antialiased
            downsample to s x s, then back to `image_size`); can also be given per call.
        downsample_interpolation (`str`, defaults to `"bicubic"`), upsample_interpolation (`str`,
            defaults to `"bilinear"`): the two resizes of the LR simulation (see
            `simulate_low_resolution`; the original used Lanczos down, bilinear up).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        image_size: int = 120,
        do_resize: bool = True,
        interpolation: str = "bilinear",
        do_normalize: bool = True,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        low_resolution_size: int | None = None,
        downsample_interpolation: str = "bicubic",
        upsample_interpolation: str = "bilinear",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_mode("interpolation", interpolation)
        _check_mode("downsample_interpolation", downsample_interpolation)
        _check_mode("upsample_interpolation", upsample_interpolation)
        if len(image_mean) != 3 or len(image_std) != 3 or any(s <= 0 for s in image_std):
            raise ValueError(f"image_mean and image_std need 3 values (std > 0), got {image_mean} and {image_std}.")
        self.image_size = int(image_size)
        self.do_resize = do_resize
        self.interpolation = interpolation
        self.do_normalize = do_normalize
        self.image_mean = [float(m) for m in image_mean]
        self.image_std = [float(s) for s in image_std]
        self.low_resolution_size = low_resolution_size
        self.downsample_interpolation = downsample_interpolation
        self.upsample_interpolation = upsample_interpolation
        self._check_low_resolution_size(low_resolution_size)

    def _check_low_resolution_size(self, size: int | None) -> None:
        if size is not None and (int(size) <= 0 or int(size) >= self.image_size):
            raise ValueError(f"low_resolution_size={size} must be in (0, image_size={self.image_size}).")

    def simulate_low_resolution(self, pixel_values: torch.Tensor, size: int) -> torch.Tensor:
        """This processor's LR simulation on `[..., 3, H, W]` pixels in [0, 1] (any device)."""
        return simulate_low_resolution(
            pixel_values,
            size,
            output_size=self.image_size,
            downsample_interpolation=self.downsample_interpolation,
            upsample_interpolation=self.upsample_interpolation,
            clamp=(0.0, 1.0),
        )

    def normalize_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[..., 3, H, W]` in [0, 1] -> normalized with `image_mean` / `image_std`."""
        mean = torch.tensor(self.image_mean, dtype=pixel_values.dtype, device=pixel_values.device)[:, None, None]
        std = torch.tensor(self.image_std, dtype=pixel_values.dtype, device=pixel_values.device)[:, None, None]
        return (pixel_values - mean) / std

    def _resize(self, image: torch.Tensor) -> torch.Tensor:
        if not self.do_resize or image.shape[-2:] == (self.image_size, self.image_size):
            return image
        kwargs = {"antialias": True, "align_corners": False} if self.interpolation in ("bilinear", "bicubic") else {}
        out = F.interpolate(image.unsqueeze(0) if image.ndim == 3 else image, size=(self.image_size,) * 2,
                            mode=self.interpolation, **kwargs)
        return (out[0] if image.ndim == 3 else out).clamp(0.0, 1.0)

    def preprocess(
        self,
        images,
        low_resolution_size: int | None = None,
        return_tensors: str | None = "pt",
        device: str | torch.device | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Turn one image or a list/batch of images into `pixel_values` `[batch, 3, image_size, image_size]`.

        A float tensor batch `[batch, C, H, W]` (values in [0, 1]) is processed as one batch on its own
        device. `low_resolution_size` overrides the processor's default for this call.
        """
        if kwargs:
            logger.warning("DCRImageProcessor ignores unknown arguments: %s", sorted(kwargs))
        size = low_resolution_size if low_resolution_size is not None else self.low_resolution_size
        self._check_low_resolution_size(size)
        if torch.is_tensor(images) and images.ndim == 4:
            batch = self._resize(torch.stack([_to_float_tensor(img) for img in images]) if images.shape[1] != 3 or not images.is_floating_point() else images.float())
        else:
            if not isinstance(images, (list, tuple)):
                images = [images]
            if len(images) == 0:
                raise ValueError("no images were given.")
            batch = torch.stack([self._resize(_to_float_tensor(img)) for img in images])
        if device is not None:
            batch = batch.to(device)
        if size is not None:
            batch = self.simulate_low_resolution(batch, int(size))
        if self.do_normalize:
            batch = self.normalize_pixels(batch)
        if return_tensors in ("np", "numpy"):
            return BatchFeature({"pixel_values": batch.cpu().numpy()}, tensor_type="np")
        return BatchFeature({"pixel_values": batch}, tensor_type=None if return_tensors is None else "pt")


__all__ = ["DCRImageProcessor", "convert_to_rgb", "simulate_low_resolution", "INTERPOLATION_MODES"]
