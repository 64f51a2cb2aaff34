"""The POC notebooks' run report (heritage.report's one-run views) and what the profiles ask it to show."""

from __future__ import annotations

import numpy as np
import pytest

from heritage import config, report
from heritage.data import taxonomy


def metrics(miou: float = 0.02, clean: float | None = 0.055) -> dict:
    per_class = {name: {"iou": 0.5, "precision": 0.25, "recall": 0.75, "f1": 0.4, "support": 1234, "present": True}
                 for name in taxonomy.CLASS_NAMES}
    per_class["Hair"] = {"iou": None, "precision": None, "recall": None, "f1": None, "support": 0, "present": False}
    return {"test": {"miou": miou, "all_clean_miou": clean, "per_class": per_class}}


def test_the_headline_puts_the_miou_beside_the_all_clean_baseline() -> None:
    assert report.run_headline(metrics(0.02, 0.055)) == (
        "**Test mIoU 2.00%** (dataset-level) against **5.50%** for predicting Clean everywhere on the same test "
        "pixels: not above that trivial baseline.")
    assert report.run_headline(metrics(0.30, 0.055)).endswith(": above that trivial baseline.")
    assert report.run_headline(metrics(0.30, None)) == (
        "**Test mIoU 30.00%** (dataset-level) (this run recorded no all-Clean baseline).")
    with_per_image = metrics(0.30, 0.055)
    with_per_image["test"]["per_image_miou"] = 0.25
    assert report.run_headline(with_per_image).endswith(
        "above that trivial baseline. Per-image mIoU 25.00% (the mean over the test images of each image's mIoU).")


def test_per_class_frame_in_percent_with_absent_classes_marked() -> None:
    frame = report.per_class_frame(metrics()).set_index("class")
    assert list(frame.index) == list(taxonomy.CLASS_NAMES)
    assert frame.loc["Clean"].to_dict() == {"iou (%)": "50.00", "precision (%)": "25.00", "recall (%)": "75.00",
                                            "f1 (%)": "40.00", "support (px)": 1234}
    assert frame.loc["Hair", "iou (%)"] == report.ABSENT and frame.loc["Hair", "support (px)"] == 0


def test_the_configuration_is_folded(data_dir) -> None:
    resolved = config.load_run_config("poc58_baseline", "smoke", overrides={"data_dir": str(data_dir)})
    folded = report.config_details_html(resolved)
    assert folded.startswith("<details><summary>Configuration: run folder, config hash " + resolved.config_hash())
    assert folded.endswith("</details>") and "<table" in folded and "n_prediction_panels" in folded


def test_the_confusion_matrix_is_legible() -> None:
    matrix = np.zeros((taxonomy.NUM_CLASSES, taxonomy.NUM_CLASSES))
    matrix[0, 0], matrix[0, 1], matrix[1, 1], matrix[1, 0] = 19_990, 10, 30, 10  # Clean 20k px, Material loss 40
    fig = report.plot_confusion(matrix)
    assert fig.get_figwidth() >= 12 and fig.get_figheight() >= 10
    ax = fig.axes[0]
    rows = [label.get_text() for label in ax.get_yticklabels()]
    assert rows[:2] == ["Clean (20.0k px)", "Material loss (40 px)"] and rows[5] == "Hair (0 px)"
    texts = [t.get_text() for t in ax.texts]
    assert "100" in texts and "<1" in texts and "75" in texts and "25" in texts  # per row, 10 of 20k is <1%
    assert all(label.get_fontsize() >= 10 for label in ax.get_xticklabels())


@pytest.mark.parametrize("poc", config.available_pocs())
@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_every_run_report_shows_at_least_six_prediction_panels(poc, profile, data_dir) -> None:
    resolved = config.load_run_config(poc, profile, overrides={"data_dir": str(data_dir)})
    assert resolved.n_prediction_panels >= 6


def test_notebook_views_of_the_data_print_no_progress_bar(data_dir, capsys) -> None:
    from heritage.data import datafolder, stats

    ids = datafolder.read_metadata(data_dir)["id"].tolist() * 2  # 100 masks or more: a bar unless asked not to
    assert len(ids) >= 100
    stats.mask_histograms(data_dir, ids)
    assert "stats:" in capsys.readouterr().err
    stats.mask_histograms(data_dir, ids, progress=False)
    stats.dataset_stats(data_dir, progress=False)
    assert capsys.readouterr().err == ""
