"""Augmentations do what they claim, per sample."""

import pytest
import torch

from skillpack.config import AugmentParams, ColorJitterParams
from skillpack.data.augment import BatchAugment, _policy, color_jitter, mix_step, per_sample, random_affine


def constant_batch(values, size=16, channels=1):
    return torch.stack([torch.full((channels, size, size), float(v)) for v in values])


def test_cutmix_target_weight_equals_the_pasted_area():
    torch.manual_seed(0)
    mix = mix_step(num_classes=4, mixup_alpha=0.0, cutmix_alpha=1.0)
    images = constant_batch([10, 20, 30, 40])
    labels = torch.tensor([0, 1, 2, 3])
    for _ in range(20):
        out, target = mix(images, labels)
        for i in range(4):
            partner = (i - 1) % 4  # CutMix pastes from the batch rolled by one
            pasted = (out[i] == images[partner][0, 0, 0]).float().mean().item()
            assert target[i, labels[partner]].item() == pytest.approx(pasted, abs=1e-6)
            assert target[i, labels[i]].item() == pytest.approx(1 - pasted, abs=1e-6)
            assert target[i].sum().item() == pytest.approx(1.0)


def test_mixup_target_is_the_convex_combination_with_the_sampled_lambda():
    torch.manual_seed(1)
    mix = mix_step(num_classes=3, mixup_alpha=0.4, cutmix_alpha=0.0)
    images = constant_batch([0, 100, 200])
    labels = torch.tensor([0, 1, 2])
    out, target = mix(images, labels)
    lam = (out[1, 0, 0, 0] - images[0, 0, 0, 0]) / (images[1, 0, 0, 0] - images[0, 0, 0, 0])
    assert 0 <= lam <= 1
    expected = lam * torch.eye(3)[labels] + (1 - lam) * torch.eye(3)[labels.roll(1)]
    assert torch.allclose(target, expected, atol=1e-5)
    assert torch.allclose(out, lam * images + (1 - lam) * images.roll(1, 0), atol=1e-3)


def test_rotation_is_per_sample_and_keeps_the_distance_to_the_centre():
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(64, 1, 33, 33, dtype=torch.uint8)
    img[:, :, 15:18, 26:29] = 255  # a blob 11 px right of the centre (16, 16)
    out = random_affine(img, g, degrees=180).float()
    ys, xs = torch.meshgrid(torch.arange(33.0), torch.arange(33.0), indexing="ij")
    mass = out[:, 0].sum(dim=(1, 2))
    cy = (out[:, 0] * ys).sum(dim=(1, 2)) / mass
    cx = (out[:, 0] * xs).sum(dim=(1, 2)) / mass
    radius = torch.sqrt((cy - 16) ** 2 + (cx - 16) ** 2)
    assert torch.allclose(radius, torch.full_like(radius, 11.0), atol=1.0)
    angles = torch.atan2(cy - 16, cx - 16)
    assert angles.std() > 1.0  # spread over the circle, not one angle for the whole batch


def test_resized_crop_zooms_in_by_the_area_fraction():
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(32, 1, 32, 32, dtype=torch.uint8)
    img[:, :, 14:18, 14:18] = 255  # 16 bright pixels in the centre
    out = random_affine(img, g, scale=(0.25, 0.25), ratio=(1.0, 1.0))  # crop half the side: 4x area
    bright = (out > 127).float().sum(dim=(1, 2, 3))
    inside = bright > 0
    assert inside.any()
    assert torch.allclose(bright[bright >= 60], torch.full_like(bright[bright >= 60], 64.0), atol=8)


def test_color_jitter_brightness_is_per_sample_within_range():
    g = torch.Generator().manual_seed(0)
    out = color_jitter(constant_batch([100] * 64).to(torch.uint8), g, brightness=0.2)
    values = out[:, 0, 0, 0].float()
    assert values.min() >= 80 and values.max() <= 120
    assert values.unique().numel() > 10


def test_hue_and_saturation_on_grayscale_are_announced_not_silent():
    cfg = AugmentParams(color_jitter=ColorJitterParams(hue=0.1, saturation=0.2))
    with pytest.warns(UserWarning, match="1-channel"):
        BatchAugment(cfg, num_classes=10, channels=1)


def test_saturation_zero_factor_range_changes_colour_images():
    g = torch.Generator().manual_seed(0)
    rgb = torch.zeros(8, 3, 4, 4, dtype=torch.uint8)
    rgb[:, 0] = 200  # pure red
    out = color_jitter(rgb, g, saturation=0.9, hue=0.2)
    assert not torch.equal(out, rgb)


@pytest.mark.parametrize("name", ["autoaugment", "randaugment", "trivialaugment"])
def test_policies_draw_per_sample(name):
    torch.manual_seed(0)
    base = (torch.arange(16 * 16) % 256).to(torch.uint8).reshape(1, 1, 16, 16).repeat(32, 3, 1, 1)
    out = per_sample(_policy(name, {}))(base)
    assert out.dtype == torch.uint8 and out.shape == base.shape
    distinct = {tuple(o.flatten()[:64].tolist()) for o in out}
    assert len(distinct) > 3


def test_random_erasing_erases_about_p_of_the_samples():
    torch.manual_seed(0)
    cfg = AugmentParams(hflip=False, crop_padding=0, random_erasing=0.5)
    aug = BatchAugment(cfg, num_classes=10, channels=1)
    images = torch.full((200, 1, 16, 16), 200, dtype=torch.uint8)
    out, _ = aug(images, torch.zeros(200, dtype=torch.long), torch.Generator().manual_seed(0))
    erased = (out == 0).flatten(1).any(1).float().mean().item()
    assert 0.35 < erased < 0.65


def test_identity_detection():
    assert BatchAugment(AugmentParams(hflip=False, crop_padding=0), 10, 1).is_identity
    assert not BatchAugment(AugmentParams(hflip=False, crop_padding=0, rotation=30), 10, 1).is_identity
