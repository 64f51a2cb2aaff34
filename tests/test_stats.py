"""heritage.stats: counts over originals, pixel shares, material x content, sizes."""

from __future__ import annotations

import numpy as np
import pytest

from heritage import cli, fileio, ingest, stats, taxonomy


def test_dataset_stats_counts_originals_only(data_dir):
    result = stats.dataset_stats(data_dir)
    metadata = ingest.read_metadata(data_dir)
    originals = metadata[metadata["transform"] == "identity"]
    assert result["total_samples"] == 24 and result["augmented_samples"] == 72
    assert result["materials"] == originals["material"].value_counts().to_dict()
    assert sum(sum(row.values()) for row in result["material_content"].values()) == 24
    expected = np.zeros(256, np.int64)
    for sample in originals["id"]:
        expected += np.bincount(fileio.read_mask(ingest.annotation_path(data_dir, sample)).ravel(), minlength=256)
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
