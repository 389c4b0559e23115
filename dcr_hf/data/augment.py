"""Training-time augmentations, batched on `[batch, 3, H, W]` tensors on any device.

`"flip"` (random horizontal flip, the original's default), `"none"`, and `"aug_plus"` (the
original's random resized crop, colour jitter, grayscale, blur and flip, with kornia). Each
sample draws one augmentation; its HR image and every LR copy are made from that one view.

Every random draw is made on the CPU from torch's global generator, whatever the device of the
images: the flips by `draw_flips`, kornia's parameters by its modules, which sample on the CPU
until moved (`build_aug_plus` leaves them there; kornia moves the drawn parameters to the
images' device itself). That generator's state is what `Trainer` checkpoints save and restore,
so a resumed run draws what an uninterrupted one would, and a GPU run draws what a CPU run does.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors_dcr import DCRInputError

#: Train-time augmentations `TrainTransform` and `train_hf.py --augmentation` accept.
AUGMENTATIONS = ("flip", "none", "aug_plus")


def check_augmentation(augmentation: str, allowed: tuple[str, ...] = AUGMENTATIONS) -> str:
    if augmentation not in allowed:
        raise DCRInputError(f"augmentation={augmentation!r} is not supported; expected one of {allowed}.")
    return augmentation


def draw_flips(count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Which of `count` samples to flip: bool `[count]`, each with probability 1/2, drawn on the CPU
    from `generator` (default: the global CPU generator, whose state checkpoints save)."""
    return torch.rand(count, generator=generator) < 0.5


def apply_flips(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Flip horizontally the samples (dim 0) of `images` where `flips` is true, all their copies alike."""
    if images.device.type == "cuda":  # from pinned memory without waiting for the device
        flips = flips.pin_memory().to(images.device, non_blocking=True)
    mask = flips.to(images.device).view(-1, *([1] * (images.ndim - 1)))
    return torch.where(mask, images.flip(-1), images)


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each sample (dim 0) horizontally with probability 1/2, all of its copies alike."""
    return apply_flips(images, draw_flips(images.shape[0], generator))


def build_aug_plus(image_size: int) -> torch.nn.Module:
    """The original's "aug-plus" set, less its final horizontal flip, as one kornia pipeline on
    `[batch, 3, H, W]` images in [0, 1].

    The flip is drawn separately (`random_flip`), which is cheaper and draws from the same
    distribution: the colour and blur steps commute with a flip, and the random crop's position
    distribution is mirror-symmetric. Parameters are drawn per sample from the global CPU torch
    generator (kornia takes no generator; the module is left on the CPU, where kornia samples, and
    applies them on the images' device), so `torch.manual_seed` / `transformers.set_seed` and
    DataLoader worker seeding make it repeatable.
    """
    import kornia.augmentation as K

    max_sigma = 2.0
    # Wide enough for the largest sigma (3 sigma on each side).
    kernel_size = 2 * int(np.ceil(3 * max_sigma)) + 1
    return K.ImageSequential(
        K.RandomResizedCrop((image_size, image_size), scale=(0.2, 1.0)),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((kernel_size, kernel_size), sigma=(0.1, max_sigma), p=0.5),
    )


__all__ = ["AUGMENTATIONS", "apply_flips", "build_aug_plus", "check_augmentation", "draw_flips", "random_flip"]
