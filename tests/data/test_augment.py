"""Random shift and flip of training images against a per-image loop."""

import pytest
import torch

from spikeforge.data.augment import shift_and_flip


def _naive(images: torch.Tensor, dy, dx, mirrored) -> torch.Tensor:
    """``out[y, x] = in[y - dy, x - dx]`` of the (mirrored) image, zero outside, pixel by pixel."""
    batch, height, width = images.shape
    out = torch.zeros_like(images)
    for b in range(batch):
        source = images[b].flip(1) if mirrored[b] else images[b]
        for y in range(height):
            for x in range(width):
                sy, sx = y - int(dy[b]), x - int(dx[b])
                if 0 <= sy < height and 0 <= sx < width:
                    out[b, y, x] = source[sy, sx]
    return out


def _draws(seed: int, batch: int, max_shift: int, flip: bool):
    generator = torch.Generator().manual_seed(seed)
    dy = torch.randint(-max_shift, max_shift + 1, (batch,), generator=generator)
    dx = torch.randint(-max_shift, max_shift + 1, (batch,), generator=generator)
    mirrored = torch.randint(0, 2, (batch,), generator=generator).bool() & flip
    return dy, dx, mirrored


@pytest.mark.parametrize("max_shift, flip", [(2, False), (0, True), (3, True)])
def test_matches_the_pixel_loop(max_shift, flip):
    images = torch.rand(16, 7, 6)
    out = shift_and_flip(images, torch.Generator().manual_seed(5), max_shift, flip)
    dy, dx, mirrored = _draws(5, 16, max_shift, flip)
    assert torch.equal(out, _naive(images, dy, dx, mirrored))
    if flip:
        assert 0 < int(mirrored.sum()) < 16  # both cases were exercised
    if max_shift:
        assert (dy != 0).any() and (dx != 0).any()


def test_hand_case_one_pixel():
    # One bright pixel at (row 1, column 1) of a 4x5 image. Whatever the draw, it lands at
    # (1 + dy, 1 + dx), or at (1 + dy, 5 - 1 - 1 + dx) when mirrored, if inside the frame.
    images = torch.zeros(32, 4, 5)
    images[:, 1, 1] = 1.0
    out = shift_and_flip(images, torch.Generator().manual_seed(0), 1, True)
    dy, dx, mirrored = _draws(0, 32, 1, True)
    for b in range(32):
        column = (3 if mirrored[b] else 1) + int(dx[b])
        expected = torch.zeros(4, 5)
        expected[1 + int(dy[b]), column] = 1.0
        assert torch.equal(out[b], expected), b


def test_off_is_the_identity_and_draws_nothing():
    images = torch.rand(3, 5, 5)
    generator = torch.Generator().manual_seed(1)
    state = generator.get_state()
    assert shift_and_flip(images, generator, 0, False) is images
    assert torch.equal(generator.get_state(), state)


def test_bad_input_is_named():
    generator = torch.Generator()
    with pytest.raises(ValueError, match=r"images \[B, H, W\]"):
        shift_and_flip(torch.rand(3, 25), generator, 1)
    with pytest.raises(ValueError, match="max_shift must lie in 0..4"):
        shift_and_flip(torch.rand(3, 5, 5), generator, 5)
    with pytest.raises(ValueError, match="max_shift must lie in 0..4"):
        shift_and_flip(torch.rand(3, 5, 5), generator, -1)


def test_config_checks_the_shift():
    from pathlib import Path

    from spikeforge.run import bptt
    from spikeforge.run.config import ConfigError, load_config

    digits = Path(__file__).resolve().parents[2] / "configs" / "bondarev-digits.toml"
    with pytest.raises(ConfigError, match="train.augment_shift must be at least 0; got -1"):
        load_config(digits, ["train.augment_shift=-1"])
    config = load_config(digits, ["train.augment_shift=8"])
    with pytest.raises(ConfigError, match=r"below the image side \(8 for digits\); got 8"):
        bptt._load_data(config)
    assert bptt._load_data(load_config(digits, ["train.augment_shift=7"])).image_shape == (8, 8)


@pytest.mark.parametrize("preset", ["diehl-cook-100.toml", "conv-stdp-mnist.toml"])
def test_config_refuses_augmentation_where_nothing_would_read_it(preset):
    from pathlib import Path

    from spikeforge.run.config import ConfigError, load_config

    path = Path(__file__).resolve().parents[2] / "configs" / preset
    with pytest.raises(ConfigError, match="apply to gradient training"):
        load_config(path, ["train.augment_flip=true"])
    load_config(path)  # the preset itself is fine
