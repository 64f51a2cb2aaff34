"""heritage.data.weights: known answers for every method, the cap, absent classes, training ids only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from heritage import cli, fileio
from heritage.data import datafolder, splits, taxonomy, weights

# Clean 10000 px, Material loss 100 px, Peel 1 px, the 13 other classes absent.
COUNTS = np.array([10000, 100, 1] + [0] * 13)
TOTAL = COUNTS.sum()

# Labelled pixels per class in ARTeFACT (statistics.json of the published dataset).
ARTEFACT_COUNTS = np.array([69751540, 2922531, 3877364, 23110, 171255, 5407, 238265, 661706, 74397, 475478,
                            804722, 38810, 93514, 18484, 1124, 560273])


def pixel_mean(w: np.ndarray, counts: np.ndarray) -> float:
    return float(np.sum(w * counts) / counts.sum())


def test_inverse_frequency_known_answer():
    w = weights.compute_class_weights(COUNTS, "inverse")
    # w ~ 1/count; normalised so that sum(count * w) / sum(count) = 1 -> w = TOTAL / (3 * count)
    np.testing.assert_allclose(w[:3], TOTAL / (3 * COUNTS[:3]))
    assert w[3:].tolist() == [w[2]] * 13  # absent classes get the largest weight
    assert w.max() / w.min() == pytest.approx(10000)


def test_inverse_sqrt_known_answer():
    w = weights.compute_class_weights(COUNTS, "inverse_sqrt")
    np.testing.assert_allclose(w[:3], np.array([0.01, 0.1, 1.0]) * TOTAL / 111)
    assert pixel_mean(w, COUNTS) == pytest.approx(1.0)
    assert w.max() / w.min() == pytest.approx(100)


def test_log_scaled_compresses_to_the_cap_and_keeps_the_order():
    w = weights.compute_class_weights(COUNTS, "inverse_sqrt_log_scaled", max_ratio=10)
    # inverse-sqrt ratio 100 -> exponent ln(10)/ln(100) = 1/2: weights ~ [1, sqrt(10), 10]
    np.testing.assert_allclose(w[:3] / w[0], [1.0, np.sqrt(10), 10.0])
    assert pixel_mean(w, COUNTS) == pytest.approx(1.0)
    # below the cap it is plain inverse sqrt
    np.testing.assert_allclose(weights.compute_class_weights(COUNTS, "inverse_sqrt_log_scaled", max_ratio=500),
                               weights.compute_class_weights(COUNTS, "inverse_sqrt"))


def test_cap_clips_inverse_frequency():
    w = weights.compute_class_weights(COUNTS, "inverse", max_ratio=50)
    assert w.max() / w.min() == pytest.approx(50)
    assert w[1] == w[2] == w.max()  # 100x and 10000x both clipped to 50x
    assert pixel_mean(w, COUNTS) == pytest.approx(1.0)


def test_artefact_counts_give_the_seeds_balanced_ratio():
    balanced = weights.compute_class_weights(ARTEFACT_COUNTS, "inverse_sqrt_log_scaled")
    assert balanced.max() / balanced.min() == pytest.approx(weights.DEFAULT_MAX_RATIO)
    # rarer classes weigh more; Burn marks (1124 px) is the rarest, Clean the most frequent
    assert (np.argsort(balanced) == np.argsort(-ARTEFACT_COUNTS)).all()
    assert np.argmax(balanced) == taxonomy.CLASS_IDS["Burn marks"]
    extreme = weights.compute_class_weights(ARTEFACT_COUNTS, "inverse")
    assert extreme.max() / extreme.min() > 1000


@pytest.mark.parametrize(("counts", "method", "max_ratio", "message"), [
    (COUNTS, "median_frequency", None, "unknown class-weight method 'median_frequency'"),
    (np.zeros(16), "inverse", None, "no labelled pixels"),
    (np.array([5, -1]), "inverse", None, "non-negative counts"),
    (COUNTS, "inverse", 0.5, "max_ratio must be >= 1"),
])
def test_bad_arguments(counts, method, max_ratio, message):
    with pytest.raises(ValueError, match=message):
        weights.compute_class_weights(counts, method, max_ratio)


def test_count_pixels_on_hand_made_masks(tmp_path):
    mask_a = np.full((4, 5), taxonomy.IGNORE_INDEX, np.uint8)
    mask_a[0, :3] = 0
    mask_a[1, :2] = 15
    mask_b = np.zeros((2, 2), np.uint8)
    mask_b[0, 0] = 7
    fileio.write_png(datafolder.annotation_path(tmp_path, "a"), mask_a)
    fileio.write_png(datafolder.annotation_path(tmp_path, "b"), mask_b)
    expected = np.zeros(16, np.int64)
    expected[[0, 15, 7]] = [3 + 3, 2, 1]
    np.testing.assert_array_equal(weights.count_pixels(tmp_path, ["a", "b"]), expected)
    fileio.write_png(datafolder.annotation_path(tmp_path, "bad"), np.full((2, 2), 99, np.uint8))
    with pytest.raises(ValueError, match=r"annotations/bad\.png: mask values \[99\]"):
        weights.count_pixels(tmp_path, ["a", "bad"])


def test_weights_for_a_fold_use_training_ids_only(copy_data_dir):
    folder = copy_data_dir()
    saved = weights.class_weights_for_fold(folder, "kfold", "fold1", "inverse_sqrt_log_scaled")
    assert not (folder / "weights").exists()  # nothing reads a data folder's weights: none is written
    assert set(saved) >= {"method", "max_ratio", "ratio", "class_names", "pixel_counts", "weights", "protocol", "fold"}
    train, val, test = splits.fold_ids(splits.load_manifest(folder, "kfold"), "fold1")
    assert saved["pixel_counts"] == weights.count_pixels(folder, train).tolist()
    assert saved["pixel_counts"] != weights.count_pixels(folder, train + val + test).tolist()
    assert saved["max_ratio"] == weights.DEFAULT_MAX_RATIO and saved["ratio"] <= weights.DEFAULT_MAX_RATIO + 1e-9
    assert saved["class_names"] == list(taxonomy.CLASS_NAMES)
    assert pixel_mean(np.array(saved["weights"]), np.array(saved["pixel_counts"])) == pytest.approx(1.0)


def test_absent_training_classes_are_reported(tmp_path, capsys):
    """A hand-made data folder: training masks hold only Clean and Dust, so 14 classes are absent."""
    for sample_id, class_id in (("train0", 3), ("val0", 5), ("test0", 9)):
        mask = np.zeros((4, 4), np.uint8)
        mask[0, 0] = class_id
        fileio.write_png(datafolder.annotation_path(tmp_path, sample_id), mask)
    ids = ["train0", "val0", "test0"]
    datafolder.write_metadata(tmp_path, pd.DataFrame({"id": ids, "material": "Paper", "content": "Line art", "width": 4,
                                                  "height": 4, "source_id": ids, "transform": "identity"}))
    fileio.write_json(splits.manifest_path(tmp_path, "holdout"), {"protocol": "holdout", "folds": [
        {"name": "holdout", "train": ["train0"], "val": ["val0"], "test": ["test0"]}]})
    assert cli.main(["data", "weights", "--data", str(tmp_path), "--protocol", "holdout", "--fold", "holdout",
                     "--json", str(tmp_path / "weights.json")]) == 0
    record = fileio.read_json(tmp_path / "weights.json")
    assert record["pixel_counts"][:4] == [15, 0, 0, 1]
    assert len(record["absent_classes"]) == 14 and "Hair" in record["absent_classes"]
    assert record["weights"][taxonomy.CLASS_IDS["Hair"]] == max(record["weights"])
    assert "warning: no training pixels for ['Material loss', 'Peel', 'Scratch'" in capsys.readouterr().out


def test_cli_weights(copy_data_dir, capsys):
    folder = copy_data_dir()
    assert cli.main(["data", "weights", "--data", str(folder), "--protocol", "holdout", "--fold", "holdout",
                     "--method", "inverse", "--max-ratio", "20"]) == 0
    printed = capsys.readouterr().out
    assert "max/min ratio 20.0" in printed and "wrote" not in printed
    assert not (folder / "weights").exists()
    assert cli.main(["data", "weights", "--data", str(folder), "--protocol", "holdout", "--fold", "fold0"]) == 2
    assert capsys.readouterr().err.strip() == ("heritage data weights: unknown fold 'fold0' in the 'holdout' "
                                               "manifest (folds: ['holdout'])")


def test_class_weights_for_ids_are_those_of_their_pixel_counts(copy_data_dir):
    folder = copy_data_dir()
    train, _, _ = splits.fold_ids(splits.load_manifest(folder, "kfold"), "fold0")
    expected = weights.compute_class_weights(weights.count_pixels(folder, train), "inverse_sqrt", 20)
    np.testing.assert_array_equal(weights.class_weights_for_ids(folder, train, "inverse_sqrt", 20, progress=False),
                                  expected)
