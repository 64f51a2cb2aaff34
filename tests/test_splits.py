"""heritage.splits: grouped, stratified manifests for every protocol, and the leak check."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from heritage import cli, fileio, ingest, splits

# Sources per material and content type in ARTeFACT (statistics.json of the published dataset).
ARTEFACT_MATERIALS = {"Paper": 186, "Parchment": 42, "Glass": 39, "Tesserae": 30, "Wood": 26, "Canvas": 23,
                      "Lime plaster": 23, "Film emulsion": 22, "Textile": 16, "Ceramic": 10}
ARTEFACT_CONTENTS = {"Artistic depiction": 232, "Photographic depiction": 130, "Geometric patterns": 32,
                     "Line art": 23}


def artefact_like_metadata() -> pd.DataFrame:
    """Metadata only (no files): 417 sources with ARTeFACT's material and content counts, 4 samples each."""
    materials = [m for m, n in ARTEFACT_MATERIALS.items() for _ in range(n)]
    contents = [c for c, n in ARTEFACT_CONTENTS.items() for _ in range(n)]
    rng = np.random.default_rng(0)
    rng.shuffle(contents)
    rows = []
    for i, (material, content) in enumerate(zip(materials, contents)):
        source = f"src{i:03d}"
        for transform in ("identity", "hflip", "vflip", "rot"):
            sample = source if transform == "identity" else f"{source}__{transform}"
            rows.append({"id": sample, "material": material, "content": content, "width": 8, "height": 8,
                         "source_id": source, "transform": transform})
    return pd.DataFrame(rows, columns=list(ingest.METADATA_COLUMNS))


def parts_by_source(fold: dict, metadata: pd.DataFrame) -> dict[str, set[str]]:
    source_of = dict(zip(metadata["id"], metadata["source_id"]))
    return {part: {source_of[i] for i in fold[part]} for part in splits.PARTS}


@pytest.mark.parametrize("protocol", splits.PROTOCOLS)
def test_manifests_do_not_leak_and_follow_the_contract(data_dir, protocol):
    metadata = ingest.read_metadata(data_dir)
    manifest = splits.load_manifest(data_dir, protocol)
    assert manifest["protocol"] == protocol and manifest["group_by"] == "source_id"
    originals = set(metadata.loc[metadata["transform"] == "identity", "id"])
    for fold in manifest["folds"]:
        sources = parts_by_source(fold, metadata)
        assert not (sources["train"] & sources["val"]) and not (sources["train"] & sources["test"])
        assert not (sources["val"] & sources["test"])
        assert set(fold["val"]) <= originals and set(fold["test"]) <= originals
        # train holds every sample of its sources: originals and their augmented copies
        assert set(fold["train"]) == set(metadata.loc[metadata["source_id"].isin(sources["train"]), "id"])
        assert sources["train"] | sources["val"] | sources["test"] == originals  # every source is used


def test_kfold_tests_every_source_exactly_once(data_dir):
    manifest = splits.load_manifest(data_dir, "kfold")
    assert splits.fold_names(manifest) == ["fold0", "fold1", "fold2"]
    tested = [i for fold in manifest["folds"] for i in fold["test"]]
    assert len(tested) == len(set(tested)) == 24


@pytest.mark.parametrize(("protocol", "column"), [("loco", "content"), ("lomo", "material")])
def test_leave_one_out_holds_out_exactly_one_group(data_dir, protocol, column):
    metadata = ingest.read_metadata(data_dir).set_index("id")
    manifest = splits.load_manifest(data_dir, protocol)
    assert len(manifest["folds"]) == metadata[column].nunique()
    for fold in manifest["folds"]:
        assert set(metadata.loc[fold["test"], column]) == {fold["held_out"]}
        assert fold["held_out"] not in set(metadata.loc[fold["train"] + fold["val"], column])
        assert fold["name"] == splits.fold_name(fold["held_out"])
    assert splits.fold_name("Film emulsion") == "film-emulsion"


def test_kfold_and_holdout_are_stratified_by_material():
    metadata = artefact_like_metadata()
    kfold = splits.build_manifest(metadata, "kfold", k=3, seed=42)
    for fold in kfold["folds"]:
        counts = metadata.set_index("id").loc[fold["test"], "material"].value_counts()
        for material, total in ARTEFACT_MATERIALS.items():
            assert abs(counts.get(material, 0) - total / 3) <= 1, (fold["name"], material)
    holdout = splits.build_manifest(metadata, "holdout", seed=42)["folds"][0]
    n_sources = {part: len(parts_by_source(holdout, metadata)[part]) for part in splits.PARTS}
    assert n_sources == pytest.approx({"train": 0.7 * 417, "val": 0.1 * 417, "test": 0.2 * 417}, abs=2)
    test_materials = metadata.set_index("id").loc[holdout["test"], "material"].value_counts()
    for material, total in ARTEFACT_MATERIALS.items():
        assert abs(test_materials.get(material, 0) - 0.2 * total) <= 1, material


def test_manifests_are_deterministic_for_a_seed():
    metadata = artefact_like_metadata()
    for protocol in splits.PROTOCOLS:
        assert splits.build_manifest(metadata, protocol, seed=42) == splits.build_manifest(metadata, protocol, seed=42)
    assert (splits.build_manifest(metadata, "kfold", seed=42)["folds"][0]["test"]
            != splits.build_manifest(metadata, "kfold", seed=1)["folds"][0]["test"])


def test_leak_check_names_the_leaking_source(data_dir):
    metadata = ingest.read_metadata(data_dir)
    manifest = splits.load_manifest(data_dir, "kfold")
    leaky = copy.deepcopy(manifest)
    test_source = leaky["folds"][1]["test"][0]
    leaky["folds"][1]["train"].append(f"{test_source}__rot")  # an augmented copy of a test image in train
    with pytest.raises(ValueError, match=rf"fold 'fold1': source id\(s\) \['{test_source}'\] in both train and test"):
        splits.check_manifest(leaky, metadata)
    derived = copy.deepcopy(manifest)
    derived["folds"][0]["val"].append(f"{derived['folds'][0]['val'][0]}__hflip")
    with pytest.raises(ValueError, match=r"fold 'fold0': val holds augmented copies"):
        splits.check_manifest(derived, metadata)


def test_stale_or_malformed_manifests_are_refused(copy_data_dir):
    folder = copy_data_dir()
    manifest = fileio.read_json(splits.manifest_path(folder, "holdout"))
    manifest["folds"][0]["test"].append("no_such_image")
    fileio.write_json(splits.manifest_path(folder, "holdout"), manifest)
    with pytest.raises(ValueError, match=r"holdout\.json: fold 'holdout': id\(s\) \['no_such_image'\] are not in"):
        splits.load_manifest(folder, "holdout")
    with pytest.raises(ValueError, match="no 'folds' list"):
        splits.check_manifest({"protocol": "kfold", "folds": []}, ingest.read_metadata(folder))
    with pytest.raises(ValueError, match=r"missing key\(s\) \['val'\]"):
        splits.check_manifest({"folds": [{"name": "a", "train": [], "test": []}]}, ingest.read_metadata(folder))


def test_load_manifest_and_fold_ids_errors(data_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown protocol 'random'"):
        splits.load_manifest(data_dir, "random")
    with pytest.raises(FileNotFoundError, match=r"splits/kfold\.json: file not found \(run `python -m heritage data"):
        splits.load_manifest(tmp_path, "kfold")
    manifest = splits.load_manifest(data_dir, "kfold")
    train, val, test = splits.fold_ids(manifest, "fold2")
    assert (train, val, test) == tuple(manifest["folds"][2][p] for p in splits.PARTS)
    with pytest.raises(ValueError, match=r"unknown fold 'fold9' in the 'kfold' manifest \(folds: \['fold0', 'fold1'"):
        splits.fold_ids(manifest, "fold9")


def test_bad_parameters_and_too_small_datasets():
    metadata = artefact_like_metadata()
    with pytest.raises(ValueError, match=r"k=1 folds need 2 <= k <= 417"):
        splits.build_manifest(metadata, "kfold", k=1)
    with pytest.raises(ValueError, match="unknown protocol 'lopo'"):
        splits.build_manifest(metadata, "lopo")
    tiny = metadata[metadata["source_id"].isin(["src000", "src200"])]  # 2 sources
    with pytest.raises(ValueError, match=r"no samples in \['val', 'test'\] \(2 source images are too few"):
        splits.build_manifest(tiny, "holdout")


def test_cli_split_all(copy_data_dir, capsys):
    folder = copy_data_dir()
    for protocol in splits.PROTOCOLS:
        splits.manifest_path(folder, protocol).unlink()
    assert cli.main(["data", "split", "--data", str(folder), "--protocol", "all", "--k", "4"]) == 0
    assert len(splits.load_manifest(folder, "kfold")["folds"]) == 4
    assert all(splits.manifest_path(folder, p).is_file() for p in splits.PROTOCOLS)
    assert "kfold.json: train/val/test fold0" in capsys.readouterr().out
