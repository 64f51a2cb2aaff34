"""Tiled full-resolution inference: blending, seams, bounded memory, inputs, outputs, the CLI."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image
from torch import nn

from conftest import make_row, write_rows
from heritage import cli, errors
from heritage.inference import damage_report, overlays, predict, scans
from heritage.modeling import tiling
from heritage.data import taxonomy
from heritage.data.datasets import normalize_tiles

CPU = torch.device("cpu")


class PointwiseNet(nn.Module):
    """Receptive field of one pixel: tiled and whole-image predictions must agree exactly."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Conv2d(3, taxonomy.NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class LocalNet(nn.Module):
    """Two 3x3 convolutions (receptive field 5x5, zero padding): only tile edges differ."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, taxonomy.NUM_CLASSES, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ConstantNet(nn.Module):
    """The same logits everywhere, returned as the hierarchical model's dict."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.linspace(-1.0, 2.0, taxonomy.NUM_CLASSES).roll(5))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        return {"fine": self.logits.view(1, -1, 1, 1).expand(b, -1, h, w),
                "binary": torch.zeros(b, 2, h, w)}


class PositionalNet(PointwiseNet):
    """PointwiseNet plus per-class ramps across the tile (left-right and top-bottom): its output depends on
    where a pixel sits in the tile, so a flipped input does not give the flipped output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        classes = taxonomy.NUM_CLASSES
        across = torch.linspace(-2.0, 2.0, w).view(1, 1, 1, w) * torch.linspace(-1.0, 1.0, classes).view(1, -1, 1, 1)
        down = torch.linspace(-1.5, 1.5, h).view(1, 1, h, 1) * torch.linspace(1.0, -1.0, classes).roll(3).view(1, -1, 1, 1)
        return self.head(x) + across + down


class FlipAveragedNet(nn.Module):
    """A model whose softmax is ``model``'s flip-TTA average, written out with numpy's flips: its log-probabilities,
    which the softmax of the sliding window turns back into those probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.from_numpy(flip_averaged(self.model, x.numpy())))


def flip_averaged(model: nn.Module, batch: np.ndarray) -> np.ndarray:
    """(identity + left-right + up-down) / 3 of softmax(model), each un-flipped, on a (B, C, H, W) batch."""
    def probabilities(array: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(np.ascontiguousarray(array))), dim=1).numpy()

    plain = probabilities(batch)
    left_right = probabilities(batch[..., ::-1])[..., ::-1]
    up_down = probabilities(batch[..., ::-1, :])[..., ::-1, :]
    return (plain + left_right + up_down) / 3


class ColourNet(nn.Module):
    """Labels each pixel with the class of the nearest of a few reference colours (a per-pixel model, so a
    scan shrunk by an integer factor along block edges and enlarged back keeps its labels exactly)."""

    COLOURS = {"Clean": (200, 200, 200), "Peel": (230, 20, 20), "Dust": (20, 20, 230), "Stamp": (20, 150, 20)}

    def __init__(self) -> None:
        super().__init__()
        colours = np.array(list(self.COLOURS.values()), np.uint8).reshape(1, 1, -1, 3)
        self.register_buffer("reference", normalize_tiles(colours, CPU)[0, :, 0])  # (3, colours)
        self.ids = [taxonomy.CLASS_IDS[name] for name in self.COLOURS]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distance = ((x[:, :, None] - self.reference[None, :, :, None, None]) ** 2).sum(1)  # (B, colours, H, W)
        logits = torch.full((x.shape[0], taxonomy.NUM_CLASSES, *x.shape[2:]), -1e4)
        logits[:, self.ids] = -distance
        return logits


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def tiled_probabilities(model: nn.Module, image: np.ndarray, options: tiling.SlidingWindow) -> np.ndarray:
    bands = list(tiling.iter_probability_bands(model, image, options, CPU, progress=False))
    starts = [y0 for y0, _ in bands]
    heights = [band.shape[1] for _, band in bands]
    assert starts == list(np.cumsum([0, *heights[:-1]])), "bands must tile the rows in order"
    return torch.cat([band for _, band in bands], dim=1).numpy()


def whole_probabilities(model: nn.Module, image: np.ndarray) -> np.ndarray:
    return tiling.predict_tiles(model, image[None], tta=False, device=CPU)[0].numpy()


# ----------------------------------------------------------------------------- tiles and windows


@pytest.mark.parametrize("length", [32, 33, 55, 56, 100, 257])
def test_tile_starts_cover_the_length_and_end_at_the_edge(length):
    starts = tiling.tile_starts(length, tile=32, stride=24)
    assert starts[0] == 0 and starts[-1] == length - 32
    assert all(0 < b - a <= 24 for a, b in zip(starts, starts[1:]))


def test_tile_starts_refuses_a_length_shorter_than_the_tile():
    with pytest.raises(ValueError, match="shorter than the tile 32"):
        tiling.tile_starts(20, tile=32, stride=24)


@pytest.mark.parametrize("kind", tiling.WINDOWS)
def test_window_is_positive_at_the_border_and_peaks_in_the_centre(kind):
    window = tiling.tile_window(32, kind)
    assert window.shape == (32, 32) and window.min() > 0
    assert np.unravel_index(window.argmax(), window.shape) in {(15, 15), (15, 16), (16, 15), (16, 16)}


def test_hann_windows_at_half_overlap_sum_to_one():
    tile, length = 32, 32 + 16 * 5
    total = np.zeros(length)
    window = tiling.tile_window(tile, "hann")
    profile = window[16] / np.sqrt(window[16, 16])  # the window is the outer product of this profile
    for x in tiling.tile_starts(length, tile, stride=16):
        total[x:x + tile] += profile
    np.testing.assert_allclose(total[16:-16], 1.0, atol=1e-6)


@pytest.mark.parametrize("kind", tiling.WINDOWS)
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_blended_weights_are_seamless_and_cover_the_border(kind, overlap):
    options = tiling.SlidingWindow(tile=32, overlap=overlap, window=kind)
    window = tiling.tile_window(options.tile, kind)
    _, total = tiling.tile_grid(90, 130, options)
    assert total.shape == (90, 130) and total.min() > 0  # every pixel, corners included, gets weight
    # The window is an outer product, so the total is too: check each axis's 1D sum. Where tiles
    # begin or end it may only change as fast as the overlapping windows' own slopes (a seam, e.g. a
    # box window, would jump by ~1 there).
    profile = window[16] / np.sqrt(window[16, 16])
    assert profile[0] < 0.01 and profile[-1] < 0.01
    for length in total.shape:
        line, coverage = np.zeros(length), np.zeros(length)
        for x in tiling.tile_starts(length, options.tile, options.stride):
            line[x:x + 32] += profile
            coverage[x:x + 32] += 1
        assert np.abs(np.diff(line)).max() <= coverage.max() * np.abs(np.diff(profile)).max()


def test_the_tile_grid_lists_the_tiles_in_raster_order_and_sums_their_windows():
    options = tiling.SlidingWindow(tile=32, overlap=0.5)
    positions, total = tiling.tile_grid(20, 80, options)
    assert positions == [(0, 0), (0, 16), (0, 32), (0, 48)]  # one row of tiles: the short side is one tile
    assert total.shape == (32, 80)
    window = tiling.tile_window(32, "hann")
    profile = window[16] / np.sqrt(window[16, 16])
    # one row of Hann tiles at half overlap: each column sums to one across x, times the row profile
    np.testing.assert_allclose(total[:, 16:-16], np.repeat(profile[:, None], 48, axis=1), atol=1e-6)
    assert tiling.tile_positions(64, 48, 32, 16) == [(y, x) for y in (0, 16, 32) for x in (0, 16)]


@pytest.mark.parametrize("field, value, message", [
    ("tile", 0, "tile 0"), ("overlap", 1.0, "overlap 1.0"), ("window", "box", "window 'box'"),
    ("batch_size", 0, "batch size 0"),
])
def test_sliding_window_rejects_bad_settings(field, value, message):
    with pytest.raises(ValueError, match=message):
        tiling.SlidingWindow(**{field: value})


# ----------------------------------------------------------------------------- blending


@pytest.mark.parametrize("height, width", [(100, 90), (70, 33), (20, 50), (12, 9)])
@pytest.mark.parametrize("kind", tiling.WINDOWS)
def test_tiled_equals_whole_image_for_a_pointwise_model(height, width, kind):
    image = random_image(height, width)
    options = tiling.SlidingWindow(tile=32, overlap=0.25, window=kind, batch_size=3)
    tiled = tiled_probabilities(PointwiseNet(), image, options)
    assert tiled.shape == (taxonomy.NUM_CLASSES, height, width)
    np.testing.assert_allclose(tiled, whole_probabilities(PointwiseNet(), image), atol=1e-5)


def test_tiled_matches_whole_image_for_a_local_model_with_enough_overlap():
    image = random_image(100, 90, seed=1)
    options = tiling.SlidingWindow(tile=32, overlap=0.5)
    tiled = tiled_probabilities(LocalNet(), image, options)
    whole = whole_probabilities(LocalNet(), image)
    # only pixels within 2 px of an inner tile edge differ, and the window nearly ignores them there
    assert np.abs(tiled - whole).max() < 0.02
    assert (tiled.argmax(0) == whole.argmax(0)).mean() > 0.995


def test_flip_tta_is_a_no_op_for_a_flip_equivariant_model():
    image = random_image(40, 50)
    plain = tiling.SlidingWindow(tile=32, overlap=0.25)
    flipped = tiling.SlidingWindow(tile=32, overlap=0.25, tta=True)
    np.testing.assert_allclose(tiled_probabilities(PointwiseNet(), image, flipped),
                               tiled_probabilities(PointwiseNet(), image, plain), atol=1e-5)


def test_flip_tta_averages_each_tiles_un_flipped_predictions():
    tiles = np.stack([random_image(32, 32, seed) for seed in (0, 1)])
    model = PositionalNet()
    expected = flip_averaged(model, normalize_tiles(tiles, CPU).numpy())
    np.testing.assert_allclose(tiling.predict_tiles(model, tiles, tta=True, device=CPU).numpy(), expected,
                               atol=1e-6)
    plain = tiling.predict_tiles(model, tiles, tta=False, device=CPU).numpy()
    assert np.abs(expected - plain).max() > 0.1  # for this model the flips change the probabilities


def test_the_sliding_window_blends_the_flip_averaged_tiles():
    image = random_image(40, 50)
    plain = tiling.SlidingWindow(tile=32, overlap=0.25)
    flipped = tiling.SlidingWindow(tile=32, overlap=0.25, tta=True)
    averaged = tiled_probabilities(PositionalNet(), image, flipped)
    np.testing.assert_allclose(averaged, tiled_probabilities(FlipAveragedNet(PositionalNet()), image, plain),
                               atol=1e-5)
    assert np.abs(averaged - tiled_probabilities(PositionalNet(), image, plain)).max() > 0.1


@pytest.mark.parametrize("kind", tiling.WINDOWS)
def test_constant_model_gives_a_perfectly_constant_map(kind):
    model = ConstantNet()
    image = random_image(150, 110)
    options = tiling.SlidingWindow(tile=32, overlap=0.25, window=kind, tta=True)
    tiled = tiled_probabilities(model, image, options)
    expected = torch.softmax(model.logits.detach(), 0).numpy()[:, None, None]
    np.testing.assert_allclose(tiled, np.broadcast_to(expected, tiled.shape), rtol=1e-6, atol=1e-7)
    labels = tiling.predict_labels(model, image, options, CPU, progress=False)
    assert (labels == int(model.logits.argmax())).all()


def test_band_buffers_depend_on_tile_and_width_not_on_height(monkeypatch):
    shapes = []

    class RecordingBlender(tiling.BandBlender):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            shapes.append((tuple(self.sums.shape), tuple(self.weights.shape)))

    monkeypatch.setattr(tiling, "BandBlender", RecordingBlender)  # the sliding window lives in tiling
    options = tiling.SlidingWindow(tile=32, overlap=0.25, batch_size=2)
    for height, width in ((100, 70), (1000, 70), (1000, 20)):
        labels = tiling.predict_labels(PointwiseNet(), random_image(height, width), options, CPU,
                                       progress=False)
        assert labels.shape == (height, width)
    # a tile's rows; on a narrow scan, one batch of tiles' pixels (2 * 32 * 32 / 20 px = 103 rows)
    assert shapes == [((taxonomy.NUM_CLASSES, 32, 70), (32, 70))] * 2 + [
        ((taxonomy.NUM_CLASSES, 103, 20), (103, 20))]


def test_a_narrow_scan_is_finished_in_as_few_bands_as_its_transpose():
    # each finished band costs fixed work (normalise, argmax, copy): a tall scan used to pay it
    # once per row of tiles, its transpose once
    options = tiling.SlidingWindow(tile=32, overlap=0.25, batch_size=8)
    tall = list(tiling.iter_probability_bands(PointwiseNet(), random_image(600, 20), options, CPU,
                                              progress=False))
    wide = list(tiling.iter_probability_bands(PointwiseNet(), random_image(20, 600), options, CPU,
                                              progress=False))
    assert len(wide) == 1 and len(tall) <= 2


def test_model_with_the_wrong_number_of_classes_is_refused():
    model = nn.Conv2d(3, 4, 1)
    with pytest.raises(ValueError, match="predicts 4 classes, expected 16"):
        tiling.predict_labels(model, random_image(40, 40), tiling.SlidingWindow(tile=32), CPU,
                              progress=False)


# ----------------------------------------------------------------------------- scans


def test_auto_scale_maps_the_longest_side_to_the_training_size():
    assert predict.resolve_scale("auto", 384, 3000, 12000) == pytest.approx(0.032)
    assert predict.resolve_scale(0.5, 384, 3000, 12000) == 0.5
    with pytest.raises(ValueError, match="scale -1"):
        predict.resolve_scale(-1, 384, 10, 10)


def test_predict_scan_returns_full_resolution_and_marks_transparent_pixels(tmp_path):
    rgba = np.dstack([random_image(90, 120), np.full((90, 120), 255, np.uint8)])
    rgba[:, :30, 3] = 0  # a transparent strip: no artwork there
    Image.fromarray(rgba, "RGBA").save(tmp_path / "scan.png")
    scan = scans.read_scan(tmp_path / "scan.png")
    assert scan.artwork is not None and not scan.artwork[:, :30].any() and scan.artwork[:, 30:].all()
    scale = predict.resolve_scale("auto", 32, scan.height, scan.width)
    labels = predict.predict_scan(ConstantNet(), scan, tiling.SlidingWindow(tile=32), CPU, scale,
                                  progress=False)
    assert labels.shape == (90, 120) and labels.dtype == np.uint8
    assert (labels[:, :30] == taxonomy.IGNORE_INDEX).all()
    assert (labels[:, 30:] == int(ConstantNet().logits.argmax())).all()


def test_reads_grayscale_and_16_bit_png(tmp_path):
    Image.fromarray(np.full((8, 9), 200, np.uint8), "L").save(tmp_path / "grey.png")
    Image.fromarray(np.full((8, 9), 65535, np.uint16)).save(tmp_path / "deep.png")
    grey, deep = scans.read_scan(tmp_path / "grey.png"), scans.read_scan(tmp_path / "deep.png")
    assert grey.rgb.shape == (8, 9, 3) and (grey.rgb == 200).all() and grey.artwork is None
    assert (deep.rgb == 255).all()


def test_reads_16_bit_rgb_tiff(tmp_path):
    data = np.zeros((10, 12, 3), np.uint16)
    data[..., 0], data[..., 1], data[..., 2] = 65535, 32768, 257
    tifffile.imwrite(tmp_path / "scan.tif", data)
    scan = scans.read_scan(tmp_path / "scan.tif")
    assert scan.rgb.dtype == np.uint8 and scan.artwork is None
    assert tuple(scan.rgb[3, 4]) == (255, 128, 1)


def test_reads_lzw_compressed_tiff(tmp_path):
    data = np.full((9, 11, 3), 257 * 40, np.uint16)
    tifffile.imwrite(tmp_path / "scan.tif", data, compression="lzw")  # not memory-mappable
    assert (scans.read_scan(tmp_path / "scan.tif").rgb == 40).all()


def test_reads_rgba_tiff_alpha_as_the_artwork_and_composites_on_white(tmp_path):
    data = np.zeros((6, 8, 4), np.uint8)
    data[..., 3] = 255
    data[:, :2, 3] = 0
    tifffile.imwrite(tmp_path / "scan.tiff", data, photometric="rgb", extrasamples=["unassalpha"])
    scan = scans.read_scan(tmp_path / "scan.tiff")
    assert (scan.rgb[:, :2] == 255).all() and (scan.rgb[:, 2:] == 0).all()
    assert not scan.artwork[:, :2].any() and scan.artwork[:, 2:].all()


def test_reads_planar_and_float_tiffs(tmp_path):
    planar = np.zeros((3, 7, 9), np.uint8)
    planar[1] = 100
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    assert tuple(scans.read_scan(tmp_path / "planar.tif").rgb[2, 3]) == (0, 100, 0)
    tifffile.imwrite(tmp_path / "float.tif", np.full((5, 5), 0.5, np.float32))
    assert (scans.read_scan(tmp_path / "float.tif").rgb == 128).all()


def test_unsupported_tiff_sample_type_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "signed.tif", np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match=r"signed\.tif: unsupported TIFF sample type int32"):
        scans.read_scan(tmp_path / "signed.tif")


def test_bad_inputs_raise_errors_naming_the_file(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(random_image(64, 64)).save(tmp_path / "whole.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "whole.png").read_bytes()[:300])
    (tmp_path / "notes.tif").write_text("not a tiff")
    with pytest.raises(ValueError, match=r"notes\.png: cannot read image"):
        scans.read_scan(tmp_path / "notes.png")
    with pytest.raises(ValueError, match=r"truncated\.png: cannot read image"):
        scans.read_scan(tmp_path / "truncated.png")
    with pytest.raises(ValueError, match=r"notes\.tif: cannot read TIFF"):
        scans.read_scan(tmp_path / "notes.tif")
    with pytest.raises(FileNotFoundError, match=r"missing\.png: file not found"):
        scans.read_scan(tmp_path / "missing.png")


# ----------------------------------------------------------------------------- outputs


def test_area_table_counts_pixels_percent_of_artwork_and_mm2():
    labels = np.zeros((10, 10), np.uint8)
    labels[:2] = taxonomy.CLASS_IDS["Peel"]  # 20 px
    labels[9] = taxonomy.IGNORE_INDEX  # 10 px of background, excluded from the percentages
    table = damage_report.area_table(labels, dpi=25.4).set_index("class")
    assert table.loc["Peel", "pixels"] == 20 and table.loc["Clean", "pixels"] == 70
    assert table.loc["Peel", "percent_of_artwork"] == pytest.approx(100 * 20 / 90)
    assert table.loc["Peel", "area_mm2"] == pytest.approx(20.0)  # 25.4 dpi: 1 px = 1 mm²
    assert np.isnan(table.loc["Background", "percent_of_artwork"])
    assert table.loc["Background", "pixels"] == 10
    assert "area_mm2" not in damage_report.area_table(labels).columns


def test_overlay_tints_damage_only():
    rgb = np.full((2, 3, 3), 100, np.uint8)
    labels = np.array([[0, 1, 255], [2, 0, 0]], np.uint8)
    out = overlays.overlay(rgb, labels, outline=0)
    assert (out[0, 0] == 100).all() and (out[0, 2] == 100).all()  # Clean, Background untouched
    expected = (100 + np.asarray(taxonomy.PALETTE[1])) // 2
    np.testing.assert_array_equal(out[0, 1], expected)


def written_outputs(out: Path, name: str) -> tuple[np.ndarray, pd.DataFrame, pd.Series]:
    """A scan's mask.png, areas.csv (by class) and summary.csv row, as predict wrote them."""
    mask = np.asarray(Image.open(out / name / "mask.png"))
    areas = pd.read_csv(out / name / "areas.csv").set_index("class")
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False).set_index("image").loc[name]
    return mask, areas, summary


def assert_areas_and_summary_count(labels: np.ndarray, areas: pd.DataFrame, summary: pd.Series, dpi: float) -> None:
    """areas.csv and the summary row say what ``labels`` holds: pixels, % of the artwork, mm² (hand-counted)."""
    artwork = int((labels != taxonomy.IGNORE_INDEX).sum())
    mm2_per_pixel = (25.4 / dpi) ** 2
    for class_id, name in enumerate(taxonomy.CLASS_NAMES):
        pixels = int((labels == class_id).sum())
        assert areas.loc[name, "pixels"] == pixels, name
        assert areas.loc[name, "percent_of_artwork"] == pytest.approx(100 * pixels / artwork, rel=1e-5), name
        assert areas.loc[name, "area_mm2"] == pytest.approx(pixels * mm2_per_pixel, rel=1e-5), name
        if name != "Clean":
            assert summary[f"{name} %"] == pytest.approx(100 * pixels / artwork, rel=1e-5), name
    background = int((labels == taxonomy.IGNORE_INDEX).sum())
    assert areas.loc[taxonomy.BACKGROUND_NAME, "pixels"] == background
    assert np.isnan(areas.loc[taxonomy.BACKGROUND_NAME, "percent_of_artwork"])
    damaged = int(((labels != taxonomy.CLASS_IDS["Clean"]) & (labels != taxonomy.IGNORE_INDEX)).sum())
    assert (summary["width"], summary["height"]) == (labels.shape[1], labels.shape[0])
    assert summary["artwork_pixels"] == artwork and summary["error"] == ""
    assert summary["damage %"] == pytest.approx(100 * damaged / artwork, rel=1e-5)
    assert summary["damage mm2"] == pytest.approx(damaged * mm2_per_pixel, rel=1e-5)


def test_the_written_outputs_hold_the_labels_of_a_constant_model(tmp_path):
    rgba = np.dstack([random_image(90, 120), np.full((90, 120), 255, np.uint8)])
    rgba[:, :30, 3] = 0  # transparent: Background in the mask, outside the percentages
    Image.fromarray(rgba, "RGBA").save(tmp_path / "scan.png")
    out = tmp_path / "out"
    # auto: 32 / 120 px, a factor that does not divide the scan; the constant map survives any resize
    failures = predict.predict_inputs(ConstantNet(), 32, tmp_path / "scan.png", out, tiling.SlidingWindow(tile=32),
                                      CPU, predict.PredictOptions(scale="auto", dpi=300, progress=False))
    assert failures == []
    mask, areas, summary = written_outputs(out, "scan")
    predicted = taxonomy.CLASS_IDS["Scratch"]  # ConstantNet's largest logit
    assert int(ConstantNet().logits.argmax()) == predicted
    expected = np.full((90, 120), predicted, np.uint8)
    expected[:, :30] = taxonomy.IGNORE_INDEX
    np.testing.assert_array_equal(mask, expected)
    assert areas.loc["Scratch", "pixels"] == 90 * 90 and areas.loc["Scratch", "percent_of_artwork"] == 100
    assert summary["Scratch %"] == 100 and summary["damage %"] == 100 and summary["Peel %"] == 0
    assert_areas_and_summary_count(expected, areas, summary, dpi=300)


def colour_blocks() -> tuple[np.ndarray, np.ndarray]:
    """A 96 x 128 RGBA scan of ColourNet's colours in blocks at multiples of 4 px, asymmetric in both axes
    (a flipped or shifted label map differs), and the labels ColourNet gives it."""
    labels = np.full((96, 128), taxonomy.CLASS_IDS["Clean"], np.uint8)
    for name, rows, columns in (("Peel", slice(8, 40), slice(4, 60)), ("Dust", slice(60, 92), slice(100, 124)),
                                ("Stamp", slice(0, 16), slice(112, 128)), ("Dust", slice(44, 48), slice(8, 12))):
        labels[rows, columns] = taxonomy.CLASS_IDS[name]
    palette = {taxonomy.CLASS_IDS[name]: colour for name, colour in ColourNet.COLOURS.items()}
    rgba = np.zeros((96, 128, 4), np.uint8)
    for class_id, colour in palette.items():
        rgba[labels == class_id, :3] = colour
    rgba[..., 3] = 255
    rgba[84:96, 0:20, 3] = 0  # a transparent corner
    labels[84:96, 0:20] = taxonomy.IGNORE_INDEX
    return rgba, labels


def test_a_shrunk_scan_is_labelled_and_resized_back_in_place(tmp_path):
    rgba, expected = colour_blocks()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "blocks.png")
    out = tmp_path / "out"
    # auto with a 32 px training size: longest side 128 -> 32, the model sees the scan at 1/4
    failures = predict.predict_inputs(ColourNet(), 32, tmp_path / "blocks.png", out,
                                      tiling.SlidingWindow(tile=32, overlap=0.5), CPU,
                                      predict.PredictOptions(scale="auto", dpi=254, progress=False))
    assert failures == []
    assert "scale factor used</th><td>0.25<" in (out / "blocks" / "report.html").read_text()
    mask, areas, summary = written_outputs(out, "blocks")
    np.testing.assert_array_equal(mask, expected)  # every pixel: a flipped or shifted resize fails here
    assert_areas_and_summary_count(expected, areas, summary, dpi=254)
    assert summary["Peel %"] == pytest.approx(100 * 32 * 56 / (96 * 128 - 12 * 20), rel=1e-5)


def write_image(path, array):
    Image.fromarray(array).save(path)


def test_folder_with_a_bad_file_still_predicts_the_others(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    write_image(scans / "a.png", random_image(50, 70, seed=1))
    write_image(scans / "b.jpg", random_image(80, 40, seed=2))
    (scans / "broken.png").write_text("this is text")
    (scans / "README.txt").write_text("not a scan, not even tried")
    out = tmp_path / "out"
    failures = predict.predict_inputs(ConstantNet(), 32, scans, out, tiling.SlidingWindow(tile=32),
                                      CPU, predict.PredictOptions(dpi=300, progress=False))
    assert [label for label, _ in failures] == [str(scans / "broken.png")]
    for name, size in (("a", (70, 50)), ("b", (40, 80))):
        for file in ("mask.png", "overlay.png", "areas.csv", "report.html"):
            assert (out / name / file).is_file()
        assert Image.open(out / name / "mask.png").size == size
        assert "data:image/png;base64," in (out / name / "report.html").read_text()  # small: enlarged, PNG
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert list(summary["image"]) == ["a", "b", "broken"]
    assert "broken.png: cannot read image" in summary.loc[2, "error"]
    assert summary.loc[0, "error"] == "" and "Peel %" in summary.columns and "damage mm2" in summary
    assert not list(out.glob("**/*.tmp"))


def test_parquet_shards_and_data_folders_are_inputs(tmp_path):
    rows = [make_row("s1", size=(40, 30)), make_row("s2")]
    rows[1]["image"] = {"bytes": b"garbage", "path": "s2.png"}
    write_rows(tmp_path / "hf" / "data" / "train-00000-of-00001.parquet", rows)
    failures = predict.predict_inputs(ConstantNet(), 32, tmp_path / "hf", tmp_path / "out",
                                      tiling.SlidingWindow(tile=32), CPU, predict.PredictOptions(progress=False))
    assert len(failures) == 1 and "s2: cannot read image" in failures[0][1]
    assert Image.open(tmp_path / "out" / "s1" / "mask.png").size == (40, 30)

    (tmp_path / "data" / "images").mkdir(parents=True)
    write_image(tmp_path / "data" / "images" / "x1.png", random_image(20, 20))
    assert [s.name for s in scans.iter_sources(tmp_path / "data")] == ["x1"]


def test_missing_or_empty_input_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: input not found"):
        list(scans.iter_sources(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="no images"):
        list(scans.iter_sources(tmp_path))


def test_load_model_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint_best.pt: no best checkpoint"):
        predict.load_model(tmp_path, "cpu")


@pytest.mark.parametrize("native_bf16", [False, True], ids=["avx2-cpu", "bf16-cpu"])
def test_the_tiles_are_predicted_in_the_runs_autocast_dtype(monkeypatch, native_bf16):
    from heritage.training import devices

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native_bf16)
    auto = torch.bfloat16 if native_bf16 else None
    seen = []

    class RecordingNet(PointwiseNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            return super().forward(x)

    image = random_image(40, 40)
    for amp, expected in (("auto", auto), ("off", None), ("bf16", torch.bfloat16)):
        options = tiling.SlidingWindow(tile=32, dtype=predict.run_dtype({"amp": amp}, CPU))
        tiling.predict_labels(RecordingNet(), image, options, CPU, progress=False)
        assert set(seen) == {expected}, amp
        seen.clear()
    assert predict.run_dtype({}, CPU) is auto  # a run that recorded no amp: auto


def test_predict_chooses_the_device_as_training_does():
    assert predict.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert predict.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device 'tpu': expected auto, cpu or cuda"):
        predict.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda': torch sees no CUDA device"):
            predict.resolve_device("cuda")


def test_load_model_refuses_a_checkpoint_without_its_config(tmp_path):
    torch.save({"model": {}}, tmp_path / "checkpoint_best.pt")
    with pytest.raises(ValueError, match=r"checkpoint_best.pt: checkpoint lacks \['config'\]"):
        predict.load_model(tmp_path, "cpu")
    torch.save({"model": {}, "config": {"architecture": "unet"}}, tmp_path / "checkpoint_best.pt")
    with pytest.raises(ValueError, match=r"checkpoint config lacks \['encoder', 'image_size'\]"):
        predict.load_model(tmp_path, "cpu")


# ----------------------------------------------------------------------------- through heritage.modeling.models


def test_load_model_rebuilds_a_run_with_the_residual_input(tmp_path):
    """A checkpoint whose config has ``residual_input`` is rebuilt with the residual channel in its input stem
    (its weights would not fit the 3-channel stem), and gives the trained model's outputs."""
    from heritage.modeling.models import build_model

    config = {"architecture": "unet", "encoder": "convnext_tiny", "image_size": 64, "full_resolution_skips": True,
              "residual_input": True}
    torch.manual_seed(0)
    model = build_model("unet", "convnext_tiny", image_size=64, full_resolution_skips=True, residual_input=True).eval()
    torch.save({"model": model.state_dict(), "config": config, "epoch": 1, "val_miou": 0.1},
               tmp_path / "checkpoint_best.pt")
    loaded, _ = predict.load_model(tmp_path, "cpu")
    assert loaded.residual_input and loaded.full_stem[0][0].in_channels == 4
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))


def test_cli_predicts_a_folder_with_a_trained_run_folder(tmp_path, capsys):
    from heritage.modeling.models import build_model

    config = {"architecture": "unet", "encoder": "convnext_tiny", "image_size": 64}
    model = build_model(config["architecture"], config["encoder"], image_size=64)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": model.state_dict(), "config": config, "epoch": 1, "val_miou": 0.1},
               run / "checkpoint_best.pt")
    scans = tmp_path / "scans"
    scans.mkdir()
    write_image(scans / "wide.png", random_image(60, 150))
    (scans / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    argv = ["predict", "--run", str(run), "--input", str(scans), "--out", str(out), "--device", "cpu",
            "--scale", "1", "--overlap", "0.5", "--dpi", "600"]
    assert cli.main(argv) == 1  # one input failed...
    err = capsys.readouterr().err.strip().splitlines()
    broken = scans / "broken.png"
    assert f"predict: skipped {broken}: cannot read image" in err[0]  # the file named once
    assert err[-1] == (f"heritage predict: 1 input(s) failed ({broken}); the others were predicted; "
                       f"errors in {out / 'summary.csv'}")
    labels = np.asarray(Image.open(out / "wide" / "mask.png"))  # ...the other was still predicted
    assert labels.shape == (60, 150) and set(np.unique(labels)) <= set(range(taxonomy.NUM_CLASSES))
    assert (out / "wide" / "report.html").is_file()
    assert list(pd.read_csv(out / "summary.csv")["image"]) == ["broken", "wide"]


def test_cli_refuses_a_tile_a_fixed_size_encoder_cannot_take():
    with pytest.raises(ValueError, match="use --tile 64"):
        predict.check_tile("swin_tiny", 96, image_size=64)
    with pytest.raises(ValueError, match="cannot take image size 50"):
        predict.check_tile("convnext_tiny", 50, image_size=64)


# ----------------------------------------------------------------------------- orientation


class CountingNet(LocalNet):
    """LocalNet made transpose-equivariant (symmetric 3x3 kernels, zero padding), counting its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():  # a kernel equal to its transpose commutes with transposing the input
            for layer in (self.body[0], self.body[2]):
                layer.weight.copy_((layer.weight + layer.weight.transpose(2, 3)) / 2)
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return super().forward(x)


@pytest.mark.parametrize("height, width", [(20, 300), (45, 130), (33, 33)])
def test_a_transposed_scan_costs_the_same_and_gives_the_transposed_map(height, width):
    # tall scans used to call the model once per tile (batches stopped at each row of tiles)
    options = tiling.SlidingWindow(tile=32, overlap=0.25, batch_size=4)
    image = random_image(height, width)
    model = CountingNet()
    wide = tiled_probabilities(model, image, options)
    wide_calls, model.calls = model.calls, []
    tall = tiled_probabilities(model, np.ascontiguousarray(image.transpose(1, 0, 2)), options)
    tiles = (len(tiling.tile_starts(max(height, 32), 32, options.stride))
             * len(tiling.tile_starts(max(width, 32), 32, options.stride)))
    assert sum(wide_calls) == sum(model.calls) == tiles  # as many windows either way...
    assert len(wide_calls) == len(model.calls) == -(-tiles // options.batch_size)  # ...in full batches
    np.testing.assert_allclose(tall, wide.transpose(0, 2, 1), atol=1e-6)


def test_batches_across_rows_of_tiles_blend_as_single_tiles_do():
    image = random_image(150, 30, seed=3)
    single = tiled_probabilities(CountingNet(), image, tiling.SlidingWindow(tile=32, batch_size=1))
    model = CountingNet()
    batched = tiled_probabilities(model, image, tiling.SlidingWindow(tile=32, batch_size=5))
    assert model.calls == [5, 1]  # 6 rows of one tile: the first batch spans five of them
    np.testing.assert_allclose(batched, single, atol=1e-6)


# ----------------------------------------------------------------------------- bad arguments


def _out_is_a_file(tmp_path):
    (tmp_path / "out.txt").write_text("a file")
    return {"out": tmp_path / "out.txt"}


def _out_under_a_file(tmp_path):
    (tmp_path / "out.txt").write_text("a file")
    return {"out": tmp_path / "out.txt" / "maps"}


def _summary_is_a_folder(tmp_path):
    (tmp_path / "out" / "summary.csv").mkdir(parents=True)
    return {}


def _run_missing(tmp_path):
    return {"run": tmp_path / "nowhere"}


def _run_is_a_file(tmp_path):
    (tmp_path / "run.pt").write_bytes(b"")
    return {"run": tmp_path / "run.pt"}


def _input_missing(tmp_path):
    return {"input": tmp_path / "no-scans"}


def _input_without_scans(tmp_path):
    (tmp_path / "empty").mkdir()
    return {"input": tmp_path / "empty"}


def _input_unreadable(tmp_path):
    (tmp_path / "scan.png").write_text("not an image")
    return {"input": tmp_path / "scan.png"}


def _input_unreadable_tiff(tmp_path):
    (tmp_path / "scan.tif").write_text("not a tiff")
    return {"input": tmp_path / "scan.tif"}


@pytest.mark.parametrize("arrange, message", [
    (_out_is_a_file, r"--out \S*out\.txt: exists and is not a folder"),
    (_out_under_a_file, r"--out \S*maps: cannot be created: \S*out\.txt is not a folder"),
    (_summary_is_a_folder, r"summary\.csv is a folder"),
    (_run_missing, r"--run \S*nowhere: run folder not found"),
    (_run_is_a_file, r"--run \S*run\.pt: not a folder"),
    (_input_missing, r"no-scans: input not found"),
    (_input_without_scans, r"empty: no images"),
    (_input_unreadable, r"scan\.png: cannot read image"),
    (_input_unreadable_tiff, r"scan\.tif: cannot read TIFF"),
])
def test_bad_arguments_are_one_line_before_the_model_loads(tmp_path, capsys, arrange, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint_best.pt").write_bytes(b"not a checkpoint")  # loading it would fail: checks come first
    scans = tmp_path / "scans"
    scans.mkdir()
    write_image(scans / "a.png", random_image(40, 40))
    paths = {"run": run, "input": scans, "out": tmp_path / "out", **arrange(tmp_path)}
    argv = ["predict", "--device", "cpu", *(f"--{k}={v}" for k, v in paths.items())]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("heritage predict: "), err
    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "out").exists() or arrange is _summary_is_a_folder  # nothing was written


def test_a_damaged_checkpoint_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint_best.pt").write_bytes(b"not a checkpoint")
    write_image(tmp_path / "a.png", random_image(40, 40))
    argv = ["predict", "--device", "cpu", "--run", str(run), "--input", str(tmp_path / "a.png"),
            "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint_best.pt: cannot read checkpoint" in err[0], err


def refuse_writes_in(monkeypatch, folder: Path, code: int = errno.EROFS) -> None:
    """Make creating a file directly in ``folder`` fail with ``code``, as a read-only mount or a folder
    without write permission does (root bypasses the permission bits, so chmod cannot test this)."""
    create = tempfile.mkstemp

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        if dir is not None and Path(dir) == folder:
            raise OSError(code, os.strerror(code), str(folder))
        return create(suffix, prefix, dir, text)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_an_unwritable_out_is_one_line(tmp_path, monkeypatch, code):
    locked = tmp_path / "locked"
    locked.mkdir()
    refuse_writes_in(monkeypatch, locked, code)
    reason = re.escape(os.strerror(code))
    with pytest.raises(OSError, match=rf"--out \S*maps: cannot be created: \S*locked is not writable \({reason}\)"):
        predict.check_output_folder(locked / "maps")
    with pytest.raises(OSError, match=rf"--out \S*locked: is not writable \({reason}\)"):
        predict.check_output_folder(locked)
    assert list(locked.iterdir()) == []
    predict.check_output_folder(tmp_path / "elsewhere")  # other folders stay writable


def test_the_cli_refuses_an_unwritable_out_before_the_model_loads(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint_best.pt").write_bytes(b"not a checkpoint")  # loading it would fail: the check comes first
    write_image(tmp_path / "a.png", random_image(40, 40))
    locked = tmp_path / "locked"
    locked.mkdir()
    refuse_writes_in(monkeypatch, locked)
    argv = ["predict", "--device", "cpu", "--run", str(run), "--input", str(tmp_path / "a.png"),
            "--out", str(locked / "maps")]
    assert cli.main(argv) == errors.EXIT_MACHINE  # a read-only file system is the machine's fault (exit 74)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.fullmatch(r"heritage predict: --out \S*maps: cannot be created: \S*locked is "
                                          r"not writable \(Read-only file system\)", err[0]), err
    assert list(locked.iterdir()) == []


@pytest.fixture
def read_only_mount(tmp_path):
    """A real read-only tmpfs where this process may mount one (root with CAP_SYS_ADMIN), else a skip."""
    import subprocess

    folder = tmp_path / "read-only"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True) if os.geteuid() == 0 else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN); "
                    "test_an_unwritable_out_is_one_line covers the same check by fault injection")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True, capture_output=True)


def test_a_read_only_mount_as_out_is_one_line(read_only_mount):
    with pytest.raises(OSError, match=r"--out \S*read-only: is not writable \(Read-only file system\)"):
        predict.check_output_folder(read_only_mount)
    with pytest.raises(OSError, match=r"--out \S*maps: cannot be created: \S*read-only is not writable"):
        predict.check_output_folder(read_only_mount / "maps")


def test_an_output_folder_taken_by_a_file_fails_that_scan_only(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    write_image(scans / "a.png", random_image(40, 40))
    write_image(scans / "b.png", random_image(40, 40))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a").write_text("a file where a's folder should be")
    failures = predict.predict_inputs(ConstantNet(), 32, scans, out, tiling.SlidingWindow(tile=32),
                                      CPU, predict.PredictOptions(progress=False))
    [(label, message)] = failures
    assert label == str(scans / "a.png") and message.startswith(f"{label}: {out / 'a'}")
    assert "[Errno" not in message and "File exists" in message
    assert (out / "b" / "mask.png").is_file()


@pytest.mark.parametrize("flag, value, message", [
    ("--tile", "0", "tile 0: must be a positive"), ("--overlap", "1.5", "overlap 1.5"),
    ("--batch", "0", "batch size 0"),
])
def test_bad_tiling_settings_are_refused_before_the_model_loads(tmp_path, capsys, flag, value, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint_best.pt").write_bytes(b"not a checkpoint")  # loading it would fail: checks come first
    write_image(tmp_path / "a.png", random_image(40, 40))
    argv = ["predict", "--run", str(run), "--input", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
            flag, value]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_auto_scale_of_a_patch_run_is_its_working_resolution_and_warns_from_the_record():
    assert predict.resolve_scale("auto", 384, 3000, 12000, "native") == 1.0
    assert predict.resolve_scale("auto", 384, 3000, 12000, 1024) == pytest.approx(1024 / 12000)
    assert predict.resolve_scale("auto", 384, 300, 1200, 2048) == 1.0  # never enlarged, as in training
    assert predict.resolve_scale(0.5, 384, 3000, 12000, 1024) == 0.5
    recorded = {"model_input": {"Hair": {"n_components": 4, "median_area_px": 0.5, "share_le_2px": 1.0}},
                "stored": {"Hair": {"n_components": 4, "median_area_px": 8.0, "share_le_2px": 0.0}}}
    assert "Hair: median damage component 0.5 px" in predict.scale_warnings("auto", recorded)[0]
    assert predict.scale_warnings(1.0, recorded) == []  # 8 px at the data folder's size
    assert "Hair: median damage component 0.5 px" in predict.scale_warnings(0.25, recorded)[0]
    assert predict.scale_warnings("auto", None) == []  # a run from before components were recorded
