"""heritage.data.splits: grouped, stratified manifests for every protocol, and the leak check."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from heritage import cli, errors, fileio
from heritage.data import datafolder, splits

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
    return pd.DataFrame(rows, columns=list(datafolder.METADATA_COLUMNS))


def parts_by_source(fold: dict, metadata: pd.DataFrame) -> dict[str, set[str]]:
    source_of = dict(zip(metadata["id"], metadata["source_id"]))
    return {part: {source_of[i] for i in fold[part]} for part in splits.PARTS}


@pytest.mark.parametrize("protocol", splits.PROTOCOLS)
def test_manifests_do_not_leak_and_follow_the_contract(data_dir, protocol):
    metadata = datafolder.read_metadata(data_dir)
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
    metadata = datafolder.read_metadata(data_dir).set_index("id")
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
    metadata = datafolder.read_metadata(data_dir)
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
    with pytest.raises(ValueError, match=r"holdout\.json: stale manifest: fold 'holdout': id\(s\) \['no_such_image'\] "
                                         r"are not in metadata\.csv; re-run `python -m heritage data split --data "):
        splits.load_manifest(folder, "holdout")
    with pytest.raises(ValueError, match="no 'folds' list"):
        splits.check_manifest({"protocol": "kfold", "folds": []}, datafolder.read_metadata(folder))
    with pytest.raises(ValueError, match=r"missing key\(s\) \['val'\]"):
        splits.check_manifest({"folds": [{"name": "a", "train": [], "test": []}]}, datafolder.read_metadata(folder))


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
    with pytest.raises(ValueError, match=r"holdout needs >= 6 source images \(a test part, then a 12\.5% validation "
                                         r"part of the rest\); this set has 2"):
        splits.build_manifest(tiny, "holdout")


def test_cli_split_all(copy_data_dir, capsys):
    folder = copy_data_dir()
    for protocol in splits.PROTOCOLS:
        splits.manifest_path(folder, protocol).unlink()
    assert cli.main(["data", "split", "--data", str(folder), "--protocol", "all", "--k", "4"]) == 0
    assert len(splits.load_manifest(folder, "kfold")["folds"]) == 4
    assert all(splits.manifest_path(folder, p).is_file() for p in splits.PROTOCOLS)
    assert "kfold.json: train/val/test fold0" in capsys.readouterr().out


# -- stale manifests ------------------------------------------------------------------------------


def grown_metadata(metadata: pd.DataFrame, factor: int) -> pd.DataFrame:
    """``metadata`` with ``factor - 1`` more copies of every source (new ids): a larger source ingested."""
    copies = [metadata]
    for n in range(1, factor):
        more = metadata.copy()
        more["id"] = f"more{n}_" + more["id"]
        more["source_id"] = f"more{n}_" + more["source_id"]
        copies.append(more)
    return pd.concat(copies, ignore_index=True)


def test_manifests_record_the_metadata_fingerprint(data_dir):
    manifest = splits.load_manifest(data_dir, "holdout")
    assert manifest["metadata_sha256"] == datafolder.metadata_fingerprint(data_dir)


def test_a_manifest_of_a_smaller_earlier_dataset_is_refused_as_stale(copy_data_dir, capsys):
    """The issue: a larger source ingested and augmented into the folder, old splits/*.json kept."""
    folder = copy_data_dir()
    datafolder.write_metadata(folder, grown_metadata(datafolder.read_metadata(folder), 5))  # 24 -> 120 sources
    for protocol in splits.PROTOCOLS:
        with pytest.raises(ValueError, match=rf"{protocol}\.json: stale manifest: built from another metadata\.csv "
                                             rf".*; re-run `python -m heritage data split --data {folder} "
                                             rf"--protocol {protocol}`$"):
            splits.load_manifest(folder, protocol)
    assert cli.main(["data", "split", "--data", str(folder), "--protocol", "all"]) == 0  # the advice works
    train, val, test = splits.fold_ids(splits.load_manifest(folder, "holdout"), "holdout")
    assert len(train) + 4 * (len(val) + len(test)) == 480


def drop_fingerprint(folder, protocol: str) -> None:
    """The manifest as versions before metadata_sha256 wrote it."""
    manifest = fileio.read_json(splits.manifest_path(folder, protocol))
    del manifest["metadata_sha256"]
    fileio.write_json(splits.manifest_path(folder, protocol), manifest)


def test_a_manifest_without_fingerprint_falls_back_to_the_coverage_check(copy_data_dir):
    """Manifests written before metadata_sha256: still loaded while they cover metadata.csv, refused once not."""
    folder = copy_data_dir()
    for protocol in splits.PROTOCOLS:  # as an older version wrote them
        drop_fingerprint(folder, protocol)
    assert splits.load_manifest(folder, "kfold")["folds"]
    datafolder.write_metadata(folder, grown_metadata(datafolder.read_metadata(folder), 5))
    with pytest.raises(ValueError, match=r"holdout\.json: stale manifest: fold 'holdout' covers 24 of 120 source "
                                         r"images \(96 of 480 samples\) of metadata\.csv; missing e\.g\. \['more1_"
                                         r".*; re-run `python -m heritage data split --data .* --protocol holdout`"):
        splits.load_manifest(folder, "holdout")


def test_a_split_made_before_augmenting_is_refused_as_stale(copy_data_dir):
    folder = copy_data_dir()
    metadata = datafolder.read_metadata(folder)
    datafolder.write_metadata(folder, metadata[metadata["transform"] == datafolder.IDENTITY])  # originals only
    splits.write_manifests(folder, ["kfold"], k=4, seed=7)
    drop_fingerprint(folder, "kfold")  # the coverage check alone must see the missing copies
    datafolder.write_metadata(folder, metadata)  # then augmented
    with pytest.raises(ValueError, match=r"fold 'fold0': train lacks \d+ sample\(s\) of its source images in "
                                         r"metadata\.csv, e\.g\. \['.*__hflip'.*\(augmented after the split\?\); "
                                         r"re-run `python -m heritage data split --data .* --protocol kfold --k 4 "
                                         r"--seed 7`"):
        splits.load_manifest(folder, "kfold")


def test_a_relabelled_metadata_csv_makes_the_manifest_stale(copy_data_dir):
    """Same ids, another material: the coverage still holds, the fingerprint does not."""
    folder = copy_data_dir()
    metadata = datafolder.read_metadata(folder)
    metadata.loc[0, "material"] = "Ceramic" if metadata.loc[0, "material"] != "Ceramic" else "Paper"
    datafolder.write_metadata(folder, metadata)
    with pytest.raises(ValueError, match=r"lomo\.json: stale manifest: built from another metadata\.csv"):
        splits.load_manifest(folder, "lomo")


def test_malformed_manifest_files_are_refused_with_the_file_named(copy_data_dir):
    folder = copy_data_dir()
    fileio.write_json(splits.manifest_path(folder, "loco"), ["not", "a", "manifest"])
    with pytest.raises(ValueError, match=r"loco\.json: not a split manifest \(expected a JSON object, found list\)"):
        splits.load_manifest(folder, "loco")
    manifest = fileio.read_json(splits.manifest_path(folder, "kfold"))
    manifest["folds"][0]["test"] = manifest["folds"][0]["test"][0]  # a string, not a list
    fileio.write_json(splits.manifest_path(folder, "kfold"), manifest)
    with pytest.raises(ValueError, match=r"kfold\.json: fold 'fold0': \['test'\] must be lists of sample ids"):
        splits.load_manifest(folder, "kfold")


# -- protocols a data set cannot support --------------------------------------------------------


def subset(metadata: pd.DataFrame, n_sources: int, **columns: str) -> pd.DataFrame:
    """The first ``n_sources`` sources of ``metadata`` (with their copies), ``columns`` set to one value."""
    keep = sorted(set(metadata["source_id"]))[:n_sources]
    return metadata[metadata["source_id"].isin(keep)].assign(**columns).reset_index(drop=True)


@pytest.mark.parametrize(("protocol", "column", "plural"), [("lomo", "material", "materials"),
                                                            ("loco", "content", "content types")])
def test_leave_one_out_on_a_single_group_says_what_is_missing(protocol, column, plural):
    one = subset(artefact_like_metadata(), 30, **{column: "Film emulsion"})
    with pytest.raises(ValueError, match=rf"^{protocol} needs >= 2 {plural}; this set has 1: Film emulsion$"):
        splits.build_manifest(one, protocol)


def test_leave_one_out_with_too_little_outside_a_group_names_the_group():
    metadata = subset(artefact_like_metadata(), 10, material="Paper")
    metadata.loc[metadata["source_id"].isin(["src000", "src001", "src002", "src003", "src004", "src005"]),
                 "material"] = "Wood"  # 6 Wood and 4 Paper sources: the Wood fold trains on 4 only
    with pytest.raises(ValueError, match=r"lomo fold 'wood': only 4 source image\(s\) outside 'Wood', too few to "
                                         r"train on and carve a validation part \(12\.5% of them needs >= 5\)"):
        splits.build_manifest(metadata, "lomo")


@pytest.mark.parametrize(("protocol", "k"), [("holdout", 3), ("kfold", 2), ("kfold", 3), ("kfold", 5)])
def test_tiny_sets_build_from_the_stated_minimum_and_fail_clearly_below(protocol, k):
    """No numpy error for any size: below ``fewest_sources`` an InputError names the minimum, from it a manifest."""
    metadata = artefact_like_metadata()
    fewest = splits.fewest_sources(protocol, k)
    for n in range(1, fewest + 3):
        tiny = subset(metadata, n)
        if n >= fewest:
            manifest = splits.build_manifest(tiny, protocol, k=k)
            assert all(fold[part] for fold in manifest["folds"] for part in splits.PARTS)
        elif protocol == "kfold" and n < k:
            with pytest.raises(errors.InputError, match=rf"k={k} folds need 2 <= k <= {n} "):
                splits.build_manifest(tiny, protocol, k=k)
        else:
            with pytest.raises(errors.InputError, match=rf"^{protocol} needs >= {fewest} source images .*; "
                                                        rf"this set has {n}$"):
                splits.build_manifest(tiny, protocol, k=k)


def write_metadata_only(folder, metadata: pd.DataFrame):
    """A data folder of metadata.csv alone: enough for `data split`, which reads no pixels."""
    datafolder.write_metadata(folder, metadata)
    return folder


def test_cli_split_all_writes_what_it_can_and_exits_1_naming_the_rest(tmp_path, capsys):
    folder = write_metadata_only(tmp_path, subset(artefact_like_metadata(), 40, material="Film emulsion"))
    assert cli.main(["data", "split", "--data", str(folder), "--protocol", "all"]) == errors.EXIT_FAILED
    captured = capsys.readouterr()
    assert captured.err == ("heritage data split: wrote holdout, kfold, loco, leaky; could not build lomo: lomo needs "
                            ">= 2 materials; this set has 1: Film emulsion\n")
    assert "kfold.json: train/val/test fold0" in captured.out
    assert ([p for p in splits.ALL_PROTOCOLS if splits.manifest_path(folder, p).is_file()]
            == ["holdout", "kfold", "loco", "leaky"])
    assert splits.load_manifest(folder, "loco")["folds"]


def test_cli_split_exits_2_when_nothing_can_be_built(tmp_path, capsys):
    folder = write_metadata_only(tmp_path, subset(artefact_like_metadata(), 3, material="Paper", content="Line art"))
    assert cli.main(["data", "split", "--data", str(folder), "--protocol", "lomo"]) == errors.EXIT_BAD_INPUT
    assert capsys.readouterr().err == "heritage data split: lomo needs >= 2 materials; this set has 1: Paper\n"
    assert cli.main(["data", "split", "--data", str(folder), "--protocol", "all"]) == errors.EXIT_FAILED
    err = capsys.readouterr().err  # 12 samples: only the leaky split, which needs 2 samples, can be built
    assert err.startswith("heritage data split: wrote leaky; could not build holdout, kfold, loco, lomo: holdout "
                          "needs >= 6 source images")
    assert "kfold needs >= 8 source images" in err and "loco needs >= 2 content types" in err
    one = write_metadata_only(tmp_path / "one", subset(artefact_like_metadata(), 1).iloc[:1])
    assert cli.main(["data", "split", "--data", str(one), "--protocol", "all"]) == errors.EXIT_BAD_INPUT
    assert capsys.readouterr().err.startswith("heritage data split: no manifest could be built: holdout needs >= 6")
    assert not (one / splits.SPLITS_DIR).exists()
    with pytest.raises(errors.CommandFailed, match="could not build lomo"):  # the library call fails the same way
        splits.write_manifests(write_metadata_only(tmp_path / "b", subset(artefact_like_metadata(), 40,
                                                                              material="Paper")), splits.PROTOCOLS)


# -- the seeds' leaky protocol (issue 12) -------------------------------------------------------------


def test_leaky_split_puts_copies_of_one_source_in_train_and_test_as_the_seeds_did():
    metadata = artefact_like_metadata()
    manifest = splits.build_manifest(metadata, splits.LEAKY, seed=42)
    assert manifest["leaky"] is True and splits.is_leaky(manifest)
    (fold,) = manifest["folds"]
    assert fold["name"] == splits.LEAKY
    assert fold["val"] == fold["test"]  # the seeds selected the best epoch on the part they reported
    assert len(fold["train"]) == int(0.8 * len(metadata)) and len(fold["train"]) + len(fold["test"]) == len(metadata)
    sources = parts_by_source(fold, metadata)
    shared = sources["train"] & sources["test"]
    assert len(shared) > 0.5 * len(sources["test"])  # most held-out artworks have a copy in train
    assert set(fold["test"]) - set(metadata.loc[metadata["transform"] == "identity", "id"])  # copies are tested
    # the seeds' permutation: np.random.seed(42); np.random.permutation(n) over the sorted file names
    np.random.seed(42)
    order = np.random.permutation(len(metadata))
    ids = sorted(metadata["id"])
    assert set(fold["train"]) == {ids[i] for i in order[: int(0.8 * len(ids))]}


def test_leaky_split_is_deterministic_for_a_seed():
    metadata = artefact_like_metadata()
    assert splits.build_manifest(metadata, "leaky", seed=42) == splits.build_manifest(metadata, "leaky", seed=42)
    assert (splits.build_manifest(metadata, "leaky", seed=42)["folds"][0]["test"]
            != splits.build_manifest(metadata, "leaky", seed=1)["folds"][0]["test"])


def test_the_leak_check_is_skipped_for_the_marked_leaky_protocol_only(data_dir):
    metadata = datafolder.read_metadata(data_dir)
    leaky = splits.build_manifest(metadata, "leaky")
    splits.check_manifest(leaky, metadata)  # leaks on purpose, and says so
    unmarked = {key: value for key, value in leaky.items() if key != "leaky"}
    with pytest.raises(errors.InputError, match=r"only the 'leaky' protocol is marked \"leaky\": true, and it must be"):
        splits.check_manifest(unmarked, metadata)
    for protocol in splits.PROTOCOLS:  # the mark does not excuse a leak anywhere else
        manifest = copy.deepcopy(splits.load_manifest(data_dir, protocol))
        fold = manifest["folds"][0]
        fold["train"].append(f"{fold['test'][0]}__rot")
        with pytest.raises(errors.InputError, match="leaky manifest: .* in both train and test"):
            splits.check_manifest(manifest, metadata)
        manifest["leaky"] = True
        with pytest.raises(errors.InputError, match=r"only the 'leaky' protocol is marked"):
            splits.check_manifest(manifest, metadata)
        relabelled = {**leaky, "protocol": protocol}  # a leaky split under an honest protocol's name
        with pytest.raises(errors.InputError, match=r"only the 'leaky' protocol is marked"):
            splits.check_manifest(relabelled, metadata)


def test_a_leaky_manifest_missing_samples_is_stale(copy_data_dir):
    folder = copy_data_dir()
    splits.write_manifests(folder, ["leaky"])
    manifest = fileio.read_json(splits.manifest_path(folder, "leaky"))
    del manifest["metadata_sha256"]  # the coverage check alone must see it
    dropped = manifest["folds"][0]["train"].pop()
    fileio.write_json(splits.manifest_path(folder, "leaky"), manifest)
    with pytest.raises(ValueError, match=rf"leaky\.json: stale manifest: fold 'leaky' lacks 1 sample\(s\) of "
                                         rf"metadata\.csv, e\.g\. \['{dropped}'\]"):
        splits.load_manifest(folder, "leaky")


def test_cli_split_leaky(copy_data_dir, capsys):
    folder = copy_data_dir()
    assert cli.main(["data", "split", "--data", str(folder), "--protocol", "leaky"]) == 0
    assert "leaky.json: train/val/test leaky 76/20/20" in capsys.readouterr().out
    assert splits.fold_names(splits.load_manifest(folder, "leaky")) == ["leaky"]
    with pytest.raises(errors.InputError, match=r"^leaky needs >= 2 samples .*; this set has 1$"):
        splits.build_manifest(subset(artefact_like_metadata(), 1).iloc[:1], "leaky")
