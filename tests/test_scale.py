"""heritage.data.scale: damage components per class, their areas at a scale, and the below-1-px warning, as
ingest, train, ``data stats`` and predict use them (issue 11, item 3)."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import make_row, write_rows

from heritage.data import augment, datafolder, ingest, scale, splits, taxonomy
from heritage import cli, errors, fileio
from heritage.inference import predict
from heritage.training import runs, train
from heritage.config import load_run_config, run_dir

SPECK, HAIR, BLOB = (taxonomy.CLASS_IDS[name] for name in ("Dust", "Hair", "Material loss"))
WIDTH, HEIGHT = 96, 64  # the hand-made scans' size
N_SCANS = 10  # enough sources for the holdout split


def hand_mask(offset: int = 0) -> np.ndarray:
    """Two 1-px specks (Dust), a 3x1 hair (Hair) and a 10x10 blob (Material loss) on Clean, a Background strip."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[:, -4:] = taxonomy.IGNORE_INDEX
    mask[5 + offset, 5] = mask[40, 70 - offset] = SPECK
    mask[20, 10 + offset: 13 + offset] = HAIR
    mask[30:40, 30 + offset: 40 + offset] = BLOB
    return mask


def test_components_are_8_connected_per_damage_class_without_clean_or_background():
    mask = np.zeros((6, 6), dtype=np.uint8)
    mask[0, 0] = mask[1, 1] = SPECK  # diagonal neighbours: one component
    mask[3, 3] = mask[3, 4] = HAIR
    mask[3, 5] = SPECK  # touches the hair but is another class: its own component
    mask[5, :] = taxonomy.IGNORE_INDEX
    areas = scale.component_areas(mask)
    assert set(areas) == {SPECK, HAIR}
    assert sorted(areas[SPECK].tolist()) == [1, 2] and areas[HAIR].tolist() == [2]


def test_the_summary_of_a_speck_a_hair_and_a_blob_at_scales_1_and_a_quarter():
    per_image = [scale.component_areas(hand_mask())]
    native = scale.summarise(per_image, 1.0)
    assert list(native) == ["Material loss", "Dust", "Hair"]  # class-id order
    assert native["Dust"] == {"n_components": 2, "median_area_px": 1.0, "share_le_2px": 1.0}
    assert native["Hair"] == {"n_components": 1, "median_area_px": 3.0, "share_le_2px": 0.0}
    assert native["Material loss"] == {"n_components": 1, "median_area_px": 100.0, "share_le_2px": 0.0}
    quarter = scale.summarise(per_image, 0.25)  # areas x 1/16
    assert quarter["Dust"]["median_area_px"] == pytest.approx(1 / 16)
    assert quarter["Hair"] == {"n_components": 1, "median_area_px": pytest.approx(3 / 16), "share_le_2px": 1.0}
    assert quarter["Material loss"]["median_area_px"] == pytest.approx(100 / 16)
    assert quarter["Material loss"]["share_le_2px"] == 0.0
    # one factor per image: the blob of a second image at 0.1 is 1 px, the pooled median between the two
    pooled = scale.summarise([*per_image, *per_image], [1.0, 0.1])
    assert pooled["Material loss"] == {"n_components": 2, "median_area_px": pytest.approx(50.5), "share_le_2px": 0.5}
    with pytest.raises(ValueError, match="2 factors for 1 images"):
        scale.summarise(per_image, [1.0, 0.5])


def test_the_warning_names_the_speck_class_at_a_quarter_and_nothing_at_scale_1():
    per_image = [scale.component_areas(hand_mask())]
    assert scale.vanishing_messages(scale.summarise(per_image, 1.0), "at 1") == []
    messages = scale.vanishing_messages(scale.summarise(per_image, 0.25), "at 0.25")
    named = [re.match(r"at 0\.25: ([A-Za-z ]+): median damage component ([0-9.]+) px", m).groups() for m in messages]
    assert named == [("Dust", "0.0625"), ("Hair", "0.188")]  # the blob (6.25 px) still has its pixels
    rescaled = scale.rescaled(scale.summarise(per_image, 1.0), 0.25)  # what predict does with a run's record
    assert [m.split(": ")[1] for m in scale.vanishing_messages(rescaled, "x")] == ["Dust", "Hair"]


def test_working_factor_never_enlarges():
    np.testing.assert_allclose(scale.working_factor([96, 40], 64), [64 / 96, 1.0])
    np.testing.assert_allclose(scale.working_factor([96, 40], "native"), [1.0, 1.0])


# -- ingest, data stats, train and predict on hand-made scans -------------------------------------------


def hand_rows() -> list[dict]:
    return [make_row(f"scan{i}", size=(WIDTH, HEIGHT), seed=i, mask=hand_mask(i % 3)) for i in range(N_SCANS)]


def test_ingest_records_the_original_size_and_warns_naming_the_classes_it_shrinks(tmp_path, capsys):
    source = write_rows(tmp_path / "source" / "data" / "train-0.parquet", hand_rows())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metadata = ingest.ingest(source.parent.parent, tmp_path / "half", longest_side=WIDTH // 2)
    assert (metadata[["original_width", "original_height"]] == [WIDTH, HEIGHT]).all().all()
    assert (metadata[["width", "height"]] == [WIDTH // 2, HEIGHT // 2]).all().all()
    reread = datafolder.read_metadata(tmp_path / "half")
    assert list(reread.columns[-2:]) == list(datafolder.ORIGINAL_SIZE_COLUMNS)
    # measured on the full-size masks: a speck is 1/4 px at half size (the stored mask may not hold it at all)
    messages = [str(w.message) for w in caught if issubclass(w.category, scale.ScaleWarning)]
    assert len(messages) == 2 and messages[0].startswith(f"--longest-side {WIDTH // 2} (median factor 0.5")
    assert "Dust: median damage component 0.25 px" in messages[0]
    assert "Hair: median damage component 0.75 px" in messages[1]
    # the original size kept: no warning, and the columns still written
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = ingest.ingest(source.parent.parent, tmp_path / "full", longest_side=None)
    assert not [w for w in caught if issubclass(w.category, scale.ScaleWarning)]
    assert (kept["original_width"] == kept["width"]).all()
    # the CLI prints each as one line naming the class
    assert cli.main(["data", "ingest", "--source", str(source.parent.parent), "--out", str(tmp_path / "cli"),
                     "--longest-side", "24"]) == 0
    printed = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert [line.split(": ")[3] for line in printed] == ["Dust", "Hair"]  # the blob keeps 6.25 px
    assert all(line.startswith("heritage data ingest: warning: --longest-side 24 ") for line in printed)


def test_augment_keeps_the_original_size_and_older_folders_read_without_it(tmp_path):
    write_rows(tmp_path / "source" / "data" / "train-0.parquet", hand_rows()[:2])
    with pytest.warns(scale.ScaleWarning):
        ingest.ingest(tmp_path / "source", tmp_path / "data", longest_side=WIDTH // 2)
    table = augment.augment(tmp_path / "data")
    assert len(table) == 8 and (table["original_width"] == WIDTH).all() and (table["original_height"] == HEIGHT).all()
    old = table.drop(columns=list(datafolder.ORIGINAL_SIZE_COLUMNS))
    datafolder.write_metadata(tmp_path / "data", old)
    reread = datafolder.read_metadata(tmp_path / "data")
    assert not datafolder.has_original_size(reread)
    assert (datafolder.original_size(reread).to_numpy() == reread[["width", "height"]].to_numpy()).all()
    half = table.drop(columns=["original_height"])  # one without the other is refused naming both
    (tmp_path / "data" / datafolder.METADATA_FILE).write_text(half.to_csv(index=False))
    with pytest.raises(errors.InputError, match="'original_width' without 'original_height'"):
        datafolder.read_metadata(tmp_path / "data")


@pytest.fixture(scope="module")
def hand_data(tmp_path_factory) -> Path:
    """The hand-made scans at their original size, augmented, with a holdout split."""
    folder = tmp_path_factory.mktemp("hand")
    write_rows(folder / "source" / "data" / "train-0.parquet", hand_rows())
    ingest.ingest(folder / "source", folder / "data", longest_side=None)
    augment.augment(folder / "data")
    splits.write_manifests(folder / "data", ["holdout"])
    return folder / "data"


def test_data_stats_reports_components_at_a_resolution(hand_data, tmp_path, capsys):
    native = cli.main(["data", "stats", "--data", str(hand_data), "--json", str(tmp_path / "native.json")])
    assert native == 0
    out = capsys.readouterr()
    assert re.search(r"Dust\s+20\s+1\s+100\.0%", out.out) and "warning" not in out.err
    at_48 = cli.main(["data", "stats", "--data", str(hand_data), "--resolution", "48", "--json",
                      str(tmp_path / "48.json")])
    assert at_48 == 0
    out = capsys.readouterr()
    components = fileio.read_json(tmp_path / "48.json")["components"]
    assert components["resolution"] == 48 and components["factor_from_stored"]["median"] == 0.5
    assert components["factor_from_original"] == 0.5
    assert components["per_class"]["Material loss"]["median_area_px"] == 25.0
    assert "heritage data stats: warning: at 48: Dust: median damage component 0.25 px" in out.err
    assert cli.main(["data", "stats", "--data", str(hand_data), "--resolution", "big"]) == 2
    assert "--resolution 'big'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def patch_run(hand_data, tmp_path_factory):
    """A one-epoch patch run at working resolution 64 (2/3 of the 96 px scans), and what it printed on stdout."""
    config = load_run_config("poc58_baseline", "smoke", encoder="convnext_tiny", overrides={
        "data_dir": str(hand_data), "runs_root": str(tmp_path_factory.mktemp("runs")), "protocol": "holdout",
        "fold": "holdout", "sampling": "patch", "working_resolution": 64, "image_size": 32, "epochs": 1,
        "max_train_samples": 8, "n_prediction_panels": 1})
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # a quiet run (progress=False) warns on stdout
        metrics = train.run_training(config, progress=False)
    return config, metrics, printed.getvalue()


def test_a_run_records_its_scale_and_warns_naming_the_classes(patch_run):
    config, metrics, printed = patch_run
    record = metrics["scale"]
    assert record["reference"].startswith("original scan")
    assert record["model_input"] == {"min": pytest.approx(2 / 3), "median": pytest.approx(2 / 3),
                                     "max": pytest.approx(2 / 3)}
    components = record["components"]
    assert components["part"] == "train" and components["n_images"] == config.max_train_samples
    assert set(components["model_input"]) == set(components["stored"]) == {"Material loss", "Dust", "Hair"}
    for name, stored in components["stored"].items():  # one factor, 2/3, for every training image
        assert components["model_input"][name]["median_area_px"] == pytest.approx(
            stored["median_area_px"] * 4 / 9, rel=1e-5), name
    assert components["stored"]["Dust"]["median_area_px"] == 1.0  # (rotated copies hold the specks too)
    assert fileio.read_json(run_dir(config) / runs.METRICS_FILE)["scale"] == json_round_trip(record)
    warned = [line for line in printed.splitlines() if line.startswith("heritage train: warning:")]
    assert len(warned) == 1 and "Dust: median damage component 0.444 px" in warned[0]  # Hair: 3 px -> 1.33 px


def json_round_trip(value):
    import json

    return json.loads(json.dumps(value))


def test_predict_auto_on_a_patch_run_uses_the_working_scale_and_warns_from_the_record(patch_run, hand_data,
                                                                                      tmp_path, capsys):
    config, _, _ = patch_run
    folder = run_dir(config)
    recorded = predict.run_scale(folder, {"sampling": "patch", "working_resolution": 64})
    assert recorded["working_resolution"] == 64 and recorded["training_components"]["stored"]
    assert predict.run_scale(folder, {"sampling": "letterbox"})["working_resolution"] is None
    scan = datafolder.image_path(hand_data, "scan0")
    assert cli.main(["predict", "--run", str(folder), "--input", str(scan), "--out", str(tmp_path / "auto"),
                     "--device", "cpu"]) == 0
    report = (tmp_path / "auto" / "scan0" / "report.html").read_text()
    assert "<tr><th>scale factor used</th><td>0.6667</td></tr>" in report  # not 32 / 96 (letterbox's)
    err = capsys.readouterr().err
    assert "predict: warning: --scale auto (the run's training scale" in err and "Dust: median" in err
    assert "Hair: median" not in err
    assert cli.main(["predict", "--run", str(folder), "--input", str(scan), "--out", str(tmp_path / "quarter"),
                     "--device", "cpu", "--scale", "0.25"]) == 0
    err = capsys.readouterr().err
    assert "--scale 0.25" in err and "Dust: median damage component 0.0625 px" in err and "Hair: median" in err
