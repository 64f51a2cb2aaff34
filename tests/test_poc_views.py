"""heritage.report.poc_views: each POC notebook's own view, on hand-made run folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from heritage import config, fileio
from heritage.report import poc_views


def finished(folder: Path, miou: float, clean: float = 0.05) -> None:
    fileio.write_json(folder / "metrics.json", {"test": {"miou": miou, "all_clean_miou": clean}, "params_m": 28.0,
                                                "throughput": {"train_images_per_s": 12.5}})


def test_hierarchical_scores_list_the_three_heads_in_order() -> None:
    frame = poc_views.hierarchical_scores({"hierarchical": {"fine_miou": 0.1, "binary_miou": 0.5, "coarse_miou": 0.25}})
    assert frame["level"].tolist() == ["binary", "coarse", "fine"]
    assert frame["test mIoU (%)"].tolist() == pytest.approx([50, 25, 10])
    assert poc_views.hierarchical_scores({"test": {}}).empty


def test_encoders_side_by_side_reads_the_sibling_runs_and_says_which_are_missing(tmp_path) -> None:
    run = config.load_run_config("poc58_baseline", "smoke", overrides={"runs_root": str(tmp_path)})
    encoders = config.poc_encoders("poc58_baseline")
    finished(config.run_dir(run), 0.3)
    other = tmp_path / "poc58_baseline" / encoders[1] / run.split_name
    finished(other, 0.2)
    frame = poc_views.encoders_side_by_side(run).set_index("encoder")
    assert frame.loc[encoders[0], "this run"] and not frame.loc[encoders[1], "this run"]
    assert frame.loc[encoders[1], "test mIoU (%)"] == pytest.approx(20)
    assert frame.loc[encoders[2], "state"] == "not finished"


def test_variants_side_by_side_take_each_arm_at_the_runs_split(tmp_path) -> None:
    run = config.load_run_config("poc59v2_flagship", "smoke", encoder="convnext_tiny",
                                 overrides={"runs_root": str(tmp_path)})
    finished(config.run_dir(run), 0.3)
    finished(tmp_path / "poc59v2_flagship-dice" / "convnext_tiny" / run.split_name, 0.25)
    finished(tmp_path / "poc59v2_flagship-seeds_protocol" / "convnext_tiny" / "leaky-leaky", 0.6)
    frame = poc_views.variants_side_by_side(run).set_index("variant")
    assert frame.index[0] == "dice_balanced" and frame.loc["dice_balanced", "this run"]
    assert frame.loc["dice", "test mIoU (%)"] == pytest.approx(25)
    assert frame.loc["seeds_protocol", "split"] == "leaky-leaky"
    assert frame.loc["dice_focal", "state"] == "not run"
    assert "res256" in frame.index  # it runs on convnext_tiny; an arm of other encoders would not be listed


def test_class_weights_used_with_their_ratio_to_the_smallest(tmp_path) -> None:
    fileio.write_json(tmp_path / "class_weights.json", {"method": "inverse_sqrt", "max_ratio": None,
                                                        "weights": {"Clean": 0.5, "Material loss": 2.0}})
    frame = poc_views.class_weights_used(tmp_path)
    assert frame["class"].tolist() == ["Clean", "Material loss"]
    assert frame["x smallest"].tolist() == pytest.approx([1.0, 4.0])
    fileio.write_json(tmp_path / "class_weights.json", {"method": None, "max_ratio": None, "weights": None})
    assert poc_views.class_weights_used(tmp_path).empty
