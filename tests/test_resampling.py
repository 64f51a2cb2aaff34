"""heritage.report.resampling: the paired bootstrap over source artworks (per-image and dataset-level mIoU)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from heritage import errors
from heritage.modeling import metrics
from heritage.report import resampling
from heritage.training import runs
from heritage.data import taxonomy

C = taxonomy.NUM_CLASSES


def confusion(clean_hit: int, clean_miss: int, peel_hit: int, peel_miss: int) -> np.ndarray:
    """A 16 x 16 confusion with only Clean (0) and Peel (2): hits on the diagonal, misses swapped."""
    matrix = np.zeros((C, C), dtype=np.int64)
    matrix[0, 0], matrix[0, 2], matrix[2, 2], matrix[2, 0] = clean_hit, clean_miss, peel_hit, peel_miss
    return matrix


def table(ids, sources, confusions) -> pd.DataFrame:
    return runs.per_image_table(ids, sources, np.stack(confusions))


def random_tables(n_sources: int, seed: int, copies: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A and B on ``n_sources`` artworks (``copies`` images each); A hits a little more often than B."""
    rng = np.random.default_rng(seed)
    ids, sources, conf_a, conf_b = [], [], [], []
    for s in range(n_sources):
        for c in range(copies):
            ids.append(f"s{s:03d}" + ("" if c == 0 else f"__copy{c}"))
            sources.append(f"s{s:03d}")
            hits_a, hits_b = rng.integers(40, 100, size=2), rng.integers(30, 90, size=2)
            conf_a.append(confusion(hits_a[0], 100 - hits_a[0], hits_a[1], 100 - hits_a[1]))
            conf_b.append(confusion(hits_b[0], 100 - hits_b[0], hits_b[1], 100 - hits_b[1]))
    return table(ids, sources, conf_a), table(ids, sources, conf_b)


def test_sources_are_resampled_whole_so_augmented_copies_never_count_twice():
    # two artworks, each with its original and three augmented copies of different scores
    ids = ["a", "a__hflip", "a__vflip", "a__rot", "b", "b__hflip", "b__vflip", "b__rot"]
    sources = ["a"] * 4 + ["b"] * 4
    conf_a = [confusion(90, 10, h, 100 - h) for h in (20, 60, 40, 40)] + [confusion(90, 10, h, 100 - h)
                                                                          for h in (90, 70, 80, 80)]
    conf_b = [confusion(90, 10, 40, 60)] * 8
    a, b = table(ids, sources, conf_a), table(ids, sources, conf_b)
    result = resampling.bootstrap_difference(a, b, n_resamples=4000, seed=1)
    per_image = result["per_image_miou"]
    assert (per_image.n_sources, per_image.n_images) == (2, 8)
    difference = a["miou"] - b["miou"]
    by_source = difference.groupby(a["source_id"]).mean()
    # drawing 2 sources out of 2 gives {a, a}, {a, b} or {b, b}: the interval's ends are the two artworks'
    # own means. Resampling images one by one would reach past them (a's copies score 20..60 on Peel).
    assert per_image.ci_low == pytest.approx(by_source["a"], abs=1e-12)
    assert per_image.ci_high == pytest.approx(by_source["b"], abs=1e-12)
    assert per_image.mean == pytest.approx(difference.mean(), abs=1e-12)


def test_the_dataset_level_difference_is_recomputed_from_summed_counts():
    a, b = random_tables(12, seed=4)
    result = resampling.bootstrap_difference(a, b, n_resamples=200, seed=0)["dataset_miou"]
    columns = runs.per_image_columns()

    def dataset_miou(t: pd.DataFrame) -> float:  # the dataset confusion rebuilt from the counts, scored by metrics
        matrix = metrics.ConfusionMatrix()
        true_positive = t[columns["tp"]].sum().to_numpy()
        truth, predicted = t[columns["true"]].sum().to_numpy(), t[columns["pred"]].sum().to_numpy()
        full = np.diag(true_positive)
        full[0, 2], full[2, 0] = truth[0] - true_positive[0], truth[2] - true_positive[2]  # two classes only
        assert (full.sum(axis=0) == predicted).all()
        matrix._counts[:C] = torch.from_numpy(full)
        return matrix.compute()["miou"]

    assert result.mean == pytest.approx(dataset_miou(a) - dataset_miou(b), abs=1e-12)
    assert result.ci_low <= result.mean <= result.ci_high and result.n_sources == 12


def test_the_bootstrap_is_deterministic_under_a_seed():
    a, b = random_tables(30, seed=2)
    first = resampling.bootstrap_difference(a, b, n_resamples=500, seed=7)
    assert first == resampling.bootstrap_difference(a.copy(), b.copy(), n_resamples=500, seed=7)
    # the order the images come in does not matter either
    shuffled = resampling.bootstrap_difference(a.iloc[::-1], b.sample(frac=1, random_state=0), n_resamples=500, seed=7)
    assert shuffled == first
    other = resampling.bootstrap_difference(a, b, n_resamples=500, seed=8)
    assert other.keys() == first.keys() and other["per_image_miou"].ci_low != first["per_image_miou"].ci_low


def test_draws_of_artworks_without_a_labelled_pixel_are_left_out_of_the_interval():
    # s1 is all Background: a draw of s1 alone has no score, and every other draw scores x alone, so the interval
    # is the one difference there is: A's mIoU on x (Clean 50/100, Peel 50/100) minus B's (Clean 40/110, Peel 50/110)
    unlabelled = np.zeros((C, C), dtype=np.int64)
    a = table(["x", "y"], ["s0", "s1"], [confusion(50, 50, 50, 50), unlabelled])
    b = table(["x", "y"], ["s0", "s1"], [confusion(40, 60, 50, 50), unlabelled])
    expected = (50 / 150 + 50 / 150) / 2 - (40 / 150 + 50 / 160) / 2
    for result in resampling.bootstrap_difference(a, b, n_resamples=200, seed=0).values():
        assert result.mean == pytest.approx(expected) and result.ci_low == pytest.approx(expected)
        assert result.ci_high == pytest.approx(expected)


def test_the_interval_shrinks_with_more_sources():
    def widths(n_sources: int) -> dict[str, float]:
        a, b = random_tables(n_sources, seed=3)
        result = resampling.bootstrap_difference(a, b, n_resamples=1000, seed=0)
        return {name: r.ci_high - r.ci_low for name, r in result.items()}

    few, many = widths(10), widths(160)
    for name in resampling.STATISTICS:
        assert many[name] < few[name] / 2, (name, few[name], many[name])  # ~ 1 / sqrt(16) = 1/4 expected


def test_more_copies_of_the_same_artworks_are_still_the_same_number_of_sources():
    a, b = random_tables(5, seed=5, copies=4)
    result = resampling.bootstrap_difference(a, b, n_resamples=100, seed=0)["per_image_miou"]
    assert (result.n_sources, result.n_images) == (5, 20)


def test_mismatched_image_sets_are_refused_in_one_line():
    a, b = random_tables(6, seed=6)
    with pytest.raises(errors.InputError, match=r"not scored on the same test images: 1 only in A \(e\.g\. 's005'\), "
                                                r"0 only in B") as caught:
        resampling.bootstrap_difference(a, b.iloc[:-1], n_resamples=10)
    assert "\n" not in str(caught.value)
    other_source = b.assign(source_id=b["source_id"].where(b["id"] != "s002", "elsewhere"))
    with pytest.raises(errors.InputError, match="image 's002' has source_id 's002' in A but 'elsewhere' in B"):
        resampling.bootstrap_difference(a, other_source, n_resamples=10)
    with pytest.raises(errors.InputError, match="setting B: image 's000' appears twice"):
        resampling.bootstrap_difference(a, pd.concat([b, b.iloc[:1]]), n_resamples=10)


def test_a_setting_whose_runs_share_an_image_is_refused_naming_them(tmp_path):
    a, _ = random_tables(4, seed=7)
    runs.write_per_image(tmp_path / "fold0", a.iloc[:3])
    runs.write_per_image(tmp_path / "fold1", a.iloc[2:])
    read = {name: runs.read_per_image(tmp_path / name) for name in ("fold0", "fold1")}
    with pytest.raises(errors.InputError, match=r"image 's002' is in the per_image.csv of more than one run "
                                                r"\(fold0, fold1\)"):
        resampling.setting_images(read)
    runs.write_per_image(tmp_path / "fold1", a.iloc[3:])
    images = resampling.setting_images({name: runs.read_per_image(tmp_path / name) for name in ("fold0", "fold1")})
    assert list(images["id"]) == list(a["id"]) and images["run_dir"].nunique() == 2
    result = resampling.bootstrap_difference(images, a, n_resamples=10)  # read back, the same images as written
    assert result["per_image_miou"].mean == 0.0 and result["dataset_miou"].mean == 0.0
