"""Issue 11: patch sampling at a working resolution, and evaluation at that resolution in both modes."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from heritage.data import augment, datafolder, datasets as data, splits, taxonomy, working
from heritage.training import devices, engine, evaluation, reproducibility, runs, train
from heritage import errors, fileio
from heritage.modeling import losses, metrics, tiling
from heritage.config import ConfigError, RunConfig, load_run_config

SIZE = 32


@pytest.fixture(scope="module")
def fold(data_dir):
    return splits.fold_ids(splits.load_manifest(data_dir, "holdout"), "holdout")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One working-resolution cache for the module (the shared data folder stays unwritten)."""
    return tmp_path_factory.mktemp("working-cache")


def patches(data_dir, ids, cache_dir, **options):
    cache = working.WorkingCache(data_dir, options.pop("working_resolution", "native"), cache_dir)
    return working.PatchDataset(cache, ids, options.pop("image_size", SIZE), progress=False, **options)


# -- crop sampling -----------------------------------------------------------------------------


@pytest.mark.parametrize("share", [0.0, 0.33, 1.0])
def test_the_share_of_foreground_crops_is_the_configured_one(data_dir, fold, cache_dir, share):
    dataset = patches(data_dir, fold[0], cache_dir, foreground_share=share, seed=7)
    crops = []
    for epoch in range(30):
        dataset.set_epoch(epoch)
        crops += [dataset.crop(i) for i in range(len(dataset))]
    observed = np.mean([c.centred_on is not None for c in crops])
    assert observed == pytest.approx(share, abs=0.03), f"{len(crops)} crops"


def test_foreground_crops_hold_their_class_and_rare_classes_are_drawn_more(data_dir, fold, cache_dir):
    dataset = patches(data_dir, fold[0], cache_dir, foreground_share=1.0, seed=1, train=False)
    totals = np.stack([dataset.cache.counts(i) for i in dataset.ids]).sum(axis=0)
    # inverse pixel frequency over the training split: probability x pixel count is one constant
    products = dataset.class_probabilities * totals[dataset.classes]
    np.testing.assert_allclose(products, products[0])
    assert taxonomy.CLASS_IDS["Clean"] not in dataset.classes
    for index in range(len(dataset)):
        crop = dataset.crop(index)
        _, mask = dataset.load(index)
        assert mask.shape == (SIZE, SIZE) and (mask == crop.centred_on).any(), crop


def test_crops_are_a_function_of_seed_and_epoch_for_any_number_of_workers(data_dir, fold, cache_dir):
    first = patches(data_dir, fold[0], cache_dir, seed=3)
    again = patches(data_dir, fold[0], cache_dir, seed=3)
    other_seed = patches(data_dir, fold[0], cache_dir, seed=4)
    crops = lambda d: [d.crop(i) for i in range(len(d))]  # noqa: E731
    assert crops(first) == crops(again) and crops(first) != crops(other_seed)
    epoch0 = crops(first)
    first.set_epoch(1)
    assert crops(first) != epoch0

    def batches(workers: int, epoch: int) -> list[torch.Tensor]:
        loader = data.make_loader(patches(data_dir, fold[0], cache_dir, seed=3), 4, True, workers, seed=5)
        data.set_epoch(loader, epoch)
        return [torch.cat([x.flatten(), y.flatten().float()]) for x, y in loader]

    serial = batches(0, 1)
    assert all(torch.equal(a, b) for a, b in zip(serial, batches(2, 1)))
    assert not all(torch.equal(a, b) for a, b in zip(serial, batches(0, 2)))


def test_patches_come_from_memory_maps_not_decoded_images(data_dir, fold, cache_dir, monkeypatch):
    dataset = patches(data_dir, fold[0], cache_dir)
    assert all(isinstance(dataset.cache.array(i), np.memmap) for i in dataset.ids)

    def must_not_decode(*args, **kwargs):
        raise AssertionError("a cached sample was decoded again")

    monkeypatch.setattr(fileio, "read_rgb", must_not_decode)  # the cache exists: nothing is decoded
    cached = patches(data_dir, fold[0], cache_dir)
    for index in range(len(cached)):
        image, mask = cached[index]
        assert image.shape == (SIZE, SIZE, 3) and mask.shape == (SIZE, SIZE)
    smallest = min(h * w for h, w in cached.shapes)

    def arrays(value, depth=0):  # every array the dataset holds, however deep
        if isinstance(value, np.ndarray):
            yield value
        elif depth < 4 and isinstance(value, dict):
            for item in value.values():
                yield from arrays(item, depth + 1)
        elif depth < 4 and isinstance(value, (list, tuple)):
            for item in value:
                yield from arrays(item, depth + 1)
        elif depth < 4 and hasattr(value, "__dict__") and not isinstance(value, type):
            yield from arrays(vars(value), depth + 1)

    held = list(arrays(cached))
    assert held and all(a.size < smallest for a in held), [a.shape for a in held if a.size >= smallest]
    assert len(pickle.dumps(cached)) < 64 * 1024  # what a spawned DataLoader worker receives


def test_the_cache_is_written_once_per_sample_and_resolution(data_dir, fold, tmp_path):
    ids = fold[1][:2]
    cache = working.WorkingCache(data_dir, "native", tmp_path)
    cache.ensure(ids, progress=False)
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "native").iterdir()}
    assert len(written) == 2 * len(ids)
    working.WorkingCache(data_dir, "native", tmp_path).ensure(ids, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "native").iterdir()} == written
    image, mask = working.read_sample(data_dir, ids[0])
    native = cache.array(ids[0])
    np.testing.assert_array_equal(native[..., :3], image)
    np.testing.assert_array_equal(native[..., 3], mask)
    smaller = working.WorkingCache(data_dir, 48, tmp_path)
    smaller.ensure(ids, progress=False)
    assert max(smaller.array(ids[0]).shape[:2]) == 48 and smaller.folder == tmp_path / "longest48"


def test_images_smaller_than_a_patch_are_padded_with_background(data_dir, fold, cache_dir):
    dataset = patches(data_dir, fold[0], cache_dir, image_size=128, train=False)  # the stored images are <= 96 px
    image, mask = dataset.load(0)
    height, width = dataset.shapes[0]
    assert image.shape == (128, 128, 3) and mask.shape == (128, 128)
    top, left = (128 - height) // 2, (128 - width) // 2
    assert (mask[:top] == taxonomy.IGNORE_INDEX).all() and (image[:top] == augment.FILL_RGB).all()
    np.testing.assert_array_equal(mask[top:top + height, left:left + width], dataset.cache.array(dataset.ids[0])[..., 3])


# -- evaluation at the working resolution ------------------------------------------------------


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


class TinyHierarchical(TinyNet):
    def __init__(self) -> None:
        super().__init__()
        self.binary, self.coarse = nn.Conv2d(16, 2, 1), nn.Conv2d(16, 4, 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        fine = self.body(images)
        return {"fine": fine, "binary": self.binary(fine), "coarse": self.coarse(fine)}


@pytest.mark.parametrize("model_input", ["working", "letterbox"])
@pytest.mark.parametrize("hierarchical", [False, True], ids=["unet", "hierarchical"])
def test_sliding_window_evaluation_equals_whole_image_evaluation_when_one_window_covers_the_image(
        data_dir, fold, cache_dir, model_input, hierarchical):
    torch.manual_seed(0)
    model = TinyHierarchical() if hierarchical else TinyNet()
    ids = fold[2]
    device = torch.device("cpu")
    # working resolution = the tile: each image is one window (its short side padded as the letterbox pads)
    images = working.EvaluationSet(data_dir, ids, SIZE, SIZE, model_input, cache_dir=cache_dir, progress=False)
    tiled, _, _ = evaluation.evaluate_images(model, images, devices.Distributed(device=device),
                                             tiling.SlidingWindow(tile=SIZE, batch_size=4), hierarchical)
    # the reference: the letterboxed batches as a loader gives them, the model's outputs counted whole
    loader = data.make_loader(data.SegmentationDataset(data_dir, ids, SIZE, train=False), 4, False, 0, seed=0)
    matrices = metrics.HierarchicalMetrics() if hierarchical else metrics.ConfusionMatrix()
    with torch.inference_mode():
        for batch, masks in loader:
            batch, masks = data.batch_to_device(batch, masks, device, torch.contiguous_format)
            matrices.update(model.eval()(batch), masks)
    whole = evaluation._evaluation_result(matrices, hierarchical)
    assert tiled["confusion_matrix"] == whole["confusion_matrix"]
    assert tiled["n_images"] == whole["n_images"] == len(ids)
    assert tiled["all_clean_miou"] == whole["all_clean_miou"]
    if hierarchical:
        assert tiled["hierarchical"] == whole["hierarchical"]


def test_letterbox_runs_are_scored_on_the_working_resolution_pixels(data_dir, fold, cache_dir):
    torch.manual_seed(0)
    model = TinyNet()
    ids = fold[2]
    images = working.EvaluationSet(data_dir, ids, SIZE, "native", "letterbox", cache_dir=cache_dir, progress=False)
    result, _, panels = evaluation.evaluate_images(model, images, devices.Distributed(),
                                                   tiling.SlidingWindow(tile=SIZE, batch_size=4),
                                                   outputs=evaluation.Outputs(panels=2))
    labelled = sum(int((working.read_sample(data_dir, i)[1] != taxonomy.IGNORE_INDEX).sum()) for i in ids)
    assert np.asarray(result["confusion_matrix"]).sum() == labelled  # every native pixel, not the 32 px square's
    truth = np.asarray(result["confusion_matrix"]).sum(axis=1)
    clean = metrics.constant_prediction_miou(torch.tensor(result["confusion_matrix"]))
    assert result["all_clean_miou"] == clean and truth.sum() == labelled
    assert [p[0] for p in panels] == ids[:2] and panels[0][2].shape == working.read_sample(data_dir, ids[0])[1].shape


def test_a_patch_fit_is_reproducible_and_validates_at_the_working_resolution(data_dir, fold, cache_dir, tmp_path):
    train_ids, val_ids, _ = fold

    def fit(root):
        config = load_run_config("poc58_baseline", "smoke", overrides={
            "data_dir": str(data_dir), "runs_root": str(root), "image_size": SIZE, "epochs": 2, "batch_size": 4,
            "base_batch_size": 4, "seed": 3, "sampling": "patch", "cache_dir": str(cache_dir)})
        runs.prepare(config)
        reproducibility.seed_everything(config.seed)
        model = TinyNet()
        result = engine.fit(config, model, losses.build_loss("dice"),
                            patches(data_dir, train_ids, cache_dir, seed=config.seed),
                            working.EvaluationSet(data_dir, val_ids, SIZE, cache_dir=cache_dir, progress=False),
                            devices.Distributed(), progress=False)
        return [{k: v for k, v in row.items() if k not in ("images_per_s", "peak_memory_mb", "elapsed_s")}
                for row in result.history], result.best_val

    first, best = fit(tmp_path / "a")
    assert first == fit(tmp_path / "b")[0]
    labelled = sum(int((working.read_sample(data_dir, i)[1] != taxonomy.IGNORE_INDEX).sum()) for i in val_ids)
    assert np.asarray(best["confusion_matrix"]).sum() == labelled


# -- configuration and the recorded scale ------------------------------------------------------


def config(data_dir, **overrides) -> RunConfig:
    return load_run_config("poc58_baseline", "smoke", overrides={"data_dir": str(data_dir), **overrides})


def test_letterbox_is_the_default_and_the_cache_folder_is_not_hashed(data_dir, tmp_path):
    default = config(data_dir)
    assert (default.sampling, default.working_resolution) == ("letterbox", "native")
    assert config(data_dir, cache_dir=str(tmp_path)).config_hash() == default.config_hash()
    assert config(data_dir, sampling="patch").config_hash() != default.config_hash()
    assert config(data_dir, sampling="patch", working_resolution=1024, foreground_share=0.5).working_resolution == 1024


@pytest.mark.parametrize(("overrides", "message"), [
    ({"sampling": "crops"}, r"sampling: unknown value 'crops'.*choose one of letterbox, patch"),
    ({"working_resolution": 0.5}, r"working_resolution: 0.5 looks like a scale factor; give 'native'"),
    ({"working_resolution": "full"}, r"working_resolution: unknown value 'full'; give 'native'"),
    ({"working_resolution": 0}, r"working_resolution: a longest side must be a positive number of pixels, got 0"),
    ({"working_resolution": True}, r"working_resolution: expected str or int or float, got True"),
    ({"sampling": "patch", "working_resolution": 32}, r"working_resolution: 32 px is below image_size 64"),
    ({"foreground_share": 1.5}, r"foreground_share: a share of crops is in \[0, 1\], got 1.5"),
])
def test_bad_sampling_settings_are_refused_with_the_key(data_dir, overrides, message):
    with pytest.raises(ConfigError, match=message):
        config(data_dir, **overrides)


def test_the_flagship_has_a_patch_variant_in_both_profiles(data_dir):
    from heritage import config as config_module

    for profile in ("smoke", "full"):
        planned = [c for c in config_module.plan(profile, pocs=["poc59v2_flagship"], data_dir=data_dir)
                   if c.variant == "patch"]
        assert planned and {c.encoder for c in planned} == {"convnext_tiny"}
        assert all(c.sampling == "patch" and c.working_resolution == "native" for c in planned)
        assert all(c.variant != "patch" or c.sampling == "patch" for c in planned)


def test_the_scale_from_the_reference_image_to_the_model_is_recorded(copy_data_dir):
    folder = copy_data_dir()
    # resolved before metadata.csv changes below
    letterbox_config, patch_config = config(folder), config(folder, sampling="patch", working_resolution=80)
    native_patch = config(folder, sampling="patch")
    table = datafolder.read_metadata(folder).drop(columns=list(datafolder.ORIGINAL_SIZE_COLUMNS))
    datafolder.write_metadata(folder, table)  # a data folder written before ingest recorded original sizes
    ids = list(table["id"][:6])
    longest = np.maximum(table["width"], table["height"])[:6].to_numpy()
    letterbox = train.scale_record(letterbox_config, ids)
    assert letterbox["model_input"]["max"] == pytest.approx(64 / longest.min(), rel=1e-5)
    assert letterbox["evaluation"] == {"min": 1.0, "median": 1.0, "max": 1.0}
    assert "original scan size is not recorded" in letterbox["reference"]
    patch = train.scale_record(patch_config, ids)
    assert patch["model_input"]["min"] == pytest.approx((np.minimum(longest, 80) / longest).min(), rel=1e-5)
    raw = pd.read_csv(folder / datafolder.METADATA_FILE)  # an original size, where a data folder records one
    raw["original_width"], raw["original_height"] = raw["width"] * 10, raw["height"] * 10
    raw.to_csv(folder / datafolder.METADATA_FILE, index=False)
    original = train.scale_record(native_patch, ids)
    assert original["reference"].startswith("original scan") and original["model_input"]["max"] == pytest.approx(0.1)


def test_an_unwritable_cache_is_an_output_error_naming_cache_dir(data_dir, fold, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(errors.OutputError, match="set cache_dir= to a writable folder"):
        working.WorkingCache(data_dir, "native", tmp_path / "file").ensure(fold[1][:1], progress=False)
