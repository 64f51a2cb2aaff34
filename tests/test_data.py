"""heritage.data.datasets: letterboxed tensors, preload cache (RAM and shm) == on-the-fly, seeded loaders."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

from heritage.data import augment, datafolder, datasets as data, splits, taxonomy
from heritage import fileio

SIZE = 64


@pytest.fixture(scope="module")
def fold(data_dir):
    return splits.fold_ids(splits.load_manifest(data_dir, "kfold"), "fold0")


def test_dataset_returns_uint8_squares_that_are_normalised_on_the_device(data_dir, fold):
    train_ids, val_ids, _ = fold
    for train, ids in ((True, train_ids), (False, val_ids)):
        image, mask = data.SegmentationDataset(data_dir, ids, SIZE, train=train)[0]
        # uint8 until the device: a quarter of float32's bytes per image, an eighth of int64's per mask
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == torch.uint8
        assert mask.shape == (SIZE, SIZE) and mask.dtype == torch.uint8
        assert set(mask.unique().tolist()) <= taxonomy.VALID_MASK_VALUES
        images, masks = data.batch_to_device(image[None], mask[None], torch.device("cpu"))
        assert images.shape == (1, 3, SIZE, SIZE) and images.dtype == torch.float32 and images.is_contiguous()
        assert masks.dtype == torch.int64 and torch.equal(masks[0], mask.long())
        assert -2.2 < images.min() and images.max() < 2.7  # ImageNet-normalised range
        torch.testing.assert_close(images[0], data.normalize(image.numpy()), rtol=0, atol=1e-5)


def test_a_batch_goes_to_the_device_in_the_models_memory_format():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    masks = torch.full((2, 8, 8), taxonomy.IGNORE_INDEX, dtype=torch.uint8)
    cpu = torch.device("cpu")
    last, ids = data.batch_to_device(images, masks, cpu, torch.channels_last)
    plain, _ = data.batch_to_device(images, masks, cpu)
    assert last.is_contiguous(memory_format=torch.channels_last) and plain.is_contiguous()
    assert torch.equal(last, plain) and (ids == taxonomy.IGNORE_INDEX).all() and ids.dtype == torch.int64


def test_letterbox_keeps_the_aspect_ratio_and_pads_with_background(data_dir):
    metadata = datafolder.read_metadata(data_dir).set_index("id")
    sample = next(i for i in metadata.index if metadata.loc[i, "width"] != metadata.loc[i, "height"])
    width, height = metadata.loc[sample, ["width", "height"]]
    image, mask = data.SegmentationDataset(data_dir, [sample], SIZE, train=False)[0]
    image = data.batch_to_device(image[None], mask[None], torch.device("cpu"))[0][0]
    if width > height:  # compare on the padded axis only: transpose landscape samples
        image, mask = image.transpose(1, 2), mask.T
        width, height = height, width
    inner = round(width * SIZE / height)
    pad = (SIZE - inner) // 2
    assert pad > 0
    assert (mask[:, :pad] == taxonomy.IGNORE_INDEX).all() and (mask[:, pad + inner:] == taxonomy.IGNORE_INDEX).all()
    assert image[:, :, :pad].abs().max() < 0.02  # the fill colour is the ImageNet mean: ~0 once normalised
    assert (mask[:, pad:pad + inner] != taxonomy.IGNORE_INDEX).any()


def test_eval_normalisation_inverts_to_the_letterboxed_uint8(data_dir, fold):
    sample = fold[1][0]
    expected_image, expected_mask = data.load_resized(data_dir, sample, SIZE)
    image, mask = data.batch_to_device(*(part[None] for part in data.SegmentationDataset(
        data_dir, [sample], SIZE, train=False)[0]), torch.device("cpu"))
    image, mask = image[0], mask[0]
    mean = torch.tensor(data.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(data.IMAGENET_STD)[:, None, None]
    restored = ((image * std + mean) * 255).round().permute(1, 2, 0).numpy()
    np.testing.assert_allclose(restored, expected_image, atol=1e-3)
    np.testing.assert_array_equal(mask.numpy(), expected_mask)


@pytest.mark.parametrize("backing", ["ram", "shm"])
def test_preload_cache_equals_on_the_fly_loading(data_dir, fold, tmp_path, backing):
    train_ids, val_ids, test_ids = fold
    ids = val_ids + test_ids
    cache = data.PreloadCache(data_dir, ids, SIZE, shm_dir=tmp_path if backing == "shm" else None)
    assert cache.size_mb == pytest.approx(len(ids) * SIZE * SIZE * 4 / 2**20)
    assert f"{len(ids)} samples at {SIZE}px" in repr(cache)
    cached = data.SegmentationDataset(data_dir, ids, SIZE, train=False, cache=cache)
    direct = data.SegmentationDataset(data_dir, ids, SIZE, train=False)
    for index in range(len(ids)):
        for a, b in zip(cached[index], direct[index]):
            assert torch.equal(a, b)


def test_shm_cache_is_reused_and_rebuilt_when_files_change(copy_data_dir, tmp_path):
    folder = copy_data_dir()
    ids = datafolder.read_metadata(folder)["id"].tolist()[:6]
    first = data.PreloadCache(folder, ids, 32, shm_dir=tmp_path / "shm")
    stamp = first.path.stat().st_mtime_ns
    again = data.PreloadCache(folder, ids, 32, shm_dir=tmp_path / "shm")
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp  # mapped, not rebuilt
    assert not again.array.flags.writeable
    assert data.PreloadCache(folder, ids, 48, shm_dir=tmp_path / "shm").path != first.path
    fileio.write_png(datafolder.annotation_path(folder, ids[0]), np.zeros((5, 7), np.uint8))
    fileio.write_png(datafolder.image_path(folder, ids[0]), np.zeros((5, 7, 3), np.uint8))
    changed = data.PreloadCache(folder, ids, 32, shm_dir=tmp_path / "shm")
    assert changed.path != first.path
    assert not list((tmp_path / "shm").glob("*.tmp"))


def test_cache_and_dataset_errors(data_dir, fold):
    val_ids = fold[1]
    cache = data.PreloadCache(data_dir, val_ids, 32)
    with pytest.raises(ValueError, match="cache holds 32px samples, the dataset needs 64px"):
        data.SegmentationDataset(data_dir, val_ids, 64, train=False, cache=cache)
    with pytest.raises(ValueError, match=r"1 id\(s\) are not in the preload cache: \['nope'\]"):
        data.SegmentationDataset(data_dir, [*val_ids, "nope"], 32, train=False, cache=cache)
    with pytest.raises(FileNotFoundError, match=r"images/nope\.png"):
        data.SegmentationDataset(data_dir, ["nope"], 32, train=False)
    with pytest.raises(ValueError, match="duplicated ids"):
        data.PreloadCache(data_dir, [val_ids[0], val_ids[0]], 32)


def test_size_mismatch_on_disk_is_reported(copy_data_dir):
    folder = copy_data_dir()
    sample = datafolder.read_metadata(folder)["id"][0]
    fileio.write_png(datafolder.annotation_path(folder, sample), np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match=rf"images/{sample}\.png: image is .* but its annotation is 3x3"):
        data.load_resized(folder, sample, 32)


def test_train_augmentation_is_seeded_by_seed_epoch_and_index(data_dir, fold):
    ids = fold[0][:8]
    dataset = data.SegmentationDataset(data_dir, ids, SIZE, train=True, seed=3)
    def same(a, b):
        return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])

    first = [dataset[i] for i in range(len(ids))]
    assert all(same(a, dataset[i]) for i, a in enumerate(first))
    dataset.set_epoch(1)
    assert not all(same(a, dataset[i]) for i, a in enumerate(first))
    # padding brought in by the affine stays Background in the mask
    for _, mask in first:
        assert set(mask.unique().tolist()) <= taxonomy.VALID_MASK_VALUES


def test_seed_transforms_gives_independent_streams():
    """albumentations 2.0 seeds every transform alike: both flips would always fire together."""
    image = np.arange(4, dtype=np.uint8).reshape(2, 2, 1).repeat(3, axis=2)  # [[0, 1], [2, 3]]
    compose = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    corners = set()
    for seed in range(32):
        data.seed_transforms(compose, (seed, 0, 0))
        corners.add(int(compose(image=image)["image"][0, 0, 0]))
    assert corners == {0, 1, 2, 3}  # identity, hflip, vflip and both all occur


def test_loader_shuffles_deterministically_per_epoch(data_dir, fold):
    dataset = data.SegmentationDataset(data_dir, fold[0][:12], 32, train=True, seed=0)

    def epoch_batches(loader, epoch):
        data.set_epoch(loader, epoch)
        return list(loader)

    loader = data.make_loader(dataset, batch_size=4, train=True, num_workers=0, seed=5)
    epoch0, epoch1 = epoch_batches(loader, 0), epoch_batches(loader, 1)
    assert len(epoch0) == 3 and epoch0[0][0].shape == (4, 32, 32, 3) and epoch0[0][1].dtype == torch.uint8
    assert not torch.equal(epoch0[0][1], epoch1[0][1])
    again = epoch_batches(data.make_loader(dataset, 4, True, num_workers=0, seed=5), 1)  # e.g. after a resume
    with_workers = epoch_batches(data.make_loader(dataset, 4, True, num_workers=2, seed=5), 1)
    for batches in (again, with_workers):
        for (image_a, mask_a), (image_b, mask_b) in zip(epoch1, batches):
            assert torch.equal(image_a, image_b) and torch.equal(mask_a, mask_b)


def test_eval_loader_keeps_order_and_every_sample(data_dir, fold):
    ids = fold[1] + fold[2]
    dataset = data.SegmentationDataset(data_dir, ids, 32, train=False)
    masks = torch.cat([m for _, m in data.make_loader(dataset, batch_size=3, train=False, num_workers=0, seed=0)])
    assert masks.shape[0] == len(ids)
    assert torch.equal(masks[-1], dataset[len(ids) - 1][1])


def test_augment_fill_is_the_imagenet_mean():
    assert np.allclose(np.array(augment.FILL_RGB) / 255, data.IMAGENET_MEAN, atol=0.5 / 255 + 1e-3)


def test_distributed_loader_uses_a_distributed_sampler(data_dir, fold, tmp_path):
    """One gloo process: the distributed loader shards (here: keeps) the same seeded order."""
    dataset = data.SegmentationDataset(data_dir, fold[0][:8], 32, train=True, seed=0)
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        loader = data.make_loader(dataset, batch_size=4, train=True, num_workers=0, seed=5, distributed=True)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        data.set_epoch(loader, 2)
        single = data.make_loader(dataset, batch_size=4, train=True, num_workers=0, seed=5)
        data.set_epoch(single, 2)
        assert list(loader.sampler) == list(single.sampler)
    finally:
        torch.distributed.destroy_process_group()


def test_a_small_image_is_padded_to_the_tile_as_the_letterbox_pads():
    image = np.full((10, 40, 3), 7, dtype=np.uint8)
    padded = data.pad_image(image, 32)
    assert padded.shape == (32, 40, 3)
    (top, bottom), (left, right) = data.padding(10, 40, 32)
    assert (top, bottom, left, right) == (11, 11, 0, 0)
    assert (padded[11:21] == 7).all() and (padded[:11] == augment.FILL_RGB).all()
    boxed = data.letterbox(40)(image=image, mask=np.zeros((10, 40), dtype=np.uint8))["image"]
    assert (boxed[:15] == augment.FILL_RGB).all() and (boxed[15:25] == 7).all()  # the same centring


def test_tiles_are_normalised_as_the_loaders_normalise():
    tiles = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    on_device = data.normalize_tiles(tiles, torch.device("cpu"))
    one_by_one = torch.stack([data.normalize(tile) for tile in tiles])
    torch.testing.assert_close(on_device, one_by_one, rtol=0, atol=1e-6)  # float rounding apart
