"""Training-time image augmentation, applied to intensities before spike encoding.

Random translation (``out[y, x] = in[y - dy, x - dx]``, zero where the shifted image leaves the
frame, ``dy, dx`` uniform in ``-max_shift .. max_shift`` per image) and random horizontal flip
(``in[y, W - 1 - x]`` with probability 1/2, before the shift), as image classifiers are commonly
trained. A flip changes a digit's meaning, and Fashion-MNIST's shoes all face one way: for our
fully connected networks on Fashion-MNIST a one-pixel shift helped and flips hurt (README).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["shift_and_flip"]


def shift_and_flip(
    images: torch.Tensor, generator: torch.Generator, max_shift: int = 0, flip: bool = False
) -> torch.Tensor:
    """Randomly translated (and flipped) copies of ``images`` ``[B, H, W]``.

    The offsets ``dy, dx`` and the flip bits are drawn from ``generator`` (on the CPU) whenever
    augmentation is on, in that order, so a run and its resumed copy draw the same ones.

    Raises:
        ValueError: images not ``[B, H, W]``, or ``max_shift`` negative or not below ``min(H, W)``.
    """
    if images.dim() != 3:
        raise ValueError(f"augmentation takes images [B, H, W]; got shape {tuple(images.shape)}")
    batch, height, width = images.shape
    if not 0 <= max_shift < min(height, width):
        raise ValueError(
            f"max_shift must lie in 0..{min(height, width) - 1} for {height}x{width} images; "
            f"got {max_shift}"
        )
    if max_shift == 0 and not flip:
        return images
    dy = torch.randint(-max_shift, max_shift + 1, (batch,), generator=generator)
    dx = torch.randint(-max_shift, max_shift + 1, (batch,), generator=generator)
    mirrored = torch.randint(0, 2, (batch,), generator=generator).bool() & flip
    device = images.device
    dy, dx, mirrored = dy.to(device), dx.to(device), mirrored.to(device)
    padded = F.pad(images, (max_shift, max_shift, max_shift, max_shift))
    ys = torch.arange(height, device=device)
    xs = torch.arange(width, device=device)
    rows = ys[None, :] - dy[:, None] + max_shift  # [B, H] rows of the padded image
    source_x = xs[None, :] - dx[:, None]  # [B, W] column of the (flipped) image
    source_x = torch.where(mirrored[:, None], width - 1 - source_x, source_x)
    columns = source_x + max_shift
    items = torch.arange(batch, device=device)[:, None, None]
    return padded[items, rows[:, :, None], columns[:, None, :]]
