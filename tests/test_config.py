"""heritage.config: POC files -> validated RunConfig, overrides, hashing, run folders, the plan."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from heritage import config
from heritage.config import resolve
from heritage.config import ConfigError, RunConfig, load_run_config, plan, run_dir
from heritage.errors import MissingInputError
from heritage.report import design
from heritage.report.paired import BUDGET_FIELDS


def test_every_poc_resolves_for_every_profile_and_encoder(data_dir):
    for poc in config.available_pocs():
        for profile in config.PROFILES:
            for encoder in config.poc_encoders(poc):
                resolved = load_run_config(poc, profile, encoder=encoder, overrides={"data_dir": str(data_dir)})
                assert (resolved.poc, resolved.encoder, resolved.profile) == (poc, encoder, profile)
                assert resolved.pretrained is (profile == "full")  # the seeds' ImageNet weights; smoke: none (offline)


def test_validating_a_config_imports_neither_torch_nor_the_model_zoo(data_dir):
    # Every POC x profile x encoder, with a hierarchical one and loss_params: the names and size rules
    # come from heritage.modeling.registry, so `--help` and config checks do not pay for torch, SMP and timm.
    code = ("import sys; from heritage import config\n"
            "for poc in config.available_pocs():\n"
            "    for profile in config.PROFILES:\n"
            "        for encoder in config.poc_encoders(poc):\n"
            f"            config.load_run_config(poc, profile, encoder=encoder, overrides={{'data_dir': {str(data_dir)!r}}})\n"
            "config.load_run_config('poc58_baseline', 'smoke', overrides={'loss_params': {'smooth': 0.5}})\n"
            "try:\n"
            "    config.load_run_config('poc58_baseline', 'smoke', overrides={'loss_params': {'gamma': -1}})\n"
            "except config.ConfigError as err:\n"
            "    print(err)\n"
            "print(sorted(m for m in ('torch', 'segmentation_models_pytorch', 'timm') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    refusal, imported = done.stdout.strip().splitlines()[-2:]
    assert "loss_params: {'gamma': -1} do not suit loss 'dice': gamma must be a number >= 0" in refusal
    assert imported == "[]"


def test_the_four_pocs_exist():
    assert config.available_pocs() == ["poc55_multitask", "poc58_baseline", "poc59_dicefocal", "poc59v2_flagship"]


def test_flagship_full_profile_has_the_seeds_adaptive_batches_and_scaled_learning_rates(data_dir):
    expected = {"convnext_tiny": (96, 1e-3), "mit_b3": (32, 1e-3 / 3), "maxvit_tiny": (48, 5e-4)}
    for encoder, (batch, lr) in expected.items():
        resolved = load_run_config("poc59v2_flagship", "full", encoder=encoder, overrides={"data_dir": str(data_dir)})
        assert resolved.batch_size == batch and resolved.lr == pytest.approx(lr)
        assert (resolved.image_size, resolved.epochs, resolved.protocol) == (384, 50, "kfold")
        assert (resolved.loss, resolved.class_weights, resolved.class_weight_max_ratio) == (
            "dice", "inverse_sqrt_log_scaled", 36.0)
        assert resolved.grad_clip is None and resolved.amp == "auto"


def test_poc_settings_follow_the_seeds(data_dir):
    def full(poc: str) -> RunConfig:
        return load_run_config(poc, "full", overrides={"data_dir": str(data_dir)})

    multitask, baseline, dicefocal = full("poc55_multitask"), full("poc58_baseline"), full("poc59_dicefocal")
    assert (multitask.architecture, multitask.loss, multitask.hierarchical) == ("hierarchical_upernet", "hierarchical", True)
    assert (baseline.architecture, baseline.loss, baseline.class_weights) == ("unet", "dice", None)
    assert config.poc_encoders("poc58_baseline") == ["convnext_tiny", "swin_tiny", "coatnet_0"]
    assert (dicefocal.loss, dicefocal.class_weights, dicefocal.image_size) == ("dice_focal", "inverse_sqrt", 256)
    assert config.poc_encoders("poc59_dicefocal") == ["convnext_tiny", "swin_tiny", "maxvit_tiny"]


def test_variants_change_one_thing_and_the_main_variant_is_the_main_configuration(data_dir):
    def flagship(variant: str | None) -> RunConfig:
        return load_run_config("poc59v2_flagship", "full", variant=variant, overrides={"data_dir": str(data_dir)})

    main = flagship(None)
    assert flagship("dice_balanced") == main  # the ablation's name for the main configuration
    assert flagship("dice").class_weights is None
    assert flagship("dice_focal").loss == "dice_focal"
    extreme = flagship("dice_extreme")
    assert (extreme.class_weights, extreme.class_weight_max_ratio) == ("inverse", None)
    assert flagship("res256").image_size == 256
    for variant in ("dice", "dice_focal", "dice_extreme", "res256"):
        differing = {f.name for f in dataclasses.fields(RunConfig)
                     if getattr(flagship(variant), f.name) != getattr(main, f.name)}
        assert differing <= {"variant", "loss", "class_weights", "class_weight_max_ratio", "image_size"}


def test_the_thin_recipe_is_a_flagship_variant_in_both_profiles_at_the_main_budget(data_dir):
    for profile in ("full", "smoke"):
        main, thin = (load_run_config("poc59v2_flagship", profile, variant=variant, overrides={"data_dir": str(data_dir)})
                      for variant in (None, design.THIN_VARIANT))
        assert (thin.sampling, thin.full_resolution_skips, thin.tta, thin.calibrate_thin) == ("patch", True, "flip", True)
        assert not (main.calibrate_thin or main.full_resolution_skips)
        assert thin.loss_params["skeleton_recall"] > 0
        assert all(getattr(thin, name) == getattr(main, name) for name in BUDGET_FIELDS), profile  # RQ6 compares
        assert any(c.variant == design.THIN_VARIANT for c in plan(profile, ["poc59v2_flagship"], data_dir)), profile


def test_a_variant_restricted_to_some_encoders_refuses_the_others(data_dir):
    with pytest.raises(ConfigError, match="variant 'dice' runs only on encoders convnext_tiny, not 'mit_b3'"):
        load_run_config("poc59v2_flagship", "full", encoder="mit_b3", variant="dice",
                        overrides={"data_dir": str(data_dir)})


def test_lr_follows_the_scaling_rule_unless_set(data_dir):
    scaled = load_run_config("poc58_baseline", "smoke", overrides={"data_dir": str(data_dir), "batch_size": 4,
                                                                   "base_batch_size": 8, "base_lr": 1e-3})
    assert scaled.lr == pytest.approx(5e-4)
    fixed = load_run_config("poc58_baseline", "smoke", overrides={"data_dir": str(data_dir), "lr": 0.01})
    assert fixed.lr == 0.01


def test_string_overrides_are_parsed_as_yaml():
    parsed = config.parse_overrides(["epochs=3", "grad_clip=null", "lr=5e-3", "amp=bf16", "preload=true",
                                     "loss_params={gamma: 3}"])
    assert parsed == {"epochs": 3, "grad_clip": None, "lr": 5e-3, "amp": "bf16", "preload": True,
                      "loss_params": {"gamma": 3}}


def test_yaml_booleans_for_on_off_modes_are_normalised(data_dir):
    # YAML 1.1 reads amp=off as false: it must still mean "off", not fail or turn AMP on.
    resolved = load_run_config("poc58_baseline", "smoke", overrides=["amp=off", "channels_last=on",
                                                                     f"data_dir={data_dir}"])
    assert (resolved.amp, resolved.channels_last) == ("off", "on")
    with pytest.raises(ConfigError, match="'epochs' is not of the form key=value"):
        config.parse_overrides(["epochs"])


@pytest.mark.parametrize(("overrides", "message"), [
    ({"epoch": 3}, r"unknown key 'epoch' \(did you mean 'epochs'\?\)"),
    ({"epochs": "three"}, r"epochs: expected int, got 'three' \(str\)"),
    ({"epochs": True}, r"epochs: expected int, got True \(bool\)"),
    ({"epochs": 2.5}, r"epochs: expected int, got 2.5 \(float\)"),
    ({"epochs": 0}, r"epochs: must be positive, got 0"),
    ({"batch_size": -8}, r"batch_size: must be positive, got -8"),
    ({"lr": -1e-3}, r"lr: must be positive, got -0.001"),
    ({"pretrained": "yes"}, r"pretrained: expected bool, got 'yes' \(str\)"),
    ({"image_size": 100}, r"image_size: 100 does not suit encoder 'convnext_tiny'.*multiple of 32"),
    ({"amp": "fp8"}, r"amp: unknown value 'fp8'; choose one of auto, bf16, fp16, off"),
    ({"loss": "dise"}, r"loss: unknown value 'dise' \(did you mean 'dice'\?\)"),
    ({"class_weights": "inverse_cube"}, r"class_weights: unknown value 'inverse_cube'"),
    ({"protocol": "leave_one_out"}, r"protocol: unknown value 'leave_one_out'"),
    ({"architecture": "hierarchical_upernet"}, r"loss: 'dice' does not fit architecture 'hierarchical_upernet'"),
    ({"loss_params": {"alpha": 1}}, r"loss_params: \{'alpha': 1\} do not suit loss 'dice'"),
    ({"class_weight_max_ratio": 0.5}, r"class_weight_max_ratio: a max/min ratio is at least 1"),
    ({"tta": "rotate"}, r"tta: unknown value 'rotate'; choose one of none, flip"),
    ({"loss_params": {"skeleton_recall": -1}}, r"loss_params: .* skeleton_recall must be a number >= 0"),
    ({"architecture": "hierarchical_upernet", "loss": "hierarchical", "full_resolution_skips": True},
     r"full_resolution_skips: architecture 'hierarchical_upernet' has no decoder blocks at full resolution"),
    ({"residual_input": True}, r"residual_input: the residual evidence enters through the full-resolution input stem"),
])
def test_bad_values_raise_errors_naming_the_key_and_the_value(data_dir, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_run_config("poc58_baseline", "smoke", overrides={"data_dir": str(data_dir), **overrides})


def test_window_attention_encoders_refuse_sizes_they_cannot_take(data_dir):
    with pytest.raises(ConfigError, match=r"image_size: 32 does not suit encoder 'maxvit_tiny'.*at least 64"):
        load_run_config("poc59v2_flagship", "smoke", encoder="maxvit_tiny",
                        overrides={"data_dir": str(data_dir), "image_size": 32})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"poc": "poc60"}, r"unknown POC 'poc60'.*known POCs: poc55_multitask"),
    ({"poc": "poc58_baseline", "encoder": "resnet50"}, r"encoder 'resnet50' is not one of this POC's encoders"),
    ({"poc": "poc58_baseline", "encoder": "mit_b3"}, r"encoder 'mit_b3' is not one of this POC's encoders"),
    ({"poc": "poc58_baseline", "variant": "dice"}, r"unknown variant 'dice'.*variants: none"),
    ({"poc": "poc59v2_flagship", "variant": "dice_focl"}, r"unknown variant 'dice_focl' \(did you mean 'dice_focal'\?\)"),
    ({"poc": "poc58_baseline", "profile": "medium"}, r"unknown profile 'medium'"),
    ({"poc": "poc59v2_flagship", "fold": "fold7"}, r"unknown fold 'fold7' for protocol 'kfold'; the manifest has fold0, fold1, fold2"),
])
def test_bad_selections_raise_clear_errors(data_dir, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        load_run_config(**kwargs, overrides={"data_dir": str(data_dir)})


def test_default_fold_is_the_first_of_the_manifest(data_dir):
    assert load_run_config("poc59v2_flagship", "smoke", overrides={"data_dir": str(data_dir)}).fold == "fold0"
    assert load_run_config("poc58_baseline", "smoke", overrides={"data_dir": str(data_dir)}).fold == "holdout"


def test_config_hash_is_stable_and_ignores_where_runs_are_written(data_dir, tmp_path):
    base = load_run_config("poc58_baseline", "smoke", overrides={"data_dir": str(data_dir)})
    assert base.config_hash() == load_run_config("poc58_baseline", "smoke",
                                                 overrides={"data_dir": str(data_dir)}).config_hash()
    assert len(base.config_hash()) == 16
    assert dataclasses.replace(base, runs_root=str(tmp_path)).config_hash() == base.config_hash()
    assert dataclasses.replace(base, num_workers=4).config_hash() == base.config_hash()
    assert dataclasses.replace(base, epochs=base.epochs + 1).config_hash() != base.config_hash()
    assert dataclasses.replace(base, seed=7).config_hash() != base.config_hash()


def test_config_hash_follows_the_data_content_not_its_path(data_dir, tmp_path):
    base = load_run_config("poc59v2_flagship", "smoke", overrides={"data_dir": str(data_dir)})
    copy = Path(shutil.copytree(data_dir, tmp_path / "elsewhere" / "data"))
    moved = dataclasses.replace(base, data_dir=str(copy))
    assert moved.config_hash() == base.config_hash()  # a moved or shared data folder keeps its runs

    metadata = copy / "metadata.csv"
    lines = metadata.read_text().splitlines()
    row = lines[-1].split(",")
    row[1] = "Relabelled material"  # one sample's material rewritten in place
    metadata.write_text("\n".join([*lines[:-1], ",".join(row)]) + "\n")
    changed_metadata = moved.config_hash()
    assert changed_metadata != base.config_hash()

    manifest_path = copy / "splits" / "kfold.json"
    manifest = json.loads(manifest_path.read_text())
    first = manifest["folds"][0]
    first["val"], first["test"] = first["val"][1:], [*first["test"], first["val"][0]]  # one id moved
    manifest_path.write_text(json.dumps(manifest))
    changed_manifest = moved.config_hash()
    assert changed_manifest not in (base.config_hash(), changed_metadata)
    (copy / "splits" / "holdout.json").write_text("{}")  # another protocol's manifest is no input of this run
    assert moved.config_hash() == changed_manifest


def test_config_hash_needs_the_data_folder_and_names_what_is_missing(data_dir, tmp_path):
    base = load_run_config("poc58_baseline", "smoke", overrides={"data_dir": str(data_dir)})
    with pytest.raises(MissingInputError, match=rf"data_dir: {tmp_path / 'none'} does not exist .*data ingest"):
        dataclasses.replace(base, data_dir=str(tmp_path / "none")).config_hash()
    with pytest.raises(MissingInputError, match=rf"{tmp_path / 'metadata.csv'}: file not found"):
        dataclasses.replace(base, data_dir=str(tmp_path)).config_hash()
    copy = Path(shutil.copytree(data_dir, tmp_path / "data"))
    (copy / "splits" / "holdout.json").unlink()
    with pytest.raises(MissingInputError, match=r"splits/holdout.json: file not found .*data split"):
        dataclasses.replace(base, data_dir=str(copy)).config_hash()


def test_config_yaml_records_the_data_folder_and_its_fingerprint(data_dir):
    resolved = load_run_config("poc58_baseline", "smoke", overrides={"data_dir": str(data_dir)})
    written = yaml.safe_load(resolved.to_yaml())
    assert written["data_dir"] == str(data_dir) and written["config_hash"] == resolved.config_hash()
    assert set(written["data_fingerprint"]) == {"metadata", "manifest"}


def test_yaml_round_trip_keeps_the_config_and_its_hash(data_dir, tmp_path):
    original = load_run_config("poc59v2_flagship", "full", variant="dice_focal", overrides={"data_dir": str(data_dir)})
    path = tmp_path / "config.yaml"
    path.write_text(original.to_yaml())
    assert yaml.safe_load(path.read_text())["config_hash"] == original.config_hash()
    restored = RunConfig.from_yaml(path)
    assert restored == original and restored.config_hash() == original.config_hash()


def test_from_yaml_names_the_file_and_the_bad_key(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("poc: poc58_baseline\nencoder: convnext_tiny\nbatchsize: 8\n")
    with pytest.raises(ConfigError, match=rf"{path}: unknown key 'batchsize' \(did you mean 'batch_size'\?\)"):
        RunConfig.from_yaml(path)
    path.write_text("poc: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{path}: not valid YAML"):
        RunConfig.from_yaml(path)
    path.write_text("encoder: convnext_tiny\n")
    with pytest.raises(ConfigError, match=rf"{path}: missing required key 'poc'"):
        RunConfig.from_yaml(path)


def test_run_dir_follows_the_layout(data_dir, tmp_path):
    main = load_run_config("poc59v2_flagship", "smoke", encoder="mit_b3", fold="fold1",
                           overrides={"data_dir": str(data_dir), "runs_root": str(tmp_path)})
    assert run_dir(main) == tmp_path / "poc59v2_flagship" / "mit_b3" / "kfold-fold1"
    variant = load_run_config("poc59v2_flagship", "smoke", variant="dice_focal",
                              overrides={"data_dir": str(data_dir), "runs_root": str(tmp_path)})
    assert run_dir(variant) == tmp_path / "poc59v2_flagship-dice_focal" / "convnext_tiny" / "kfold-fold0"


def test_plan_lists_every_run_of_the_profile_in_a_stable_order(data_dir):
    smoke = plan("smoke", data_dir=data_dir)
    assert smoke == plan("smoke", data_dir=data_dir)
    cells = [(c.poc, c.variant, c.encoder, c.fold) for c in smoke]
    assert len(set(cells)) == len(cells)
    assert {c.poc for c in smoke} == set(config.available_pocs())
    assert all(c.profile == "smoke" and c.data_dir == str(data_dir) for c in smoke)
    for poc in config.available_pocs():  # the main configuration comes before the variants
        variants = [c.variant for c in smoke if c.poc == poc]
        assert variants == sorted(variants, key=lambda v: v is not None)

    full = plan("full", pocs=["poc59v2_flagship"], data_dir=data_dir)
    main = [(c.encoder, c.fold) for c in full if c.variant is None]
    assert main == [(e, f) for e in ("convnext_tiny", "mit_b3", "maxvit_tiny") for f in ("fold0", "fold1", "fold2")]
    assert {c.encoder for c in full if c.variant in ("dice", "dice_focal", "dice_extreme")} == {"convnext_tiny"}
    assert "dice_balanced" not in {c.variant for c in full}


def test_plan_needs_the_split_manifest(tmp_path):
    with pytest.raises(ConfigError, match=r"splits/holdout.json: file not found"):
        plan("smoke", pocs=["poc58_baseline"], data_dir=tmp_path)


def test_poc_files_are_package_data():
    for poc in config.available_pocs():
        path = config.poc_path(poc)
        assert Path(path).is_file() and path.suffix == ".yaml"
        assert set(config.load_poc(poc)["profiles"]) == {"full", "smoke"}


def test_selection_overrides_take_effect(data_dir):
    overrides = [f"data_dir={data_dir}", "protocol=kfold", "fold=fold2"]
    assert load_run_config("poc58_baseline", "smoke", overrides=overrides).split_name == "kfold-fold2"
    chosen = load_run_config("poc59v2_flagship", overrides=[f"data_dir={data_dir}", "encoder=mit_b3", "profile=full"])
    assert (chosen.encoder, chosen.profile, chosen.image_size) == ("mit_b3", "full", 384)
    variant = load_run_config("poc59v2_flagship", overrides=[f"data_dir={data_dir}", "variant=dice_focal"])
    assert (variant.variant, variant.loss) == ("dice_focal", "dice_focal")
    same = load_run_config("poc58_baseline", "smoke", fold="holdout", overrides={"data_dir": str(data_dir),
                                                                                 "fold": "holdout"})
    assert same.fold == "holdout"  # the same value given twice is no conflict


@pytest.mark.parametrize(("kwargs", "override", "message"), [
    ({"fold": "fold1"}, "fold=fold2", r"fold given twice with different values: 'fold1' \(--fold\) and 'fold2'"),
    ({"encoder": "convnext_tiny"}, "encoder=mit_b3", r"encoder given twice .*'convnext_tiny' \(--encoder\) and 'mit_b3'"),
    ({"profile": "smoke"}, "profile=full", r"profile given twice .*'smoke' \(--profile\) and 'full'"),
    ({"variant": "dice"}, "variant=res256", r"variant given twice .*'dice' \(--variant\) and 'res256'"),
    ({}, "poc=poc58_baseline", r"poc given twice .*'poc59v2_flagship' \(--poc\) and 'poc58_baseline'"),
    ({}, "fold=fold7", r"unknown fold 'fold7' for protocol 'kfold'; the manifest has fold0, fold1, fold2"),
])
def test_selection_overrides_that_contradict_or_miss_are_refused(data_dir, kwargs, override, message):
    with pytest.raises(ConfigError, match=message):
        load_run_config("poc59v2_flagship", overrides=[f"data_dir={data_dir}", override], **kwargs)


def test_a_poc_file_cannot_set_what_selects_the_run(data_dir, monkeypatch):
    real = config.load_poc("poc58_baseline")
    spec = {**real, "settings": {**real["settings"], "fold": "fold1"}}  # the arguments would overwrite it
    monkeypatch.setattr(resolve, "load_poc", lambda poc: spec)  # where load_run_config looks it up
    with pytest.raises(ConfigError, match=r"poc58_baseline.yaml: settings: 'fold' selects the run and cannot be set"):
        load_run_config("poc58_baseline", overrides={"data_dir": str(data_dir)})


def test_plan_refuses_overrides_it_would_replace(data_dir):
    with pytest.raises(ConfigError, match=r"plan: override 'fold' cannot be used"):
        plan("smoke", pocs=["poc58_baseline"], data_dir=data_dir, overrides=["fold=holdout"])


@pytest.mark.parametrize(("name", "value"), [
    ("fold", "../../../../escaped"), ("fold", "a/b"), ("poc", ".hidden"), ("variant", ".."),
])
def test_run_folder_names_must_be_path_safe(data_dir, name, value):
    values = load_run_config("poc58_baseline", "smoke", overrides={"data_dir": str(data_dir)}).to_dict()
    with pytest.raises(ConfigError, match=rf"config.yaml: {name}: {value!r} cannot name a run folder"):
        RunConfig.from_dict({**values, name: value}, source="config.yaml")


def test_plan_folds_may_be_given_per_protocol(data_dir):
    """The flagship's smoke plan names kfold's folds; its leaky variant plans the leaky split's one fold."""
    assert resolve._plan_folds({"kfold": ["fold0"]}, "kfold") == ["fold0"]
    assert resolve._plan_folds({"kfold": ["fold0"]}, "leaky") == "all"
    assert resolve._plan_folds(["fold0"], "leaky") == ["fold0"]  # a list applies to every protocol
    with pytest.raises(ConfigError, match=r"plan\.folds: unknown protocol\(s\) \['kfolds'\]"):
        resolve._plan_folds({"kfolds": ["fold0"]}, "kfold")
    leaky = load_run_config("poc59v2_flagship", "smoke", encoder="mit_b3", variant="seeds_protocol",
                            overrides={"data_dir": str(data_dir)})
    assert (leaky.protocol, leaky.fold, leaky.split_name) == ("leaky", "leaky", "leaky-leaky")
    main = load_run_config("poc59v2_flagship", "smoke", encoder="mit_b3", overrides={"data_dir": str(data_dir)})
    assert leaky.config_hash() != main.config_hash()  # the protocol and its manifest are in the hash
    with pytest.raises(ConfigError, match=r"protocol: unknown value 'leak' \(did you mean 'leaky'\?\)"):
        load_run_config("poc59v2_flagship", "smoke", overrides={"data_dir": str(data_dir), "protocol": "leak"})
