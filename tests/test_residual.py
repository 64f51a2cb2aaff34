"""The residual-threshold detector (the thin-damage floor) and the choice of its k on validation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from heritage.data import taxonomy
from heritage.modeling import residual

SCRATCH, DUST, CLEAN = (taxonomy.CLASS_IDS[name] for name in ("Scratch", "Dust", "Clean"))
IGNORE = taxonomy.IGNORE_INDEX


def test_residual_is_luminance_minus_its_5x5_median(marked_image):
    rgb, _ = marked_image()
    luma = rgb.astype(np.float32) @ np.asarray(residual.LUMA_WEIGHTS, dtype=np.float32)
    expected = luma - ndi.median_filter(luma, size=5, mode="nearest")  # OpenCV replicates the border likewise
    np.testing.assert_allclose(residual.residual(rgb), expected, atol=1e-4)


def test_robust_sigma_is_the_noise_level_and_ignores_the_marks():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 3.0, 200_000)
    noise[:2000] = 200.0  # 1 % outliers (the marks) barely move the MAD
    assert residual.robust_sigma(noise) == pytest.approx(3.0, rel=0.05)
    assert residual.robust_sigma(np.zeros(100)) == residual.SIGMA_FLOOR


def test_detect_finds_thin_marks_of_either_polarity_and_little_else(marked_image):
    rgb, mask = marked_image()
    found = residual.detect(rgb, 5.0)
    thin = np.isin(mask, residual.THIN_IDS)
    assert found.dtype == bool and found.shape == mask.shape
    assert found[mask == SCRATCH].mean() > 0.95  # the dark line
    assert found[mask == DUST].mean() > 0.95  # the bright specks
    assert found[~thin].mean() < 0.01
    assert not residual.detect(rgb, 1e6).any()


def test_sweep_counts_match_detect_at_every_k_and_skip_background(marked_image):
    rgb, mask = marked_image()
    mask[:, :8] = IGNORE  # Background: neither a hit nor a detection
    sweep = residual.ThresholdSweep()
    sweep.update(rgb, mask)
    labelled, thin = mask != IGNORE, np.isin(mask, residual.THIN_IDS)
    for index, k in enumerate(sweep.grid):
        found = residual.detect(rgb, float(k))
        assert sweep.counts["hits"][index] == (found & thin).sum()
        assert sweep.counts["detected"][index] == (found & labelled).sum()
        iou = (found & thin).sum() / (thin | (found & labelled)).sum()
        assert sweep.ious()[index] == pytest.approx(iou)
    assert int(sweep.counts["thin"]) == thin.sum()


def test_sweep_merges_by_summing_and_its_state_survives_a_weights_only_checkpoint(marked_image):
    whole, first, second = residual.ThresholdSweep(), residual.ThresholdSweep(), residual.ThresholdSweep()
    for seed, part in ((0, first), (1, second)):
        rgb, mask = marked_image(seed)
        whole.update(rgb, mask)
        part.update(rgb, mask)
    first.merge(second)  # two ranks' shards reduced to one
    for name in whole.counts:
        np.testing.assert_array_equal(first.counts[name], whole.counts[name])
    buffer = io.BytesIO()
    torch.save({name: torch.from_numpy(value) for name, value in whole.state_dict().items()}, buffer)
    buffer.seek(0)
    restored = residual.ThresholdSweep()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.choice() == whole.choice()
    with pytest.raises(ValueError, match="expected"):
        restored.load_state_dict({"hits": np.zeros(3)})


def test_choice_maximises_validation_iou_and_says_how(marked_image):
    rgb, mask = marked_image()
    choice = residual.choose_k([(rgb, mask)])
    ious = [v for v in choice.val_iou if v is not None]
    assert choice.k in residual.K_GRID
    assert choice.val_iou[choice.grid.index(choice.k)] == max(ious)
    assert choice.val_iou[choice.grid.index(choice.k)] > 0.8  # the marks are stark against mild noise
    assert choice.to_json()["chosen_on"] == "val" and choice.thin_pixels == np.isin(mask, residual.THIN_IDS).sum()
    # No thin pixel on validation: the IoU cannot choose; the largest k is taken and the rule says why.
    plain = np.full_like(mask, CLEAN)
    blank = residual.choose_k([(rgb, plain)])
    assert blank.k == max(residual.K_GRID) and "no thin-damage pixel" in blank.rule
    with pytest.raises(ValueError, match="no image"):
        residual.ThresholdSweep().choice()


def test_the_filter_and_the_thin_scores_import_without_torch():
    import subprocess
    import sys

    code = ("import sys; import heritage.modeling.residual, heritage.modeling.thin; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_readme_filter_example(marked_image):
    rgb, mask = marked_image()
    r = residual.residual(rgb)
    assert residual.robust_sigma(r) == pytest.approx(1.4826)  # the residual's MAD is 1 grey level
    assert np.median(r[mask == SCRATCH]) == pytest.approx(-44.0)  # about 30 sigma below 0
    found = residual.detect(rgb, 5.0)
    assert found[mask == SCRATCH].all() and found[mask == CLEAN].mean() < 0.001
