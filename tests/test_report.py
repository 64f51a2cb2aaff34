"""heritage.report: tables and figures rebuilt from fabricated run folders with known numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from heritage import fileio, report, taxonomy

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
              config_hash: str | None = None, hierarchical: dict | None = None) -> Path:
    """A run folder holding only ``metrics.json`` in the ARCHITECTURE.md schema."""
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
        "image_size": image_size, "batch_size": 8, "lr": 2e-3, "epochs": 6, "params_m": 30.0, "device": "cpu",
        "best_epoch": 5, "val": {"miou": miou},
        "test": {"miou": miou, "all_clean_miou": 0.06, "pixel_accuracy": 0.9, "n_images": 4, "per_class": per_class,
                 "confusion_matrix": np.eye(taxonomy.NUM_CLASSES, dtype=int).tolist()},
        "throughput": {"train_images_per_s": 100.0 * (1 + FOLDS.index(fold)) if fold in FOLDS else 50.0,
                       "eval_images_per_s": 300.0},
        "peak_memory_mb": 512.0, "wall_time_s": 60.0,
    }
    if hierarchical:
        metrics["hierarchical"] = hierarchical
    fileio.write_json(folder / "metrics.json", metrics)
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
    assert diff.supported
    assert diff.verdict("A", "B").startswith("A beats B by 10.00 mIoU points")


def test_an_interval_including_zero_supports_no_difference() -> None:
    diff = report.paired_difference([0.31, 0.30, 0.355], [0.30, 0.32, 0.34])
    assert diff.ci_low < 0 < diff.ci_high
    assert not diff.supported
    assert "do not support a difference" in diff.verdict("MaxViT", "ConvNeXt")


def test_one_pair_is_not_testable_and_a_negative_difference_names_b() -> None:
    single = report.paired_difference([0.3], [0.2])
    assert not single.testable and math.isnan(single.ci_low)
    assert "not testable" in single.verdict("A", "B")
    constant = report.paired_difference([0.1, 0.2], [0.3, 0.4])
    assert (constant.ci_low, constant.ci_high) == pytest.approx((-0.2, -0.2))
    assert constant.verdict("A", "B").startswith("B beats A by 20.00")


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
    assert vit["n_pairs"] == 3 and vit["supported"]
    assert vit["mean_diff"] == pytest.approx(-np.mean(np.subtract(FLAGSHIP["mit_b3"], FLAGSHIP["convnext_tiny"])))
    assert vit["verdict"].startswith("POC-5.9-v2 SegFormer MiT-B3 beats POC-5.9-v2 ConvNeXt-Tiny")
    hybrid = rq1[(rq1["a"] == "POC-5.9-v2 ConvNeXt-Tiny") & (rq1["b"] == "POC-5.9-v2 MaxViT-Tiny")].iloc[0]
    assert not hybrid["supported"] and "do not support" in hybrid["verdict"]
    rq2 = table_named(comparison, "rq2_multitask").data
    assert rq2.iloc[0]["n_pairs"] == 1 and "not testable" in rq2.iloc[0]["verdict"]
    assert rq2.iloc[0]["also_differs"] == ""  # the multi-task loss comes with the multi-task model
    rq3 = table_named(comparison, "rq3_resolution").data.iloc[0]
    assert (rq3["factor_a"], rq3["factor_b"]) == (64, 32) and rq3["also_differs"] == ""
    assert rq3["supported"] and rq3["mean_diff"] == pytest.approx(0.32 - 0.21)


# -- writing ---------------------------------------------------------------------------------------


def test_write_comparison_writes_tables_figures_and_provenance(runs_root, planned, tmp_path) -> None:
    paper = tmp_path / "paper"
    provenance = report.write_comparison(report.build_comparison(runs_root, planned), paper, runs_root)
    for suffix in ("md", "tex", "csv"):
        assert (paper / "tables" / f"encoders_poc59v2_flagship.{suffix}").is_file()
    for suffix in ("png", "pdf"):
        assert (paper / "figures" / f"per_class_iou_heatmap.{suffix}").stat().st_size > 1000
        assert (paper / "figures" / f"miou_vs_throughput.{suffix}").stat().st_size > 1000
    csv = pd.read_csv(paper / "tables" / "encoders_poc59v2_flagship.csv").set_index("encoder")
    assert csv.loc["mit_b3", "miou_mean"] == pytest.approx(np.mean(FLAGSHIP["mit_b3"]))
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


def test_planned_runs_from_the_real_plan(data_dir: Path) -> None:
    from heritage import config

    planned = report.planned_runs(config.plan("smoke", ["poc58_baseline"], data_dir))
    assert planned[["poc", "variant", "encoder", "protocol", "fold"]].values.tolist() == [
        ["poc58_baseline", "", "convnext_tiny", "holdout", "holdout"]]
    assert planned["family"].tolist() == ["CNN"]


# -- one run and the data ----------------------------------------------------------------------------


def test_run_panels_from_a_run_folder(runs_root: Path, tmp_path: Path) -> None:
    metrics = report.load_metrics(runs_root / "poc55_multitask/convnext_tiny/holdout-holdout/metrics.json")
    results = report.results_table(metrics).set_index("quantity")["value"]
    assert results["test mIoU (%)"] == "20.00" and results["test binary mIoU (%)"] == "60.00"
    assert results["test mIoU of predicting Clean everywhere (%)"] == "6.00"
    history = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.8], "lr": [1e-3, 1e-4], "val_miou": [0.1, 0.2],
                            "val_binary_miou": [0.5, 0.6], "images_per_s": [10.0, 11.0]})
    for fig in (report.plot_history(history), report.plot_per_class_iou(metrics),
                report.plot_confusion(report.confusion_matrix(metrics))):
        assert report.save_figure(fig, tmp_path / "fig")[0].stat().st_size > 1000
    del metrics["test"]["confusion_matrix"]
    assert report.confusion_matrix(metrics) is None


def test_overlay_paints_damage_only() -> None:
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 1], [255, 0]], dtype=np.uint8)
    painted = report.overlay(image, mask, alpha=1.0)
    assert painted[0, 1].tolist() == list(taxonomy.PALETTE[1])
    assert painted[0, 0].tolist() == [100, 100, 100] and painted[1, 0].tolist() == [100, 100, 100]


def test_dataset_views(data_dir: Path, tmp_path: Path) -> None:
    from heritage import ingest, stats

    dataset = stats.dataset_stats(data_dir)
    metadata = ingest.read_metadata(data_dir)
    ids = metadata.loc[metadata["transform"] == ingest.IDENTITY, "id"].tolist()[:2]
    shares = report.class_share_table(dataset)
    assert shares["share_here"].sum() == pytest.approx(1.0)
    assert shares["share_artefact"].sum() == pytest.approx(1.0)
    balance = report.split_balance(data_dir, "kfold")
    assert set(balance.index.get_level_values("part")) == {"train", "val", "test"}
    assert (balance["total"] == balance.drop(columns="total").sum(axis=1)).all()
    for fig in (report.plot_class_shares(shares), report.plot_material_content(dataset),
                report.plot_examples(data_dir, ids), report.plot_split_balance(balance, "kfold")):
        assert report.save_figure(fig, tmp_path / "fig")[0].stat().st_size > 1000


def test_a_plan_without_runs_gives_tables_of_no_run(tmp_path: Path, planned: pd.DataFrame) -> None:
    comparison = report.build_comparison(tmp_path / "no_runs_yet", planned)
    flagship = comparison.table("encoders_poc59v2_flagship").display
    assert (flagship["mIoU (%)"] == report.NO_RUN).all() and (flagship["Folds"] == "0/3").all()
    assert (comparison.table("per_class_iou").data.drop(columns="class") == report.NO_RUN).all().all()
    assert comparison.table("rq1_family").notes == ["- No pair of settings with runs for this question."]
    with pytest.raises(ValueError, match="no finished run"):
        report.build_comparison(tmp_path / "no_runs_yet")
