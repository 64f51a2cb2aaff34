"""heritage.report: tables and figures rebuilt from fabricated run folders with known numbers."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from heritage import errors, fileio, report
from heritage.data import taxonomy
from heritage.inference import overlays
from heritage.report import design
from heritage.training.runs import code_hash as current_code_hash

FOLDS = ("fold0", "fold1", "fold2")
# Flagship test mIoU per fold: MiT-B3 beats ConvNeXt by 0.10 +- 0.01 on every fold (a clear
# difference); MaxViT's differences to ConvNeXt change sign (no supported difference).
FLAGSHIP = {
    "convnext_tiny": [0.30, 0.32, 0.34],
    "mit_b3": [0.40, 0.43, 0.44],
    "maxvit_tiny": [0.31, 0.30, 0.355],
}
FAMILIES = {"convnext_tiny": "CNN", "swin_tiny": "ViT", "coatnet_0": "hybrid", "maxvit_tiny": "hybrid",
            "mit_b3": "ViT"}


def fake_hash(*parts: str) -> str:
    return "h" + format(abs(hash(parts)) % 16**12, "012x")


def write_run(root: Path, poc: str, encoder: str, fold: str, miou: float, *, variant: str | None = None,
              protocol: str = "kfold", image_size: int = 64, architecture: str = "unet", loss: str = "dice",
              class_weights: str | None = None, absent: tuple[str, ...] = ("Burn marks",),
              config_hash: str | None = None, hierarchical: dict | None = None, all_clean: float = 0.06,
              epochs: int = 6, pretrained: bool | None = False, code_hash: str | None = None,
              thin: dict | None = None) -> Path:
    """A run folder holding ``metrics.json`` in the ARCHITECTURE.md schema (and ``config.yaml`` with
    ``pretrained`` unless it is None), made by the current code unless ``code_hash`` says otherwise."""
    poc_key = poc if variant is None else f"{poc}-{variant}"
    folder = root / poc_key / encoder / f"{protocol}-{fold}"
    per_class = {}
    for i, name in enumerate(taxonomy.CLASS_NAMES):
        iou = None if name in absent else round(miou + 0.01 * (i % 3) - 0.01, 6)
        per_class[name] = {"iou": iou, "precision": iou, "recall": iou, "f1": iou, "support": 0 if iou is None else 100,
                           "present": iou is not None}
    metrics = {
        "poc": poc, "variant": variant, "encoder": encoder, "family": FAMILIES[encoder],
        "architecture": architecture, "loss": loss, "class_weights": class_weights, "protocol": protocol,
        "fold": fold, "profile": "smoke", "seed": 42,
        "config_hash": config_hash or fake_hash(poc_key, encoder, protocol, fold),
        "code_hash": code_hash or current_code_hash(),
        "image_size": image_size, "batch_size": 8, "lr": 2e-3, "epochs": epochs, "params_m": 30.0, "device": "cpu",
        "best_epoch": 5, "val": {"miou": miou},
        "test": {"miou": miou, "all_clean_miou": all_clean, "pixel_accuracy": 0.9, "n_images": 4, "per_class": per_class,
                 "confusion_matrix": np.eye(taxonomy.NUM_CLASSES, dtype=int).tolist()},
        "throughput": {"train_images_per_s": 100.0 * (1 + FOLDS.index(fold)) if fold in FOLDS else 50.0,
                       "eval_images_per_s": 300.0},
        "peak_memory_mb": 512.0, "wall_time_s": 60.0,
    }
    if hierarchical:
        metrics["hierarchical"] = hierarchical
    if thin is not None:
        metrics["test"]["thin"] = thin
    fileio.write_json(folder / "metrics.json", metrics)
    if pretrained is not None:
        fileio.write_text(folder / "config.yaml", f"poc: {poc}\nencoder: {encoder}\npretrained: {str(pretrained).lower()}\n")
    return folder


def plan_row(poc: str, encoder: str, fold: str, *, variant: str = "", protocol: str = "kfold",
             image_size: int = 64, architecture: str = "unet", loss: str = "dice", class_weights=None) -> dict:
    poc_key = poc if not variant else f"{poc}-{variant}"
    return {"poc": poc, "variant": variant, "encoder": encoder, "protocol": protocol, "fold": fold,
            "config_hash": fake_hash(poc_key, encoder, protocol, fold), "family": FAMILIES[encoder],
            "architecture": architecture, "loss": loss, "class_weights": class_weights, "image_size": image_size,
            "batch_size": 8, "lr": 2e-3, "epochs": 6}


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for encoder, values in FLAGSHIP.items():
        for fold, miou in zip(FOLDS, values):
            write_run(root, "poc59v2_flagship", encoder, fold, miou, class_weights="inverse_sqrt_log_scaled")
    for fold, miou in zip(FOLDS, [0.25, 0.27, 0.26]):
        write_run(root, "poc59v2_flagship", "convnext_tiny", fold, miou, variant="dice_focal", loss="dice_focal",
                  class_weights="inverse_sqrt_log_scaled")
        write_run(root, "poc59v2_flagship", "convnext_tiny", fold, miou - 0.05, variant="res256", image_size=32,
                  class_weights="inverse_sqrt_log_scaled")
    write_run(root, "poc58_baseline", "convnext_tiny", "holdout", 0.21, protocol="holdout")
    write_run(root, "poc58_baseline", "swin_tiny", "holdout", 0.23, protocol="holdout")
    write_run(root, "poc55_multitask", "convnext_tiny", "holdout", 0.20, protocol="holdout",
              architecture="hierarchical_upernet", loss="hierarchical",
              hierarchical={"binary_miou": 0.6, "coarse_miou": 0.3, "fine_miou": 0.20})
    return root


@pytest.fixture
def planned() -> pd.DataFrame:
    rows = [plan_row("poc59v2_flagship", e, f, class_weights="inverse_sqrt_log_scaled")
            for e in FLAGSHIP for f in FOLDS]
    rows += [plan_row("poc59v2_flagship", "convnext_tiny", f, variant="dice_focal", loss="dice_focal",
                      class_weights="inverse_sqrt_log_scaled") for f in FOLDS]
    rows += [plan_row("poc59v2_flagship", "convnext_tiny", f, variant="res256", image_size=32,
                      class_weights="inverse_sqrt_log_scaled") for f in FOLDS]
    rows += [plan_row("poc58_baseline", e, "holdout", protocol="holdout")
             for e in ("convnext_tiny", "swin_tiny", "coatnet_0")]  # coatnet_0: planned, never run
    rows += [plan_row("poc55_multitask", "convnext_tiny", "holdout", protocol="holdout",
                      architecture="hierarchical_upernet", loss="hierarchical")]
    return pd.DataFrame(rows)


def table_named(comparison: report.Comparison, name: str) -> report.Table:
    return next(t for t in comparison.tables if t.name == name)


# -- loading ---------------------------------------------------------------------------------------


def test_load_runs_reads_every_metrics_file(runs_root: Path) -> None:
    runs = report.load_runs(runs_root)
    assert len(runs) == 9 + 6 + 3
    row = runs[(runs["encoder"] == "mit_b3") & (runs["fold"] == "fold1")].iloc[0]
    assert row["miou"] == pytest.approx(0.43)
    assert row["run_dir"] == "poc59v2_flagship/mit_b3/kfold-fold1"
    assert row["variant"] == ""
    assert row["per_class"]["Burn marks"] is None


def test_load_runs_names_a_file_missing_keys(tmp_path: Path) -> None:
    fileio.write_json(tmp_path / "a" / "metrics.json", {"poc": "x", "encoder": "y", "test": {"miou": 0.1}})
    with pytest.raises(ValueError, match=r"a/metrics.json: lacks protocol, fold, config_hash, test.per_class"):
        report.load_runs(tmp_path)


def test_runs_of_an_older_configuration_are_ignored(runs_root: Path, planned: pd.DataFrame) -> None:
    write_run(runs_root, "poc58_baseline", "coatnet_0", "holdout", 0.99, protocol="holdout", config_hash="stale")
    used, ignored = report.select_runs(report.load_runs(runs_root), planned)
    assert "poc58_baseline/coatnet_0/holdout-holdout" not in set(used["run_dir"])
    assert ignored["run_dir"].tolist() == ["poc58_baseline/coatnet_0/holdout-holdout"]
    assert "config hash differs" in ignored["reason"].iloc[0]


# -- statistics ------------------------------------------------------------------------------------


def test_paired_difference_matches_a_paired_t_interval() -> None:
    a = np.array([0.40, 0.44, 0.41])
    b = a - np.array([0.10, 0.12, 0.08])
    diff = report.paired_difference(a, b)
    expected = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert diff.n == 3
    assert diff.mean == pytest.approx(0.10)
    assert (diff.ci_low, diff.ci_high) == pytest.approx((expected.low, expected.high))
    assert diff.ci_high - diff.mean == pytest.approx(stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3))
    assert diff.excludes_zero


def test_one_pair_has_no_interval_and_constant_differences_a_zero_width_one() -> None:
    single = report.paired_difference([0.3], [0.2])
    assert not single.testable and math.isnan(single.ci_low) and not single.excludes_zero
    constant = report.paired_difference([0.1, 0.2], [0.3, 0.4])
    assert (constant.ci_low, constant.ci_high) == pytest.approx((-0.2, -0.2))


# -- the verdict rules (hand-computed cases) ---------------------------------------------------------

A3, B3 = [0.40, 0.44, 0.41], [0.30, 0.32, 0.33]  # differences 0.10, 0.12, 0.08: mean 0.10, sd 0.02
CLEAN3 = [0.06, 0.06, 0.06]


def test_three_folds_an_interval_excluding_zero_and_both_above_all_clean_give_a_verdict() -> None:
    verdict = report.decide(A3, B3, CLEAN3, CLEAN3)
    assert verdict.label == "A better" and verdict.reasons == () and verdict.cell == "A better"
    assert (verdict.above_a, verdict.above_b) == (3, 3)
    # half width t(0.975, 2) * 0.02 / sqrt(3) = 4.3027 * 0.011547 = 0.04968: [+5.03, +14.97] points
    assert verdict.statement("MiT", "ConvNeXt").startswith(
        "MiT beats ConvNeXt by 10.00 mIoU points (95% CI [+5.03, +14.97], n=3 paired folds")
    swapped = report.decide(B3, A3, CLEAN3, CLEAN3)
    assert swapped.label == "B better" and swapped.statement("x", "y").startswith("y beats x by 10.00")


def test_the_smoke_case_both_below_all_clean_on_two_folds_is_not_supported() -> None:
    # as in issue 12: ConvNeXt ~2.03 vs MiT ~1.07 mIoU, all-Clean 5.50, two folds, interval excluding 0
    verdict = report.decide([0.0200, 0.0206], [0.0100, 0.0114], [0.055, 0.055], [0.055, 0.055])
    assert verdict.difference.excludes_zero  # differences 0.0100, 0.0092: [+0.45, +1.47] points
    assert verdict.label == "not supported"
    assert verdict.cell == "not supported: both below the all-Clean baseline; 2 paired folds: too few"
    assert "beats" not in verdict.statement("ConvNeXt-T", "MiT-B3")
    assert verdict.statement("ConvNeXt-T", "MiT-B3").startswith("ConvNeXt-T vs MiT-B3: not supported (both below")


def test_an_interval_including_zero_is_not_supported() -> None:
    verdict = report.decide([0.31, 0.30, 0.355], [0.30, 0.32, 0.34], CLEAN3, CLEAN3)
    assert verdict.difference.ci_low < 0 < verdict.difference.ci_high
    assert verdict.cell == "not supported: interval includes 0"


def test_one_side_below_all_clean_on_one_fold_is_not_supported() -> None:
    # B's 0.30 on the first fold is not above that fold's all-Clean 0.31
    verdict = report.decide(A3, B3, CLEAN3, [0.31, 0.06, 0.06])
    assert verdict.above_b == 2
    assert verdict.cell == "not supported: B below the all-Clean baseline on 1 of 3 paired folds"
    below = report.decide(A3, B3, [0.5, 0.5, 0.5], CLEAN3)
    assert below.cell == "not supported: A below the all-Clean baseline"


def test_an_unrecorded_baseline_or_too_few_folds_is_not_supported() -> None:
    unrecorded = report.decide(A3, B3, [math.nan] * 3, CLEAN3)
    assert unrecorded.above_a is None
    assert unrecorded.cell == "not supported: no all-Clean baseline recorded for A"
    assert report.decide([0.3], [0.2], [0.06], [0.06]).cell == "not supported: 1 paired fold: too few"
    none = report.decide([], [], [], [])
    assert none.cell == "not supported: 0 paired folds: too few"
    assert none.statement("A", "B") == "A vs B: not supported (0 paired folds: too few); no paired folds"


def test_paired_difference_refuses_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="equal length, got 2 and 3"):
        report.paired_difference([0.1, 0.2], [0.1, 0.2, 0.3])


# -- tables ----------------------------------------------------------------------------------------


def test_summary_mean_and_sample_std_over_folds(runs_root: Path, planned: pd.DataFrame) -> None:
    summary = report.summarise(report.load_runs(runs_root), planned)
    row = summary[(summary["encoder"] == "convnext_tiny") & (summary["variant"] == "")
                  & (summary["poc"] == "poc59v2_flagship")].iloc[0]
    assert row["n_runs"] == 3 and row["n_planned"] == 3
    assert row["miou_mean"] == pytest.approx(0.32)
    assert row["miou_std"] == pytest.approx(0.02)  # sample std (ddof=1) of 0.30, 0.32, 0.34
    assert row["train_images_per_s_mean"] == pytest.approx(200.0)


def test_encoder_table_numbers_equal_the_runs_and_missing_cells_say_no_run(runs_root, planned) -> None:
    comparison = report.build_comparison(runs_root, planned)
    flagship = table_named(comparison, "encoders_poc59v2_flagship").data.set_index("encoder")
    for encoder, values in FLAGSHIP.items():
        assert flagship.loc[encoder, "miou_mean"] == pytest.approx(np.mean(values))
        assert flagship.loc[encoder, "miou_std"] == pytest.approx(np.std(values, ddof=1))
    baseline = table_named(comparison, "encoders_poc58_baseline")
    coatnet = baseline.display[baseline.display["Encoder"] == "CoAtNet-0"].iloc[0]
    assert coatnet["mIoU (%)"] == report.NO_RUN and coatnet["Folds"] == "0/1"
    assert baseline.data.set_index("encoder").loc["coatnet_0", "miou_mean"] == report.NO_RUN
    assert baseline.display.set_index("Encoder").loc["Swin-Tiny", "mIoU (%)"] == "23.00"  # one fold: no std
    assert flagship["all_clean_miou_mean"].tolist() == pytest.approx([0.06] * len(FLAGSHIP))
    assert baseline.display.set_index("Encoder").loc["Swin-Tiny", "All-Clean mIoU (%)"] == "6.00"
    multitask = table_named(comparison, "encoders_poc55_multitask").display.iloc[0]
    assert multitask["Binary mIoU (%)"] == "60.00" and multitask["Fine mIoU (%)"] == "20.00"


def test_per_class_table_marks_absent_classes(runs_root, planned) -> None:
    table = table_named(report.build_comparison(runs_root, planned), "per_class_iou")
    data = table.data.set_index("class")
    column = "POC-5.9-v2 SegFormer MiT-B3"
    assert data.loc["Burn marks", column] == report.ABSENT
    # Peel is class 2: each fold's IoU is miou + 0.01 * (2 % 3) - 0.01 = miou + 0.01
    assert data.loc["Peel", column] == pytest.approx(np.mean(FLAGSHIP["mit_b3"]) + 0.01)


def test_loss_ablation_lists_loss_variants_with_their_numbers(runs_root, planned) -> None:
    table = table_named(report.build_comparison(runs_root, planned), "loss_ablation_poc59v2_flagship")
    focal = table.data[table.data["variant"] == "dice_focal"].iloc[0]
    assert focal["loss"] == "dice_focal" and focal["miou_mean"] == pytest.approx(0.26)
    assert "res256" not in set(table.data["variant"])  # a resolution variant is RQ3, not the loss ablation


def test_research_question_tables_claim_only_supported_differences(runs_root, planned) -> None:
    comparison = report.build_comparison(runs_root, planned)
    rq1 = table_named(comparison, "rq1_family").data
    vit = rq1[(rq1["a"] == "POC-5.9-v2 ConvNeXt-Tiny") & (rq1["b"] == "POC-5.9-v2 SegFormer MiT-B3")].iloc[0]
    assert vit["n_pairs"] == 3 and vit["verdict"] == "B better" and vit["reason"] == ""
    assert (vit["a_folds_above_all_clean"], vit["b_folds_above_all_clean"]) == (3, 3)
    assert vit["mean_diff"] == pytest.approx(-np.mean(np.subtract(FLAGSHIP["mit_b3"], FLAGSHIP["convnext_tiny"])))
    assert vit["statement"].startswith("POC-5.9-v2 SegFormer MiT-B3 beats POC-5.9-v2 ConvNeXt-Tiny")
    hybrid = rq1[(rq1["a"] == "POC-5.9-v2 ConvNeXt-Tiny") & (rq1["b"] == "POC-5.9-v2 MaxViT-Tiny")].iloc[0]
    assert hybrid["verdict"] == "not supported" and hybrid["reason"] == "interval includes 0"
    rq2 = table_named(comparison, "rq2_multitask")
    assert rq2.data.iloc[0]["n_pairs"] == 1 and rq2.data.iloc[0]["reason"] == "1 paired fold: too few"
    assert rq2.display.iloc[0]["Verdict"] == "not supported: 1 paired fold: too few"
    assert rq2.data.iloc[0]["also_differs"] == ""  # the multi-task loss comes with the multi-task model
    rq3 = table_named(comparison, "rq3_resolution").data.iloc[0]
    assert (rq3["factor_a"], rq3["factor_b"]) == (64, 32) and rq3["also_differs"] == ""
    assert rq3["verdict"] == "A better" and rq3["mean_diff"] == pytest.approx(0.32 - 0.21)


def smoke_like_runs(root: Path) -> Path:
    """Issue 12's smoke paper: two flagship folds, every model below its all-Clean baseline (5.50%)."""
    for encoder, values in {"convnext_tiny": [0.0200, 0.0206], "mit_b3": [0.0100, 0.0114],
                            "maxvit_tiny": [0.0150, 0.0140]}.items():
        for fold, miou in zip(FOLDS[:2], values):
            write_run(root, "poc59v2_flagship", encoder, fold, miou, all_clean=0.055, epochs=3,
                      class_weights="inverse_sqrt_log_scaled")
    return root


def test_smoke_like_runs_state_no_verdict(tmp_path: Path) -> None:
    comparison = report.build_comparison(smoke_like_runs(tmp_path / "runs"))
    rq1 = comparison.table("rq1_family")
    cnn_vit = rq1.display[(rq1.display["A"] == "POC-5.9-v2 ConvNeXt-Tiny")
                          & (rq1.display["B"] == "POC-5.9-v2 SegFormer MiT-B3")].iloc[0]
    assert cnn_vit["Verdict"] == "not supported: both below the all-Clean baseline; 2 paired folds: too few"
    assert cnn_vit["Folds A, B above all-Clean"] == "0, 0 of 2"
    assert rq1.notes[0].startswith("No pair meets the verdict rules")
    written = tmp_path / "paper"
    report.write_comparison(comparison, written, tmp_path / "runs")
    for path in (written / "tables").iterdir():
        text = path.read_text()
        assert not re.search(r"\b(better|beats|best)\b", text, re.IGNORECASE), path.name


def _rules_hold(runs: pd.DataFrame, a: str, b: str) -> bool:
    """The verdict rules recomputed from the run rows, independently of report.decide."""
    def rows(label: str) -> pd.DataFrame:
        mine = runs[[report.setting_label(r) == label for _, r in runs.iterrows()]]
        return mine.set_index(["protocol", "fold"])

    runs_a, runs_b = rows(a), rows(b)
    shared = runs_a.index.intersection(runs_b.index)
    if len(shared) < 3:
        return False
    ra, rb = runs_a.loc[shared], runs_b.loc[shared]
    diff = ra["miou"].to_numpy() - rb["miou"].to_numpy()
    half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff))
    above = (ra["miou"] > ra["all_clean_miou"]).all() and (rb["miou"] > rb["all_clean_miou"]).all()
    return bool(above and (diff.mean() - half > 0 or diff.mean() + half < 0))


def test_no_table_states_a_verdict_the_rules_do_not_support(runs_root, planned, tmp_path) -> None:
    paper = tmp_path / "paper"
    comparison = report.build_comparison(runs_root, planned)
    report.write_comparison(comparison, paper, runs_root)
    runs = report.load_runs(runs_root)
    supported_rows = {}
    for table in comparison.tables:
        if "verdict" not in table.data:
            continue
        for _, row in table.data.iterrows():
            assert (row["verdict"] != "not supported") == _rules_hold(runs, row["a"], row["b"]), (table.name, row["a"])
        supported_rows[table.name] = int((table.data["verdict"] != "not supported").sum())
    # MiT-B3 above ConvNeXt and MaxViT; dice_focal below the main configuration
    assert supported_rows["rq1_family"] == 2 and supported_rows["ablation_paired"] == 1
    for path in sorted((paper / "tables").iterdir()):
        text = path.read_text()
        n = supported_rows.get(path.stem, 0)
        # a supported row says "A/B better" once (its verdict cell) and "beats" once (its statement)
        assert len(re.findall(r"\b[AB] better\b", text)) == n, path.name
        assert len(re.findall(r"\bbeats\b", text)) == n, path.name
        assert not re.search(r"\bbest\b", text, re.IGNORECASE), path.name


# -- writing ---------------------------------------------------------------------------------------


def test_write_comparison_writes_tables_figures_and_provenance(runs_root, planned, tmp_path) -> None:
    paper = tmp_path / "paper"
    comparison = report.build_comparison(runs_root, planned)
    provenance = report.write_comparison(comparison, paper, runs_root)
    for suffix in ("md", "tex", "csv"):
        assert (paper / "tables" / f"encoders_poc59v2_flagship.{suffix}").is_file()
    for name in ("per_class_iou_heatmap", "miou_vs_throughput"):
        assert_saved(comparison.figure(name), [paper / "figures" / f"{name}.{suffix}" for suffix in ("png", "pdf")])
    # the heat map shows the per-class table's numbers: the settings as columns, the classes as rows
    heatmap = comparison.figure("per_class_iou_heatmap").axes[0]
    settings = [t.get_text() for t in heatmap.get_xticklabels()]
    assert [t.get_text() for t in heatmap.get_yticklabels()] == list(taxonomy.CLASS_NAMES)
    cells = pd.DataFrame(np.ma.filled(heatmap.collections[0].get_array(), np.nan).reshape(16, len(settings)),
                         index=taxonomy.CLASS_NAMES, columns=settings)
    assert cells.loc["Peel", "POC-5.9-v2 SegFormer MiT-B3"] == pytest.approx(100 * (np.mean(FLAGSHIP["mit_b3"]) + 0.01))
    assert cells.loc["Burn marks"].isna().all()  # absent in every run: blank, labelled
    table = pd.read_csv(paper / "tables" / "per_class_iou.csv", comment="#").set_index("class")
    assert [f"{s} IoU (%)" for s in settings] == [c for c in table.columns if c.endswith("IoU (%)")]
    numbers = table[[f"{s} IoU (%)" for s in settings]].apply(pd.to_numeric, errors="coerce")
    np.testing.assert_allclose(cells.to_numpy(), numbers.to_numpy(), rtol=1e-3)  # the CSV rounds
    # one point per setting with runs at (mean training images/s, mean test mIoU in %), named by its encoder
    scatter = comparison.figure("miou_vs_throughput").axes[0]
    points = sorted((text.get_text(), round(float(bars.lines[0].get_xdata()[0]), 6),
                     round(float(bars.lines[0].get_ydata()[0]), 6))
                    for text, bars in zip(scatter.texts, scatter.containers))
    assert points == sorted([  # folds at 100, 200, 300 images/s; holdout runs at 50
        ("ConvNeXt-Tiny", 200.0, 32.0), ("SegFormer MiT-B3", 200.0, 42.333333), ("MaxViT-Tiny", 200.0, 32.166667),
        ("ConvNeXt-Tiny [dice_focal]", 200.0, 26.0), ("ConvNeXt-Tiny [res256]", 200.0, 21.0),
        ("ConvNeXt-Tiny", 50.0, 21.0), ("Swin-Tiny", 50.0, 23.0), ("ConvNeXt-Tiny", 50.0, 20.0)])
    assert (scatter.get_xlabel(), scatter.get_ylabel()) == ("training throughput (images/s)", "test mIoU (%)")
    csv = pd.read_csv(paper / "tables" / "encoders_poc59v2_flagship.csv", comment="#").set_index("encoder")
    # percent, as in the Markdown and LaTeX tables, with the unit in the header
    assert csv.loc["mit_b3", "miou_mean (%)"] == pytest.approx(100 * np.mean(FLAGSHIP["mit_b3"]))
    assert csv.loc["mit_b3", "all_clean_miou_mean (%)"] == pytest.approx(6.0)
    assert csv.loc["mit_b3", "wall_time_mean (min)"] == pytest.approx(1.0)  # 60 s per fold
    rq1 = pd.read_csv(paper / "tables" / "rq1_family.csv", comment="#")
    assert rq1.loc[0, "mean_diff (mIoU points)"] == pytest.approx(100 * rq1_diff_convnext_minus_mit())
    per_class = pd.read_csv(paper / "tables" / "per_class_iou.csv", comment="#").set_index("class")
    assert float(per_class.loc["Peel", "POC-5.9-v2 SegFormer MiT-B3 IoU (%)"]) == pytest.approx(
        100 * (np.mean(FLAGSHIP["mit_b3"]) + 0.01))
    assert per_class.loc["Burn marks", "POC-5.9-v2 SegFormer MiT-B3 IoU (%)"] == report.ABSENT
    markdown = (paper / "tables" / "encoders_poc58_baseline.md").read_text()
    assert "no run" in markdown and "`poc58_baseline/swin_tiny/holdout-holdout`" in markdown
    latex = (paper / "tables" / "encoders_poc59v2_flagship.tex").read_text()
    assert r"\begin{tabular}" in latex and r"$\pm$" in latex and "mIoU (\\%)" in latex
    recorded = fileio.read_json(paper / "provenance.json")
    assert recorded == provenance
    entry = recorded["artefacts"]["tables/encoders_poc59v2_flagship.csv"]
    assert {r["run_dir"] for r in entry["runs"]} == {f"poc59v2_flagship/{e}/kfold-{f}" for e in FLAGSHIP for f in FOLDS}
    assert all(r["config_hash"].startswith("h") for r in entry["runs"])
    assert "figures/miou_vs_throughput.pdf" in recorded["artefacts"]


def rq1_diff_convnext_minus_mit() -> float:
    return float(np.mean(np.subtract(FLAGSHIP["convnext_tiny"], FLAGSHIP["mit_b3"])))


def metadata_folder(folder: Path, ids: list[str]) -> Path:
    """A data folder holding only metadata.csv (what the banner reads), originals only."""
    from heritage.data import datafolder

    datafolder.write_metadata(folder, pd.DataFrame({
        "id": ids, "material": "Paper", "content": "Line art", "width": 32, "height": 32, "source_id": ids,
        "transform": datafolder.IDENTITY}))
    return folder


def test_the_banner_names_profile_data_weights_epochs_and_the_baseline(tmp_path: Path) -> None:
    data = metadata_folder(tmp_path / "data", ["syn0000000000000000000001", "syn0000000000000000000002"])
    digest = hashlib.sha256((data / "metadata.csv").read_bytes()).hexdigest()
    banner = report.build_comparison(smoke_like_runs(tmp_path / "runs"), data_dir=data).banner
    assert banner.data == report.SYNTHETIC and banner.data_fingerprint == digest
    assert banner.text == (
        f"Provenance: smoke profile; data: synthetic stand-in (metadata.csv sha256 {digest[:12]}); "
        "trained from scratch; 3 epochs; 0 of 6 runs beat their all-Clean baseline; "
        "thin damage against the residual filter: not recorded. "
        "Smoke profile: a pipeline check, not a measurement of the models. "
        "Synthetic stand-in: these numbers say nothing about real artworks.")
    real = metadata_folder(tmp_path / "real", ["cljmrkz5n341f07clcujw105j"])
    write_run(tmp_path / "runs", "poc58_baseline", "convnext_tiny", "holdout", 0.3, protocol="holdout",
              epochs=50, pretrained=True)
    mixed = report.make_banner(report.load_runs(tmp_path / "runs"), data_dir=real)
    assert mixed.data == report.ARTEFACT
    assert (mixed.weights, mixed.epochs) == ("1 of 7 runs ImageNet-pretrained, the rest trained from scratch", "3-50")
    assert "1 of 7 runs beat their all-Clean baseline" in mixed.text


def assert_every_artefact_carries(banner: str, comparison: report.Comparison, provenance: dict, paper: Path) -> None:
    """Every table file (md, tex, csv, html), every figure's footer and the index's banner show ``banner``."""
    tables = sorted(name for name in provenance["artefacts"] if name.startswith("tables/"))
    assert len(tables) == 4 * len(comparison.tables)  # md, tex, csv and the index page's html fragment
    for name in tables:
        text = (paper / name).read_text()
        if name.endswith(".csv"):
            assert text.splitlines()[0] == f"# {banner}", name
        elif name.endswith(".md"):
            assert f"> {banner}" in text, name
        elif name.endswith(".html"):
            assert f"<span class='banner'>{banner}</span>" in text and "<table" in text, name
        else:  # the caption holds it LaTeX-escaped (run names have underscores)
            caption = next(line for line in text.splitlines() if line.startswith(r"\caption{"))
            assert report.latex_text(banner) in caption, name
    for name, (fig, _, _) in comparison.figures.items():
        assert report.footer_text(fig) == banner, name
        assert sum(t.get_gid() == "provenance-footer" for t in fig.texts) == 1  # written once, not per save
    assert "provenance-footer" not in report.banner_html(paper) and banner in report.banner_html(paper)


def test_every_table_and_figure_written_carries_the_banner(runs_root, planned, tmp_path) -> None:
    data = metadata_folder(tmp_path / "data", ["syn0000000000000000000001"])
    paper = tmp_path / "paper"
    comparison = report.build_comparison(runs_root, planned, data_dir=data, profile="smoke")
    provenance = report.write_comparison(comparison, paper, runs_root)
    banner = comparison.banner.text
    assert banner.startswith("Provenance: smoke profile; data: synthetic stand-in (metadata.csv sha256 ")
    assert "trained from scratch; 6 epochs; 18 of 18 runs beat their all-Clean baseline;" in banner
    assert provenance["banner"]["text"] == banner and provenance["banner"]["profile"] == "smoke"
    assert_every_artefact_carries(banner, comparison, provenance, paper)
    assert report.banner_html(tmp_path / "nowhere") == ""
    assert comparison.banner.stale_runs == () and "predate" not in banner


def test_runs_kept_from_older_code_are_named_in_every_table_figure_and_the_index(runs_root, planned, tmp_path) -> None:
    older = [write_run(runs_root, "poc58_baseline", "swin_tiny", "holdout", 0.23, protocol="holdout",
                       code_hash="0123456789abcdef"),
             write_run(runs_root, "poc59v2_flagship", "mit_b3", "fold1", FLAGSHIP["mit_b3"][1],
                       class_weights="inverse_sqrt_log_scaled", code_hash="0123456789abcdef")]
    paper = tmp_path / "paper"
    comparison = report.build_comparison(runs_root, planned, profile="smoke")
    provenance = report.write_comparison(comparison, paper, runs_root)
    names = sorted(folder.relative_to(runs_root).as_posix() for folder in older)
    assert sorted(comparison.banner.stale_runs) == names == sorted(provenance["banner"]["stale_runs"])
    banner = comparison.banner.text
    assert (f"2 of 18 runs predate the current code (code hash {current_code_hash()}) and were kept, not retrained: "
            f"{', '.join(comparison.banner.stale_runs)}.") in banner
    assert_every_artefact_carries(banner, comparison, provenance, paper)
    assert (f"This run (poc58_baseline/swin_tiny/holdout-holdout) predates the current code (code hash "
            f"{current_code_hash()}): kept, not retrained." in report.run_banner(older[0]).text)  # predict, gallery
    assert "predates" not in report.run_banner(runs_root / "poc58_baseline" / "convnext_tiny" / "holdout-holdout").text
    many = report.Banner("full", "ARTeFACT", None, "ImageNet-pretrained encoders", "50", 9, 9, 9, code_hash="c0de",
                         stale_runs=tuple(f"run{i}" for i in range(9)))
    assert "All 9 runs predate the current code (code hash c0de) and were kept, not retrained: run0, run1, run2, " \
           "run3, run4, run5 and 3 more (provenance.json lists them)." in many.text


def test_latex_tables_are_ascii_right_aligned_and_escaped(runs_root, planned) -> None:
    comparison = report.build_comparison(runs_root, planned)
    for table in comparison.tables:
        latex = table.to_latex()
        assert latex.isascii(), table.name
        assert r"\toprule" in latex and "booktabs" in latex.splitlines()[0]
    rq1 = comparison.table("rq1_family").to_latex()
    # A, B, Paired folds, A - B, 95% CI, folds above all-Clean, the artwork bootstrap's two (here: why there is
    # none, wrapped), also differs, verdict (long: wrapped)
    assert r"\begin{tabular}{llrrrlp{12em}p{12em}lp{12em}}" in rq1  # the verdict column wraps
    assert r"A $-$ B (mIoU pts)" in rq1 and r"95\% CI" in rq1 and "$-$" + f"{-100 * rq1_diff_convnext_minus_mit():.2f}" in rq1
    assert "\u2212" not in rq1
    flagship = comparison.table("encoders_poc59v2_flagship").to_latex()
    # Encoder, Family, Protocol; then Size, Folds, mIoU, All-Clean, the thin-damage IoU and the filter's (markers
    # only: "not recorded"), img/s x2, time, memory, params
    assert r"\begin{tabular}{lllrrrrllrrrrr}" in flagship and r"$\pm$" in flagship
    assert report.latex_text("a_b & 50% <x> #1 ~ -0.5 POC-5.9") == (
        r"a\_b \& 50\% \textless{}x\textgreater{} \#1 \textasciitilde{} $-$0.5 POC-5.9")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_tables_compile(runs_root, planned, tmp_path) -> None:
    paper = tmp_path / "paper"
    comparison = report.build_comparison(runs_root, planned, profile="smoke")
    report.write_comparison(comparison, paper, runs_root)
    # smoke-like runs leave RQ2 and RQ3 without a pair: a table with a header and no rows
    smoke = report.build_comparison(smoke_like_runs(tmp_path / "smoke_runs"))
    assert smoke.table("rq2_multitask").display.empty
    for table in smoke.tables:
        fileio.write_text(paper / "tables" / f"smoke_{table.name}.tex", table.to_latex())
    names = [t.name for t in comparison.tables] + [f"smoke_{t.name}" for t in smoke.tables]
    inputs = "\n".join(f"\\input{{tables/{name}.tex}}\\clearpage" for name in names)
    (paper / "main.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
                                    f"\\begin{{document}}\n{inputs}\n\\end{{document}}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main.tex"], cwd=paper,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (paper / "main.pdf").stat().st_size > 1000
    log = (paper / "main.log").read_text(errors="replace")
    assert "Overfull \\hbox" not in log  # every table fits the text width


def test_planned_runs_from_the_real_plan(data_dir: Path) -> None:
    from heritage import config

    planned = report.planned_runs(config.plan("smoke", ["poc58_baseline"], data_dir))
    assert planned[["poc", "variant", "encoder", "protocol", "fold"]].values.tolist() == [
        ["poc58_baseline", "", "convnext_tiny", "holdout", "holdout"]]
    assert planned["family"].tolist() == ["CNN"]


# -- one run and the data ----------------------------------------------------------------------------


def assert_saved(fig, paths: list[Path]) -> None:
    """save_figure wrote ``fig`` as a one-page PDF and a PNG of the same page at 150 dpi: the figure's size, or
    with a provenance footer the tight box around figure and footer."""
    from PIL import Image

    png, pdf = paths
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page(?!s)", data)) == 1
    [box] = re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", data)  # in points, 72 per inch
    page = np.array([float(v) for v in box]) / 72
    if report.footer_text(fig) is None:
        np.testing.assert_allclose(page, [fig.get_figwidth(), fig.get_figheight()])
    with Image.open(png) as image:
        np.testing.assert_allclose(image.size, page * 150, atol=1.5)


def test_run_panels_from_a_run_folder(runs_root: Path, tmp_path: Path) -> None:
    metrics = report.load_metrics(runs_root / "poc55_multitask/convnext_tiny/holdout-holdout/metrics.json")
    results = report.results_table(metrics).set_index("quantity")["value"]
    assert results["test mIoU (%)"] == "20.00" and results["test binary mIoU (%)"] == "60.00"
    assert results["test mIoU of predicting Clean everywhere (%)"] == "6.00"
    history = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.8], "lr": [1e-3, 1e-4], "val_miou": [0.1, 0.2],
                            "val_binary_miou": [0.5, 0.6], "images_per_s": [10.0, 11.0]})
    curves = report.plot_history(history)
    plotted = [[(line.get_label(), line.get_xdata().tolist(), line.get_ydata().tolist()) for line in ax.lines]
               for ax in curves.axes]
    assert plotted == [[("_child0", [1, 2], [1.0, 0.8])],
                       [("fine", [1, 2], [10.0, 20.0]), ("binary", [1, 2], [50.0, 60.0])],  # percent
                       [("_child0", [1, 2], [1e-3, 1e-4])],
                       [("_child0", [1, 2], [10.0, 11.0])]]
    assert [ax.get_title() for ax in curves.axes] == ["training loss", "validation mIoU (%)",
                                                      "learning rate (end of epoch)", "training images/s"]
    assert {ax.get_xlabel() for ax in curves.axes} == {"epoch"}

    bars = report.plot_per_class_iou(metrics)
    ax = bars.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(taxonomy.CLASS_NAMES)
    # write_run: IoU 0.20 + 0.01 (i % 3) - 0.01 for class i, Burn marks absent (no bar, labelled)
    widths = [bar.get_width() for bar in ax.patches]
    expected = [0.0 if name == "Burn marks" else 100 * (0.19 + 0.01 * (i % 3))
                for i, name in enumerate(taxonomy.CLASS_NAMES)]
    np.testing.assert_allclose(widths, expected)
    np.testing.assert_allclose([bar.get_facecolor()[:3] for bar in ax.patches], np.asarray(taxonomy.PALETTE) / 255)
    assert [t.get_text() for t in ax.texts][13:16] == ["20.0", report.ABSENT, "19.0"]  # Puncture, Burn marks, Lightleak
    assert ax.get_xlabel() == "test IoU (%)" and "mIoU 20.00%" in ax.get_title()

    matrix = np.zeros((taxonomy.NUM_CLASSES, taxonomy.NUM_CLASSES))
    matrix[0, :2] = [900, 100]  # Clean: 90 % recall, 10 % called Material loss
    matrix[1, :2] = [50, 150]  # Material loss: 25 % called Clean, 75 % recall
    matrix[3, 3] = 1  # Dust, one pixel, all right; every other class has no test pixel
    heatmap = report.plot_confusion(matrix)
    ax = heatmap.axes[0]
    shown = np.ma.filled(ax.collections[0].get_array(), np.nan).reshape(matrix.shape)
    expected = np.full(matrix.shape, np.nan)
    expected[0, :] = expected[1, :] = expected[3, :] = 0.0
    expected[0, :2], expected[1, :2], expected[3, 3] = [90, 10], [25, 75], 100
    np.testing.assert_allclose(shown, expected)  # rows without pixels blank (NaN)
    assert [t.get_text() for t in ax.get_yticklabels()][:4] == [
        "Clean (1000 px)", "Material loss (200 px)", "Peel (0 px)", "Dust (1 px)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(taxonomy.CLASS_NAMES)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class (its test pixels)")
    annotations = [t.get_text() for t in ax.texts if t.get_text()]
    assert sorted(annotations) == sorted(["90", "10", "25", "75", "100"])
    for fig in (curves, bars, heatmap):
        assert_saved(fig, report.save_figure(fig, tmp_path / "fig"))
    del metrics["test"]["confusion_matrix"]
    assert report.confusion_matrix(metrics) is None


def test_overlay_paints_damage_only() -> None:
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 1], [255, 0]], dtype=np.uint8)
    painted = report.overlay(image, mask, alpha=1.0, outline=0)
    assert painted[0, 1].tolist() == list(taxonomy.PALETTE[1])
    assert painted[0, 0].tolist() == [100, 100, 100] and painted[1, 0].tolist() == [100, 100, 100]


def test_dataset_views(data_dir: Path, tmp_path: Path) -> None:
    from heritage.data import datafolder, stats

    dataset = stats.dataset_stats(data_dir)
    metadata = datafolder.read_metadata(data_dir)
    ids = metadata.loc[metadata["transform"] == datafolder.IDENTITY, "id"].tolist()[:2]
    shares = report.class_share_table(dataset)
    assert shares["share_here"].sum() == pytest.approx(1.0)
    assert shares["share_artefact"].sum() == pytest.approx(1.0)
    balance = report.split_balance(data_dir, "kfold")
    assert set(balance.index.get_level_values("part")) == {"train", "val", "test"}
    assert (balance["total"] == balance.drop(columns="total").sum(axis=1)).all()
    shares_fig = report.plot_class_shares(shares)
    ax = shares_fig.axes[0]
    heights = np.array([bar.get_height() for bar in ax.patches]).reshape(2, -1)  # this folder's bars, then ARTeFACT's
    np.testing.assert_allclose(heights, 100 * shares[["share_here", "share_artefact"]].to_numpy().T)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(taxonomy.CLASS_NAMES)
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "% of labelled pixels (log)"

    grid_fig = report.plot_material_content(dataset)
    ax = grid_fig.axes[0]
    counts = metadata[metadata["transform"] == datafolder.IDENTITY].groupby(["material", "content"]).size()
    rows = [t.get_text() for t in ax.get_yticklabels()]
    columns = [t.get_text() for t in ax.get_xticklabels()]
    shown = np.asarray(ax.collections[0].get_array()).reshape(len(rows), len(columns))
    assert shown.sum() == counts.sum() == dataset["total_samples"]  # every original image once
    assert {(r, c): int(shown[i, j]) for i, r in enumerate(rows) for j, c in enumerate(columns) if shown[i, j]} == {
        key: int(n) for key, n in counts.items()}

    examples_fig = report.plot_examples(data_dir, ids)
    for row, sample_id in zip(np.reshape(examples_fig.axes, (len(ids), 3)), ids):
        image = fileio.read_rgb(datafolder.image_path(data_dir, sample_id))
        mask = fileio.read_mask(datafolder.annotation_path(data_dir, sample_id))
        for ax, picture in zip(row, (image, overlays.overlay(image, mask), taxonomy.mask_to_rgb(mask))):
            np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), picture)
        assert [ax.get_title() for ax in row] == [sample_id, "damage overlay", "mask (Clean black)"]
    present = set().union(*(np.unique(fileio.read_mask(datafolder.annotation_path(data_dir, i))).tolist() for i in ids))
    assert [t.get_text() for t in examples_fig.legends[0].get_texts()] == [
        item.label for item in overlays.legend_items(present)]

    balance_fig = report.plot_split_balance(balance, "kfold")
    ax = balance_fig.axes[0]
    expected = balance.drop(columns="total").div(balance["total"], axis=0) * 100
    heights = np.array([bar.get_height() for bar in ax.patches]).reshape(expected.shape[1], expected.shape[0])
    np.testing.assert_allclose(heights.T, expected.to_numpy())  # one stack of bars per material
    np.testing.assert_allclose(heights.sum(axis=0), 100)  # each (fold, part) is all its images
    assert [t.get_text() for t in balance_fig.legends[0].get_texts()] == list(expected.columns)
    for fig in (shares_fig, grid_fig, examples_fig, balance_fig):
        assert_saved(fig, report.save_figure(fig, tmp_path / "fig"))


def test_a_plan_without_runs_gives_tables_of_no_run(tmp_path: Path, planned: pd.DataFrame) -> None:
    comparison = report.build_comparison(tmp_path / "no_runs_yet", planned)
    flagship = comparison.table("encoders_poc59v2_flagship").display
    assert (flagship["mIoU (%)"] == report.NO_RUN).all() and (flagship["Folds"] == "0/3").all()
    assert (comparison.table("per_class_iou").data.drop(columns="class") == report.NO_RUN).all().all()
    assert comparison.table("rq1_family").notes == ["- No pair of settings with runs for this question."]
    with pytest.raises(ValueError, match="no finished run"):
        report.build_comparison(tmp_path / "no_runs_yet")


def test_the_throughput_axis_is_logarithmic_only_over_a_decade(runs_root, planned, tmp_path) -> None:
    comparison = report.build_comparison(runs_root, planned)  # 50 to 300 img/s: less than a decade
    assert comparison.figure("miou_vs_throughput").axes[0].get_xscale() == "linear"
    write_run(tmp_path / "runs", "poc58_baseline", "convnext_tiny", "holdout", 0.2, protocol="holdout")
    fast = write_run(tmp_path / "runs", "poc58_baseline", "swin_tiny", "holdout", 0.3, protocol="holdout")
    metrics = fileio.read_json(fast / "metrics.json")
    metrics["throughput"]["train_images_per_s"] = 5000.0
    fileio.write_json(fast / "metrics.json", metrics)
    wide = report.build_comparison(tmp_path / "runs")
    assert wide.figure("miou_vs_throughput").axes[0].get_xscale() == "log"


# -- per-image scores and the artwork bootstrap (issue 12 item 2) ----------------------------------


def write_per_image(folder: Path, hits: list[int]) -> pd.DataFrame:
    """A ``per_image.csv`` of one test image per entry of ``hits`` (Clean always right, ``hit`` of 100 Peel
    pixels right), ids and sources unique to the fold."""
    from heritage.training import runs

    confusions = np.zeros((len(hits), taxonomy.NUM_CLASSES, taxonomy.NUM_CLASSES), dtype=np.int64)
    for i, hit in enumerate(hits):
        confusions[i, 0, 0], confusions[i, 2, 2], confusions[i, 2, 0] = 300, hit, 100 - hit
    ids = [f"{folder.name}-{i}" for i in range(len(hits))]
    table = runs.per_image_table(ids, ids, confusions)
    runs.write_per_image(folder, table)
    return table


@pytest.fixture
def per_image_root(runs_root: Path) -> Path:
    """runs_root with per_image.csv in the flagship ConvNeXt and MiT-B3 runs (4 test images per fold)."""
    for encoder, base in (("convnext_tiny", 30), ("mit_b3", 60)):
        for k, fold in enumerate(FOLDS):
            write_per_image(runs_root / "poc59v2_flagship" / encoder / f"kfold-{fold}",
                            [base + 5 * k + j for j in range(4)])
    return runs_root


def test_comparison_tables_show_the_artwork_bootstrap_beside_the_fold_interval(per_image_root, planned) -> None:
    from heritage.report import resampling
    from heritage.training import runs

    comparison = report.build_comparison(per_image_root, planned)
    rq1 = table_named(comparison, "rq1_family")
    row = rq1.data[(rq1.data["a"] == "POC-5.9-v2 ConvNeXt-Tiny") & (rq1.data["b"] == "POC-5.9-v2 SegFormer MiT-B3")].iloc[0]
    tables = {e: pd.concat([runs.read_per_image(per_image_root / "poc59v2_flagship" / e / f"kfold-{f}") for f in FOLDS])
              for e in ("convnext_tiny", "mit_b3")}
    expected = resampling.bootstrap_difference(tables["convnext_tiny"], tables["mit_b3"])
    assert (row["artwork_n_sources"], row["artwork_n_images"]) == (12, 12)
    assert row["artwork_dataset_diff"] == expected["dataset_miou"].mean < 0
    assert (row["artwork_per_image_ci_low"], row["artwork_per_image_ci_high"]) == (
        expected["per_image_miou"].ci_low, expected["per_image_miou"].ci_high)
    assert row["verdict"] == "B better"  # still the fold-level rules'
    shown = rq1.display.set_index(["A", "B"]).loc[("POC-5.9-v2 ConvNeXt-Tiny", "POC-5.9-v2 SegFormer MiT-B3")]
    dataset = expected["dataset_miou"]
    assert shown["Artwork bootstrap, dataset-level A − B [95% CI]"] == (
        f"{100 * dataset.mean:.2f} [{100 * dataset.ci_low:.2f}, {100 * dataset.ci_high:.2f}], 12 artworks")
    assert "95% CI" in rq1.display.columns  # the fold-level interval stays
    # MaxViT has no per_image.csv: its row says so instead of a number
    hybrid = rq1.data[rq1.data["b"] == "POC-5.9-v2 MaxViT-Tiny"].iloc[0]
    assert hybrid["artwork_note"] == "no per_image.csv for 3 of 3 runs of B" and math.isnan(hybrid["artwork_n_sources"])
    assert any("Artwork bootstrap" in note and "the verdict uses the folds only" in note for note in rq1.notes)


def test_a_pair_scored_on_different_images_is_refused_naming_it(per_image_root, planned) -> None:
    write_per_image(per_image_root / "poc59v2_flagship" / "mit_b3" / "kfold-fold1", [70, 71, 72])  # one image fewer
    with pytest.raises(errors.InputError, match=r"ConvNeXt-Tiny vs POC-5.9-v2 SegFormer MiT-B3: settings A and B "
                                                r"are not scored on the same test images: 1 only in A"):
        report.build_comparison(per_image_root, planned)


def test_the_per_image_figure_shows_every_image_and_the_headline(per_image_root, planned, tmp_path) -> None:
    comparison = report.build_comparison(per_image_root, planned)
    images = report.per_image_images(comparison.runs, comparison.summary)
    assert len(images) == 24 and set(images["setting"]) == {"POC-5.9-v2 ConvNeXt-Tiny", "POC-5.9-v2 SegFormer MiT-B3"}
    ax = comparison.figure("per_image_miou").axes[0]
    points = sum(len(c.get_offsets()) for c in ax.collections if len(c.get_offsets()) and c.get_label() != (
        "dataset-level mIoU (mean over folds)"))
    assert points == 24  # one raw point per image (the box plot draws no outlier markers)
    assert "per-image" in ax.get_xlabel() and any("dataset-level" in t.get_text() for t in ax.get_legend().get_texts())
    paper = tmp_path / "paper"
    provenance = report.write_comparison(comparison, paper, per_image_root)
    assert (paper / "figures" / "per_image_miou.pdf").stat().st_size > 1000
    assert provenance["artefacts"]["figures/per_image_miou.png"]["caption"] == report.PER_IMAGE_CAPTION
    assert report.footer_text(comparison.figure("per_image_miou")) == comparison.banner.text


def test_the_same_runs_give_the_same_figure_files(per_image_root, planned, tmp_path) -> None:
    # the strip plot's jitter is random and a PDF is dated unless told otherwise: a rebuilt paper must not differ
    comparison = report.build_comparison(per_image_root, planned)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    written = [report.save_figure(report.per_image_plot(comparison.runs, comparison.summary), tmp_path / name)
               for name in ("first", "second")]
    for first, second in zip(*written):
        assert first.read_bytes() == second.read_bytes(), second.name
    assert (np.random.get_state()[1] == before).all()  # the figure's seed stayed inside it


def test_the_runs_carry_the_per_image_miou_beside_the_dataset_level_one(runs_root, planned) -> None:
    folder = runs_root / "poc58_baseline" / "convnext_tiny" / "holdout-holdout"
    metrics = fileio.read_json(folder / "metrics.json")
    metrics["test"]["per_image_miou"] = 0.18
    fileio.write_json(folder / "metrics.json", metrics)
    runs = report.load_runs(runs_root).set_index("run_dir")
    assert runs.loc["poc58_baseline/convnext_tiny/holdout-holdout", "per_image_miou"] == 0.18
    assert math.isnan(runs.loc["poc58_baseline/swin_tiny/holdout-holdout", "per_image_miou"])  # not recorded
    summary = report.summarise(runs.reset_index(), planned)
    baseline = summary[summary["poc"] == "poc58_baseline"].set_index("encoder")
    assert baseline.loc["convnext_tiny", "per_image_miou_mean"] == 0.18


# -- the seeds' protocol beside ours (issue 12) ------------------------------------------------------


def with_seeds_metric(folder: Path, miou: float, all_clean: float) -> None:
    """Add the test.seeds_convention record train writes to a fabricated run."""
    metrics = fileio.read_json(folder / "metrics.json")
    metrics["test"]["seeds_convention"] = {"miou": miou, "all_clean_miou": all_clean, "n_images": 4}
    fileio.write_json(folder / "metrics.json", metrics)


def test_the_seeds_protocol_table_measures_the_inflation(runs_root, planned) -> None:
    for encoder, values in FLAGSHIP.items():
        for fold, miou in zip(FOLDS, values):
            with_seeds_metric(runs_root / "poc59v2_flagship" / encoder / f"kfold-{fold}", miou / 2, 0.05)
    leaky = {"convnext_tiny": 0.52, "mit_b3": 0.61}  # maxvit_tiny's leaky run has not run
    for encoder, miou in leaky.items():
        folder = write_run(runs_root, "poc59v2_flagship", encoder, "leaky", miou - 0.1, variant="seeds_protocol",
                           protocol="leaky", class_weights="inverse_sqrt_log_scaled")
        with_seeds_metric(folder, miou, 0.04)
    planned = pd.concat([planned, pd.DataFrame([
        plan_row("poc59v2_flagship", e, "leaky", variant="seeds_protocol", protocol="leaky",
                 class_weights="inverse_sqrt_log_scaled") for e in FLAGSHIP])], ignore_index=True)
    comparison = report.build_comparison(runs_root, planned)
    table = comparison.table("seeds_protocol")
    data = table.data.set_index("encoder")
    assert list(data.index) == list(FLAGSHIP)
    assert data.at["mit_b3", "seeds_reported_miou"] == report.SEEDS_REPORTED["mit_b3"][0]
    assert data.at["mit_b3", "seeds_protocol_miou"] == pytest.approx(0.61)  # the leaky run's seeds' metric
    assert data.at["mit_b3", "seeds_protocol_all_clean_miou"] == pytest.approx(0.04)
    assert data.at["mit_b3", "ours_miou_mean"] == pytest.approx(np.mean(FLAGSHIP["mit_b3"]))  # kfold, ours
    assert data.at["mit_b3", "ours_seeds_metric_miou_mean"] == pytest.approx(np.mean(FLAGSHIP["mit_b3"]) / 2)
    assert data.at["mit_b3", "inflation"] == pytest.approx(0.61 - np.mean(FLAGSHIP["mit_b3"]))
    assert data.at["maxvit_tiny", "seeds_protocol_miou"] == report.NO_RUN
    display = table.display.set_index("Encoder")
    assert display.at["SegFormer MiT-B3", "Inflation measured here (pts)"] == f"{100 * (0.61 - np.mean(FLAGSHIP['mit_b3'])):.2f}"
    assert display.at["MaxViT-Tiny", "Here, seeds' protocol (leaky): mIoU (%)"] == report.NO_RUN
    assert display.at["ConvNeXt-Tiny", "Seeds reported img/s (V100)"] == "122.6"
    assert "not comparable to the seeds' full runs" in table.caption and table.banner == comparison.banner.text
    assert "the seeds' document" in table.caption
    runs = {r["run_dir"] for r in table.runs}
    assert "poc59v2_flagship-seeds_protocol/mit_b3/leaky-leaky" in runs and "poc59v2_flagship/mit_b3/kfold-fold0" in runs
    # the leaky runs are no loss variant, and wherever a setting is named they say they are leaky
    assert "seeds_protocol" not in set(comparison.table("loss_ablation_poc59v2_flagship").data["variant"])
    leaky_row = comparison.summary[comparison.summary["variant"] == "seeds_protocol"].iloc[0]
    assert report.setting_label(leaky_row).endswith("[seeds_protocol] (leaky split)")


def test_the_seeds_protocol_caption_says_nothing_of_smoke_for_a_full_comparison(runs_root, planned) -> None:
    summary = report.summarise(report.load_runs(runs_root), planned)
    assert "smoke" not in report.seeds_protocol_table(summary, "full").caption
    assert "smoke profile" in report.seeds_protocol_table(summary, "smoke").caption



def test_a_leaky_run_report_says_it_is_leaky_and_shows_the_seeds_metric() -> None:
    test = {"miou": 0.4, "all_clean_miou": 0.05, "seeds_convention": {"miou": 0.2, "all_clean_miou": 0.03}}
    honest = report.run_headline({"protocol": "kfold", "test": test})
    assert "Under the seeds' metric" in honest and "20.00% (all-Clean 3.00%)" in honest and "Leaky" not in honest
    assert "**Leaky split (the seeds' protocol)" in report.run_headline({"protocol": "leaky", "test": test})
    assert "seeds' metric" not in report.run_headline({"protocol": "kfold", "test": {"miou": 0.4}})

# -- RQ4: letterbox vs patch at the same training budget (issue 11 item 4) ---------------------------

# ConvNeXt-T test mIoU per fold: the patch arm is 0.06-0.07 above the letterbox main configuration.
RQ4_LETTERBOX, RQ4_PATCH = [0.30, 0.32, 0.34], [0.36, 0.39, 0.40]
# Thin-class IoU per fold: Dust, Scratch and Cracks learnt only in patch mode; Hair absent from fold2's test part.
RQ4_THIN = {"letterbox": {"Dust": [0.00, 0.01, 0.00], "Scratch": [0.01, 0.00, 0.02], "Hair": [0.00, 0.00, None],
                          "Cracks": [0.00, 0.02, 0.01]},
            "patch": {"Dust": [0.10, 0.12, 0.11], "Scratch": [0.08, 0.09, 0.11], "Hair": [0.05, 0.07, None],
                      "Cracks": [0.20, 0.18, 0.22]}}


def write_rq4_run(root: Path, fold: str, miou: float, mode: str, *, epochs: int = 6,
                  max_train_samples: int | None | str = 32, all_clean: float = 0.06) -> Path:
    """A flagship ConvNeXt-T run in letterbox (main) or patch (variant) mode, with the thin classes'
    IoU of RQ4_THIN and ``max_train_samples`` in its config.yaml ("unrecorded": left out of it)."""
    folder = write_run(root, "poc59v2_flagship", "convnext_tiny", fold, miou, epochs=epochs, all_clean=all_clean,
                       variant=None if mode == "letterbox" else "patch", class_weights="inverse_sqrt_log_scaled")
    metrics = fileio.read_json(folder / "metrics.json")
    metrics.update(sampling=mode, working_resolution="native")
    for name, values in RQ4_THIN[mode].items():
        iou = values[FOLDS.index(fold)]
        metrics["test"]["per_class"][name].update(iou=iou, present=iou is not None)
    fileio.write_json(folder / "metrics.json", metrics)
    if max_train_samples != "unrecorded":
        recorded = "null" if max_train_samples is None else max_train_samples
        with (folder / "config.yaml").open("a") as config:
            config.write(f"max_train_samples: {recorded}\n")
    return folder


def rq4_runs(root: Path, *, patch_epochs: int = 6, patch_clean: tuple[float, ...] = (0.06, 0.06, 0.06),
             patch_samples: int | None | str = 32) -> Path:
    for k, fold in enumerate(FOLDS):
        write_rq4_run(root, fold, RQ4_LETTERBOX[k], "letterbox")
        write_rq4_run(root, fold, RQ4_PATCH[k], "patch", epochs=patch_epochs, all_clean=patch_clean[k],
                      max_train_samples=patch_samples)
    return root


LETTERBOX_LABEL, PATCH_LABEL = "POC-5.9-v2 ConvNeXt-Tiny", "POC-5.9-v2 ConvNeXt-Tiny [patch]"


def test_rq4_pairs_the_patch_arm_with_its_letterbox_main_configuration(tmp_path) -> None:
    root = rq4_runs(tmp_path / "runs")
    write_run(root, "poc59v2_flagship", "convnext_tiny", "fold0", 0.2, variant="dice_focal", loss="dice_focal")
    summary = report.summarise(report.load_runs(root))
    [(a, b)] = report.rq4_pairs(summary)  # the loss variant is no patch arm
    assert (summary.at[a, "variant"], summary.at[a, "sampling"]) == ("patch", "patch")
    assert (summary.at[b, "variant"], summary.at[b, "sampling"]) == ("", "letterbox")
    assert report.load_runs(root)["max_train_samples"].dropna().unique().tolist() == [32]


def test_rq6_pairs_the_thin_recipe_with_the_main_configuration_and_rq4_leaves_it_out(tmp_path) -> None:
    root = rq4_runs(tmp_path / "runs")
    for fold in FOLDS:  # the thin recipe: a patch arm of its own with another loss, the patch arm's scores
        thin = root / f"poc59v2_flagship-{design.THIN_VARIANT}" / "convnext_tiny" / f"kfold-{fold}"
        shutil.copytree(root / "poc59v2_flagship-patch" / "convnext_tiny" / f"kfold-{fold}", thin)
        metrics = fileio.read_json(thin / "metrics.json")
        metrics.update(variant=design.THIN_VARIANT, loss="dice_focal",
                       config_hash=fake_hash("thin", fold))
        fileio.write_json(thin / "metrics.json", metrics)
    summary = report.summarise(report.load_runs(root))
    [(a, b)] = report.rq4_pairs(summary)
    assert summary.at[a, "variant"] == "patch" and summary.at[b, "variant"] == ""
    [(a, b)] = report.rq6_pairs(summary)
    assert summary.at[a, "variant"] == design.THIN_VARIANT and summary.at[b, "variant"] == ""
    comparison = report.build_comparison(root)
    [row] = comparison.table("rq6_thin").data.to_dict("records")
    assert row["verdict"] == "A better" and row["budget"] == "same: 64 px, batch 8, 6 epochs, 32 training samples"
    dust = comparison.table("rq6_per_class").data.set_index("class").loc["Dust"]
    assert (dust["iou_thin"], dust["iou_main"]) == pytest.approx((np.mean(RQ4_THIN["patch"]["Dust"]),
                                                                 np.mean(RQ4_THIN["letterbox"]["Dust"])))
    assert "rq6_per_class_differences" in comparison.figures


def test_rq4_compares_the_arms_by_the_verdict_rules_and_states_their_budget(tmp_path) -> None:
    comparison = report.build_comparison(rq4_runs(tmp_path / "runs"))
    table = comparison.table("rq4_sampling")
    [row] = table.data.to_dict("records")
    assert (row["a"], row["b"], row["factor_a"], row["factor_b"]) == (PATCH_LABEL, LETTERBOX_LABEL, "patch", "letterbox")
    expected = stats.ttest_rel(RQ4_PATCH, RQ4_LETTERBOX).confidence_interval(0.95)
    assert row["n_pairs"] == 3 and row["mean_diff"] == pytest.approx(np.mean(np.subtract(RQ4_PATCH, RQ4_LETTERBOX)))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((expected.low, expected.high))
    assert row["verdict"] == "A better" and row["also_differs"] == ""
    assert row["budget"] == "same: 64 px, batch 8, 6 epochs, 32 training samples"
    assert table.display.iloc[0]["Budget (both arms)"] == row["budget"]
    rq4 = next(f for f in report.findings(comparison.tables) if f["table"] == "rq4_sampling")
    assert rq4["verdict"] == "supported" and f"{PATCH_LABEL} beats {LETTERBOX_LABEL} by 6.33" in rq4["reason"]


def test_rq4_per_class_table_pairs_each_class_over_the_folds_that_hold_it(tmp_path) -> None:
    comparison = report.build_comparison(rq4_runs(tmp_path / "runs"))
    table = comparison.table("rq4_per_class")
    data = table.data.set_index("class")
    assert list(data.index) == [*taxonomy.CLASS_NAMES, report.THIN_MEAN, report.THIN_DAMAGE]
    assert data["thin"][data["thin"]].index.tolist() == [*taxonomy.THIN_CLASSES, report.THIN_MEAN, report.THIN_DAMAGE]
    assert data.loc[report.THIN_DAMAGE, "iou_patch"] == report.NOT_RECORDED  # runs without test.thin
    dust = data.loc["Dust"]
    patch, letterbox = RQ4_THIN["patch"]["Dust"], RQ4_THIN["letterbox"]["Dust"]
    assert (dust["iou_patch"], dust["iou_letterbox"]) == pytest.approx((np.mean(patch), np.mean(letterbox)))
    expected = stats.ttest_rel(patch, letterbox).confidence_interval(0.95)
    assert (dust["ci_low"], dust["ci_high"]) == pytest.approx((expected.low, expected.high))
    assert dust["n_pairs"] == 3 and dust["verdict"] == "A better"
    # Hair is in the test parts of two folds only: paired over those, too few for a verdict
    hair = data.loc["Hair"]
    assert hair["n_pairs"] == 2 and hair["iou_patch"] == pytest.approx(0.06)
    # differences 0.05, 0.07: t(0.975, 1) = 12.7 makes the interval [-0.067, +0.187]
    assert hair["verdict"] == "not supported" and hair["reason"] == "2 paired folds: too few; interval includes 0"
    # Burn marks is in no test part: absent, no difference
    assert data.loc["Burn marks", "iou_patch"] == report.ABSENT and data.loc["Burn marks", "n_pairs"] == 0
    # the thin classes' mean per fold (Hair left out of fold2), then paired
    def thin_mean(mode: str) -> list[float]:
        return [np.mean([v[k] for v in RQ4_THIN[mode].values() if v[k] is not None]) for k in range(3)]
    mean = data.loc[report.THIN_MEAN]
    assert mean["mean_diff"] == pytest.approx(np.mean(np.subtract(thin_mean("patch"), thin_mean("letterbox"))))
    assert mean["verdict"] == "A better"
    shown = table.display.set_index("Class")
    assert shown.loc["Dust", "Thin"] == "thin" and shown.loc["Peel", "Thin"] == ""
    assert shown.loc["Dust", "Patch IoU (%)"] == "11.00" and shown.loc["Dust", "Letterbox IoU (%)"] == "0.33"
    assert shown.loc["Burn marks", "Verdict"] == "not supported: 0 paired folds: too few"
    assert len(table.runs) == 6 and table.to_latex().isascii()


def test_rq4_per_class_verdicts_need_both_runs_above_their_all_clean_baseline(tmp_path) -> None:
    # the patch run of fold1 is not above its all-Clean mIoU: its thin-class gains count for nothing
    comparison = report.build_comparison(rq4_runs(tmp_path / "runs", patch_clean=(0.06, 0.45, 0.06)))
    dust = comparison.table("rq4_per_class").data.set_index("class").loc["Dust"]
    assert dust["ci_low"] > 0  # the interval alone would allow a verdict
    assert dust["verdict"] == "not supported"
    assert dust["reason"] == "A below the all-Clean baseline on 1 of 3 paired folds"
    assert comparison.table("rq4_sampling").data.iloc[0]["reason"] == (
        "A below the all-Clean baseline on 1 of 3 paired folds")


@pytest.mark.parametrize(("change", "reason"), [
    ({"patch_epochs": 12}, "training budget differs: epochs 12 vs 6"),
    ({"patch_samples": None}, "training budget differs: max_train_samples all vs 32"),
    ({"patch_samples": "unrecorded"}, "training budget not recorded (max_train_samples of A)"),
])
def test_rq4_arms_with_different_budgets_are_not_compared(tmp_path, change, reason) -> None:
    comparison = report.build_comparison(rq4_runs(tmp_path / "runs", **change))
    table = comparison.table("rq4_sampling")
    [row] = table.data.to_dict("records")
    assert row["verdict"] == "not supported" and row["reason"] == reason and row["budget"] == reason
    assert row["n_pairs"] == 0 and math.isnan(row["mean_diff"])  # no difference computed
    shown = table.display.iloc[0]
    assert shown["A − B (mIoU pts)"] == report.NOT_COMPARED and shown["95% CI"] == report.NOT_COMPARED
    assert shown["Verdict"] == f"not supported: {reason}"
    assert row["statement"] == f"{PATCH_LABEL} vs {LETTERBOX_LABEL}: not supported, not compared ({reason})"
    per_class = comparison.table("rq4_per_class")
    assert (per_class.data["reason"] == reason).all()
    assert (per_class.display["Patch IoU (%)"] == report.NOT_COMPARED).all()
    rq4 = next(f for f in report.findings(comparison.tables) if f["table"] == "rq4_sampling")
    assert rq4["verdict"] == "not supported" and reason in rq4["reason"]


def test_decide_refuses_a_blocked_comparison_whatever_the_numbers() -> None:
    verdict = report.decide(A3, B3, CLEAN3, CLEAN3, blocked=["training budget differs: epochs 12 vs 6"])
    assert not verdict.compared and verdict.label == "not supported" and verdict.difference.n == 0
    assert verdict.cell == "not supported: training budget differs: epochs 12 vs 6"
    assert "beats" not in verdict.statement("patch", "letterbox")
    assert report.decide(A3, B3, CLEAN3, CLEAN3).compared


def test_rq4_is_written_with_its_figure_and_in_the_findings(tmp_path) -> None:
    root = rq4_runs(tmp_path / "runs")
    paper = tmp_path / "paper"
    comparison = report.build_comparison(root)
    provenance = report.write_comparison(comparison, paper, root)
    csv = pd.read_csv(paper / "tables" / "rq4_per_class.csv", comment="#").set_index("class")
    assert float(csv.loc["Dust", "iou_patch (%)"]) == pytest.approx(11.0)  # a column with "absent" cells
    assert csv.loc["Dust", "mean_diff (IoU points)"] == pytest.approx(100 * (0.11 - 0.01 / 3))
    for suffix in ("png", "pdf"):
        assert (paper / "figures" / f"rq4_per_class_differences.{suffix}").stat().st_size > 1000
    figure = comparison.figure("rq4_per_class_differences")
    labels = {t.get_text(): t.get_color() for t in figure.axes[0].get_yticklabels()}
    assert labels["Dust"] == "tab:red" and labels["Peel"] == "black"
    assert [f["table"] for f in provenance["findings"]].index("rq4_sampling") == 3  # after RQ3
    assert {r["run_dir"] for r in provenance["artefacts"]["tables/rq4_per_class.md"]["runs"]} == {
        f"poc59v2_flagship{v}/convnext_tiny/kfold-{f}" for v in ("", "-patch") for f in FOLDS}


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_rq4_tables_compile(tmp_path) -> None:
    paper = tmp_path / "paper"
    comparison = report.build_comparison(rq4_runs(tmp_path / "runs"))
    for name in ("rq4_sampling", "rq4_per_class"):
        fileio.write_text(paper / "tables" / f"{name}.tex", comparison.table(name).to_latex())
    (paper / "main.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
                                    "\\begin{document}\n\\input{tables/rq4_sampling.tex}\\clearpage\n"
                                    "\\input{tables/rq4_per_class.tex}\n\\end{document}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main.tex"], cwd=paper,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Overfull \\hbox" not in (paper / "main.log").read_text(errors="replace")


# -- the research design as data (issue 13 item 5) ---------------------------------------------------

REPOSITORY = Path(__file__).resolve().parents[1]


def test_the_research_questions_are_numbered_once_and_each_table_and_figure_is_built(runs_root, planned,
                                                                                      tmp_path) -> None:
    from heritage.report import design

    assert [q.number for q in design.QUESTIONS] == list(range(1, len(design.QUESTIONS) + 1))
    assert all(q.table in q.tables for q in design.QUESTIONS)
    assert report.ABLATION_POC == design.question("ablation_paired").poc
    root = rq4_runs(runs_root)  # every question has pairs: the flagship, its patch arm, POC-5.5 and a resolution arm
    comparison = report.build_comparison(root, None)
    names = [t.name for t in comparison.tables]
    shown = [name for q in design.QUESTIONS for name in q.tables]
    assert names[-len(shown):] == shown  # after the descriptive tables, in question order
    assert set(comparison.figures) >= {name for q in design.QUESTIONS for name in q.figures}
    found = report.findings(comparison.tables)
    assert [f["question"] for f in found] == [q.text for q in design.QUESTIONS]
    assert found[4]["question"].startswith("RQ5: does a loss variant")
    with pytest.raises(KeyError, match="rq9"):
        design.question("rq9")


def test_a_question_about_a_poc_the_plan_lacks_is_not_asked(tmp_path) -> None:
    root = tmp_path / "runs"
    write_run(root, "poc58_baseline", "convnext_tiny", "holdout", 0.21, protocol="holdout")
    names = [t.name for t in report.build_comparison(root).tables]
    assert "rq1_family" in names and "ablation_paired" not in names and "loss_ablation_poc59v2_flagship" not in names


def test_the_configs_and_notebooks_cite_only_declared_questions() -> None:
    from heritage.report import design

    declared = {q.label for q in design.QUESTIONS}
    cited = {}
    for path in [*(REPOSITORY / "heritage" / "configs").glob("*.yaml"), *(REPOSITORY / "notebooks").glob("*.ipynb")]:
        for label in re.findall(r"\bRQ\d+\b", path.read_text(encoding="utf-8")):
            cited.setdefault(label, path.name)
    assert cited and set(cited) <= declared, {label: name for label, name in cited.items() if label not in declared}
    flagship = (REPOSITORY / "heritage" / "configs" / "poc59v2_flagship.yaml").read_text(encoding="utf-8")
    assert "loss ablation (RQ5" in flagship  # the number design.py gives it


def test_the_comparison_notebook_loops_over_the_declared_questions() -> None:
    import json

    cells = json.loads((REPOSITORY / "notebooks" / "99_comparison.ipynb").read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    assert "design.QUESTIONS" in code
    from heritage.report import design

    named = [name for q in design.QUESTIONS for name in (*q.tables, *q.figures) if f'"{name}"' in code]
    assert not named, f"the notebook names question tables/figures itself: {named}"


def test_the_reference_counts_have_one_value_for_synth_and_the_dataset_view() -> None:
    from heritage.data import reference, synthetic as synth

    # one home: synth matches the very objects the dataset view compares with
    assert synth.REFERENCE_CLASS_PIXEL_COUNTS is reference.REFERENCE_CLASS_PIXEL_COUNTS
    assert synth.REFERENCE_PAIR_COUNTS is reference.REFERENCE_PAIR_COUNTS
    assert reference.class_shares() == pytest.approx(synth.reference_class_shares())
    table = report.class_share_table({"class_pixel_shares": dict.fromkeys(taxonomy.CLASS_NAMES, 0.0),
                                      "images_per_class": dict.fromkeys(taxonomy.CLASS_NAMES, 0)})
    clean = reference.REFERENCE_CLASS_PIXEL_COUNTS["Clean"]
    damage = sum(reference.REFERENCE_CLASS_PIXEL_COUNTS[n] for n in taxonomy.CLASS_NAMES)
    assert table.set_index("class").at["Clean", "share_artefact"] == pytest.approx(clean / damage)


def test_the_run_banner_lives_below_predict(runs_root) -> None:
    from heritage.training import provenance

    folder = next(runs_root.glob("poc59v2_flagship/mit_b3/kfold-*"))
    assert report.run_banner is provenance.run_banner
    banner = provenance.run_banner(folder)
    assert banner.n_runs == 1 and banner.n_above_all_clean == 1 and banner.profile == "smoke"


# -- thin damage against the residual filter -------------------------------------------------------------


def thin_record(marked_image, model_iou: float, filter_iou: float, *, cliou: float = 0.5, dust_iou: float = 0.1) -> dict:
    """A test.thin block with the schema of heritage.modeling.thin's result and these numbers (Hair absent)."""
    from heritage.data.working import EvaluationImage
    from heritage.modeling import thin

    picture, mask = marked_image()
    scores = thin.ThinDamageScores(6.0)
    scores.update(EvaluationImage("x", picture, picture, mask), mask)
    record = scores.result()
    record.update(model_iou=model_iou, filter_iou=filter_iou, model_beats_filter=model_iou > filter_iou)
    record["model"].update(iou=model_iou, cliou=cliou)
    record["filter"].update(iou=filter_iou, cliou=0.25)
    record["per_class"]["Dust"].update(model_iou=dust_iou, model_cliou=cliou, filter_recall=0.8)
    return record


@pytest.fixture
def thin_root(tmp_path: Path, marked_image) -> Path:
    """The flagship with test.thin: ConvNeXt-T above the filter on every fold, MiT-B3 below, MaxViT-T above on one
    fold of three; POC-5.8's runs were made before thin damage was scored."""
    root = tmp_path / "runs"
    thin_ious = {"convnext_tiny": [0.30, 0.32, 0.28], "mit_b3": [0.10, 0.12, 0.11], "maxvit_tiny": [0.25, 0.15, 0.15]}
    for encoder, values in FLAGSHIP.items():
        for fold, miou, thin_iou, dust in zip(FOLDS, values, thin_ious[encoder], (0.1, 0.2, 0.3)):
            write_run(root, "poc59v2_flagship", encoder, fold, miou, class_weights="inverse_sqrt_log_scaled",
                      thin=thin_record(marked_image, thin_iou, 0.2, dust_iou=dust))
    write_run(root, "poc58_baseline", "convnext_tiny", "holdout", 0.21, protocol="holdout")
    return root


def test_thin_damage_stands_beside_the_filter_and_a_setting_below_it_is_said_not_to_beat_it(thin_root) -> None:
    comparison = report.build_comparison(thin_root)
    table = comparison.table("thin_damage")
    data, display = table.data.set_index("setting"), table.display.set_index("Setting")
    convnext, mit, maxvit = "POC-5.9-v2 ConvNeXt-Tiny", "POC-5.9-v2 SegFormer MiT-B3", "POC-5.9-v2 MaxViT-Tiny"
    assert data.loc[convnext, "thin_iou_mean"] == pytest.approx(0.30)
    assert data.loc[convnext, "thin_iou_std"] == pytest.approx(np.std([0.30, 0.32, 0.28], ddof=1))
    assert data.loc[mit, "filter_thin_iou_mean"] == pytest.approx(0.2)
    assert display.loc[convnext, "Folds above the filter"] == "3 of 3"
    assert display.loc[maxvit, "Folds above the filter"] == "1 of 3"
    assert display.loc[mit, "Thin-damage clIoU (4 px) (%)"] == "50.00"  # the tolerance in the label
    assert display.loc["POC-5.8 ConvNeXt-Tiny", "Thin-damage IoU (%)"] == report.NOT_RECORDED
    assert sorted(note for note in table.notes if "does not beat the residual filter on thin damage" in note) == [
        f"- {maxvit} does not beat the residual filter on thin damage (its thin-damage IoU is above the filter's on "
        "1 of 3 folds).",
        f"- {mit} does not beat the residual filter on thin damage (its thin-damage IoU is above the filter's on "
        "0 of 3 folds)."]
    assert "thin_iou_mean (%)" in table.to_csv().splitlines()[1]
    encoders = comparison.table("encoders_poc59v2_flagship").display.set_index("Encoder")
    assert encoders.loc["ConvNeXt-Tiny", "Thin-damage IoU (%)"] == "30.00"
    assert encoders.loc["ConvNeXt-Tiny", "Residual filter, thin damage (%)"] == "20.00"
    assert comparison.table("encoders_poc58_baseline").display.iloc[0]["Thin-damage IoU (%)"] == report.NOT_RECORDED
    per_class = comparison.table("thin_per_class").data.set_index("setting")
    assert per_class.loc[convnext, "Dust_iou"] == pytest.approx(0.2)  # mean over the folds
    assert per_class.loc[convnext, "Hair_iou"] == report.ABSENT
    assert per_class.loc["POC-5.8 ConvNeXt-Tiny", "Dust_cliou"] == report.NOT_RECORDED
    banner = comparison.banner
    assert (banner.n_above_filter, banner.n_with_filter) == (4, 9)
    assert "4 of 9 beat the residual filter on thin damage (1 not recorded or without thin damage)" in banner.text


def test_runs_made_before_thin_damage_was_scored_say_not_recorded(runs_root, planned) -> None:
    comparison = report.build_comparison(runs_root, planned)
    table = comparison.table("thin_damage").display
    ran = table[table["Folds"].str.split("/").str[0] != "0"]
    assert (ran["Thin-damage IoU (%)"] == report.NOT_RECORDED).all()
    assert (ran["Residual filter, thin damage (%)"] == report.NOT_RECORDED).all()
    assert table.set_index("Setting").loc["POC-5.8 CoAtNet-0", "Thin-damage IoU (%)"] == report.NO_RUN
    assert "thin damage against the residual filter: not recorded" in comparison.banner.text
    metrics = json.loads((runs_root / "poc58_baseline/convnext_tiny/holdout-holdout/metrics.json").read_text())
    assert report.NOT_RECORDED in report.thin_headline(metrics) and report.thin_frame(metrics).empty
    assert dict(report.results_table(metrics).values)["test thin-damage IoU (%)"] == report.NOT_RECORDED


def test_the_run_report_says_when_a_model_does_not_beat_the_filter(thin_root) -> None:
    metrics = json.loads((thin_root / "poc59v2_flagship/mit_b3/kfold-fold0/metrics.json").read_text())
    line = report.thin_headline(metrics)
    assert "**Thin-damage IoU 10.00%**" in line and "**20.00%** for the residual filter" in line
    assert "does not beat the residual filter on thin damage" in line and "clIoU (4 px)" in line
    frame = report.thin_frame(metrics).set_index("")
    assert frame.loc["Dust", "model IoU (%)"] == "10.00" and frame.loc["Hair", "model IoU (%)"] == report.ABSENT
    above = json.loads((thin_root / "poc59v2_flagship/convnext_tiny/kfold-fold0/metrics.json").read_text())
    assert "this model **beats the residual filter on thin damage**" in report.thin_headline(above)
    assert "divided by" not in line  # a run that chose no thin factor
    calibrated = {**metrics, "thin_factor": {"factor": 12.0, "chosen_on": "val"}}
    assert "thin-class probabilities were divided by 12, the factor chosen on the validation part" in (
        report.thin_headline(calibrated))


def test_the_paper_says_how_many_runs_do_not_beat_the_filter(thin_root, tmp_path) -> None:
    from heritage.report import publish

    comparison = report.build_comparison(thin_root)
    provenance = report.write_comparison(comparison, tmp_path / "paper", thin_root)
    text = publish.manuscript_text(tmp_path / "paper", provenance)
    assert "4 of 9 runs beat the residual filter; the other 5 do not beat the residual filter on thin damage" in text
    assert "\\input{tables/thin_damage.tex}" in text and "\\input{tables/thin_per_class.tex}" in text
    tex = (tmp_path / "paper" / "tables" / "thin_damage.tex").read_text()
    assert "does not beat the residual filter on thin damage" in tex


def test_rq4_pairs_the_thin_damage_iou_of_runs_that_recorded_it(tmp_path, marked_image) -> None:
    root = rq4_runs(tmp_path / "runs")
    thin_ious = {"letterbox": [0.01, 0.02, 0.0], "patch": [0.30, 0.35, 0.32]}
    for mode, key in (("letterbox", "poc59v2_flagship"), ("patch", "poc59v2_flagship-patch")):
        for fold, value in zip(FOLDS, thin_ious[mode]):
            path = root / key / "convnext_tiny" / f"kfold-{fold}" / "metrics.json"
            metrics = fileio.read_json(path)
            metrics["test"]["thin"] = thin_record(marked_image, value, 0.2)
            fileio.write_json(path, metrics)
    row = report.build_comparison(root).table("rq4_per_class").data.set_index("class").loc[report.THIN_DAMAGE]
    assert row["n_pairs"] == 3 and row["iou_patch"] == pytest.approx(np.mean(thin_ious["patch"]))
    assert row["mean_diff"] == pytest.approx(np.mean(np.subtract(thin_ious["patch"], thin_ious["letterbox"])))
