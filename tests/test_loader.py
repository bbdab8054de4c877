import torch

from skillpack.data.loader import TensorBatches, random_crop, random_hflip


def test_random_crop_is_per_sample_and_a_window_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    batch = torch.arange(64 * 5 * 5, dtype=torch.int32).reshape(64, 1, 5, 5)
    out = random_crop(batch, padding=2, generator=g)
    assert out.shape == batch.shape
    padded = torch.nn.functional.pad(batch, (2, 2, 2, 2))
    offsets = set()
    for i in range(64):
        matches = [(y, x) for y in range(5) for x in range(5) if torch.equal(padded[i, :, y:y + 5, x:x + 5], out[i])]
        assert matches, f"sample {i} is not a crop of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 5  # different samples got different crops


def test_random_flip_flips_about_half_per_sample():
    g = torch.Generator().manual_seed(0)
    batch = torch.arange(1000 * 4, dtype=torch.int32).reshape(1000, 1, 1, 4)
    out = random_hflip(batch, g)
    flipped = (out == batch.flip(-1)).all(dim=(1, 2, 3))
    kept = (out == batch).all(dim=(1, 2, 3))
    assert bool((flipped | kept).all())
    assert 400 < int(flipped.sum()) < 600


def test_batches_cover_every_sample_once_per_epoch():
    images = torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1, 1)
    labels = torch.arange(10)
    batches = TensorBatches(images, labels, batch_size=3, shuffle=True)
    seen = torch.cat([y for _, _, y in batches.epoch(torch.Generator().manual_seed(1))])
    assert sorted(seen.tolist()) == list(range(10))
