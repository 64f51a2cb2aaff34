"""heritage.data.stats: counts over originals, pixel shares, material x content, sizes."""

from __future__ import annotations

import numpy as np
import pytest

from heritage import cli, fileio
from heritage.data import datafolder, stats, taxonomy


def test_dataset_stats_counts_originals_only(data_dir):
    result = stats.dataset_stats(data_dir)
    metadata = datafolder.read_metadata(data_dir)
    originals = metadata[metadata["transform"] == "identity"]
    assert result["total_samples"] == 24 and result["augmented_samples"] == 72
    assert result["materials"] == originals["material"].value_counts().to_dict()
    assert sum(sum(row.values()) for row in result["material_content"].values()) == 24
    expected = np.zeros(256, np.int64)
    for sample in originals["id"]:
        expected += np.bincount(fileio.read_mask(datafolder.annotation_path(data_dir, sample)).ravel(), minlength=256)
    assert list(result["class_pixel_counts"].values()) == [*expected[:16].tolist(), int(expected[255])]
    assert list(result["class_pixel_counts"])[-1] == taxonomy.BACKGROUND_NAME
    assert sum(result["class_pixel_shares"].values()) == pytest.approx(1.0)
    assert result["images_per_class"]["Clean"] == 24
    assert len(result["image_sizes"]) == 24
    assert result["image_sizes"][0] == f"{originals.width[0]}x{originals.height[0]}"
    assert result["image_size_summary"]["width"]["max"] == originals["width"].max()


def test_cli_stats_writes_json(data_dir, tmp_path, capsys):
    assert cli.main(["data", "stats", "--data", str(data_dir), "--json", str(tmp_path / "stats.json")]) == 0
    assert fileio.read_json(tmp_path / "stats.json")["total_samples"] == 24
    assert "24 originals, 72 augmented copies" in capsys.readouterr().out


def test_component_stats_at_a_resolution_shrink_the_native_components(data_dir):
    native = stats.component_stats(data_dir, "native", progress=False)
    assert native["factor_from_stored"] == {"min": 1.0, "median": 1.0, "max": 1.0}
    assert native["factor_from_original"] == 1.0  # the fixture is ingested at its original size
    assert stats.component_stats(data_dir, 4096, progress=False)["per_class"] == native["per_class"]
    small = stats.component_stats(data_dir, 24, progress=False)
    assert small["factor_from_stored"]["max"] < 1
    assert set(small["per_class"]) == set(native["per_class"]) and native["per_class"]
    for name, row in native["per_class"].items():  # the same components, every one smaller
        assert small["per_class"][name]["n_components"] == row["n_components"]
        assert small["per_class"][name]["median_area_px"] < row["median_area_px"]
        assert small["per_class"][name]["share_le_2px"] >= row["share_le_2px"]


def test_mask_histogram_counts_every_value_in_bands(monkeypatch):
    mask = np.zeros((5, 3), np.uint8)
    mask[0, 0], mask[4, 2], mask[2, 1] = 255, 7, 99
    expected = np.bincount(mask.ravel(), minlength=256)
    monkeypatch.setattr(stats, "HISTOGRAM_PIXELS", 6)  # two rows a band, three bands: the counts are the same
    histogram = stats.mask_histogram(mask)
    assert histogram.dtype == np.int64 and histogram.shape == (256,)
    np.testing.assert_array_equal(histogram, expected)
    assert (histogram[[0, 7, 99, 255]] == [12, 1, 1, 1]).all()
