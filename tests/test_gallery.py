"""heritage.report.gallery: the paper's damage maps (best flagship run by validation mIoU, its own test scans)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from heritage import config, errors, fileio
from heritage.report import gallery
from heritage.data import splits


def planned(data_dir: Path, tmp_path: Path) -> list:
    return config.plan("smoke", [gallery.POC], data_dir, overrides={"runs_root": str(tmp_path / "runs")})


def finish(run_config, val: float, test: float, config_hash: str | None = None, checkpoint: bool = False) -> Path:
    folder = config.run_dir(run_config)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(run_config.to_yaml())
    fileio.write_json(folder / "metrics.json", {
        "poc": run_config.poc, "variant": None, "encoder": run_config.encoder, "protocol": run_config.protocol,
        "fold": run_config.fold, "config_hash": config_hash or run_config.config_hash(), "profile": "smoke",
        "epochs": 3, "pretrained": False, "val": {"miou": val},
        "test": {"miou": test, "all_clean_miou": 0.3, "per_class": {}}})
    if checkpoint:
        from heritage.modeling.models import build_model

        model_config = {"architecture": "unet", "encoder": "convnext_tiny", "image_size": 64}
        torch.save({"model": build_model("unet", "convnext_tiny", image_size=64).state_dict(),
                    "config": model_config, "epoch": 1, "val_miou": val}, folder / "checkpoint_best.pt")
    return folder


def test_the_run_is_chosen_by_validation_mIoU_among_finished_runs_of_the_plan(data_dir, tmp_path) -> None:
    configs = planned(data_dir, tmp_path)
    runs = gallery.planned_runs(configs)
    assert len(runs) == len([c for c in configs if c.variant is None]) >= 2  # main configuration only
    main = [c for c in configs if c.variant is None]
    finish(main[0], val=0.40, test=0.10)
    best = finish(main[1], val=0.50, test=0.05)
    finish(main[2], val=0.90, test=0.90, config_hash="an older configuration")  # not of this plan
    choice = gallery.choose_run(runs)
    assert choice.best.run_dir == best  # the higher validation mIoU, not the higher test mIoU
    assert len(choice.candidates) == 2 and str(config.run_dir(main[2])) in choice.not_finished
    assert "validation" in choice.reason and "50.00%" in choice.reason


def test_without_a_finished_run_there_is_nothing_to_draw(data_dir, tmp_path) -> None:
    with pytest.raises(errors.InputError, match="no finished run"):
        gallery.choose_run(gallery.planned_runs(planned(data_dir, tmp_path)))


def test_the_scans_are_from_the_runs_own_test_part(data_dir, tmp_path) -> None:
    run_config = planned(data_dir, tmp_path)[1]
    folder = finish(run_config, 0.5, 0.5)
    ids = gallery.test_scan_ids(folder, 3)
    train, val, test = splits.fold_ids(splits.load_manifest(data_dir, run_config.protocol), run_config.fold)
    assert len(ids) == 3 and set(ids) <= set(test) and not set(ids) & (set(train) | set(val))
    assert ids == gallery.test_scan_ids(folder, 3)  # deterministic


def test_the_gallery_holds_a_report_per_scan_and_says_which_run_and_why(data_dir, tmp_path) -> None:
    main = [c for c in planned(data_dir, tmp_path) if c.variant is None]
    finish(main[0], val=0.6, test=0.2, checkpoint=True)  # test mIoU below the all-Clean 0.3
    choice = gallery.choose_run(gallery.planned_runs(main))
    ids = gallery.test_scan_ids(choice.best.run_dir, 2)
    index = gallery.write_gallery(choice, ids, tmp_path / "paper" / gallery.GALLERY_DIR, device="cpu")
    page = index.read_text()
    for sample_id in ids:
        assert (index.parent / sample_id / "report.html").is_file()
        assert f"href='{sample_id}/report.html'" in page
        assert "is not above its all-Clean baseline" in (index.parent / sample_id / "report.html").read_text()
    assert "highest validation mIoU" in page and "ground truth" in page and "Provenance:" in page
    assert "class='banner warning'" in page  # below the baseline: said in red on the gallery too
    record = fileio.read_json(index.parent / gallery.RECORD_FILE)
    assert record["scans"] == ids and record["run_dir"] == str(choice.best.run_dir)


def test_the_notebook_declares_every_parameter_papermill_can_set() -> None:
    from heritage.pipeline import execution, paper

    names = execution.notebook_parameter_names(paper.NOTEBOOKS_DIR / f"{gallery.NOTEBOOK}.ipynb")
    assert names == ["runs", "out_dir", "profile", "data_dir", "runs_root", "paper_dir", "n_scans", "device"]
