"""Every registry encoder with both architectures: shapes, gradients, sizes, parameters, pretrained paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import segmentation_models_pytorch as smp
import timm
import torch
from huggingface_hub import constants as hub_constants

from heritage import config, errors
from heritage.modeling import losses, models, pretrained_weights, registry, residual
from heritage.data import datasets, taxonomy

CASES = [(encoder, architecture) for encoder in registry.ENCODERS for architecture in registry.ARCHITECTURES]
# Loose bounds around the seeds' reports (UNet 30-45 M, UPerNet ~37 M) at 16 classes.
PARAMS_M_RANGE = {"unet": (25, 50), "hierarchical_upernet": (30, 55)}
WINDOW_ENCODERS = [key for key, spec in registry.ENCODERS.items() if spec.fixed_input_size]


@pytest.mark.parametrize(("encoder", "architecture"), CASES)
def test_forward_backward_shapes_and_parameter_count(encoder, architecture):
    torch.manual_seed(0)
    model = models.build_model(architecture, encoder, image_size=64)
    batch = 1 if architecture == "unet" else 2  # UPerNet's pyramid pooling needs 2+ samples in training
    images = torch.randn(batch, 3, 64, 64)
    target = torch.randint(0, taxonomy.NUM_CLASSES, (batch, 64, 64))
    target[:, :, :8] = taxonomy.IGNORE_INDEX
    output = model(images)
    if architecture == "unet":
        assert output.shape == (batch, taxonomy.NUM_CLASSES, 64, 64)
        loss = losses.build_loss("dice_focal")(output, target)
    else:
        assert {level: tuple(logits.shape) for level, logits in output.items()} == {
            "binary": (2, 2, 64, 64), "coarse": (2, 4, 64, 64), "fine": (2, taxonomy.NUM_CLASSES, 64, 64)}
        loss = losses.build_loss("hierarchical")(output, target)
    loss.backward()
    gradients = {name: parameter.grad for name, parameter in model.named_parameters()}
    assert all(grad is not None and torch.isfinite(grad).all() for grad in gradients.values())
    first_encoder_grad = next(grad for name, grad in gradients.items() if name.startswith("encoder."))
    assert first_encoder_grad.abs().sum() > 0

    params_m = models.count_parameters(model) / 1e6
    print(f"{encoder} {architecture}: {params_m:.1f} M parameters")
    low, high = PARAMS_M_RANGE[architecture]
    assert low < params_m < high


@pytest.mark.parametrize("encoder", ["convnext_tiny", "mit_b3", "maxvit_tiny"])
def test_full_resolution_skips_feed_the_decoders_last_two_blocks(encoder):
    """The input stem's features join the decoder at 1/2 and 1/1 of the input, beside whatever the encoder
    gives at stride 2 (nothing for the stride-4 stems of ConvNeXt and MiT), and are trained."""
    torch.manual_seed(0)
    plain = models.build_model("unet", encoder, image_size=64)
    model = models.build_model("unet", encoder, image_size=64, full_resolution_skips=True)
    assert isinstance(model, models.UnetWithInputSkips)
    full, half = models.INPUT_SKIP_CHANNELS
    stride2 = model.encoder.out_channels[1]
    blocks, plain_blocks = model.decoder.blocks, plain.decoder.blocks
    assert blocks[-2].conv1[0].in_channels == plain_blocks[-2].conv1[0].in_channels + half
    assert blocks[-1].conv1[0].in_channels == plain_blocks[-1].conv1[0].in_channels + full
    if encoder != "maxvit_tiny":  # MaxViT's stem keeps a stride-2 map; the others' stride-2 level is empty
        assert stride2 == 0
    images = torch.randn(2, 3, 64, 64)
    output = model(images)
    assert output.shape == (2, taxonomy.NUM_CLASSES, 64, 64)
    losses.build_loss("dice")(output, torch.randint(0, taxonomy.NUM_CLASSES, (2, 64, 64))).backward()
    for stem in (model.full_stem, model.half_stem):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stem.parameters())
    extra = models.count_parameters(model) - models.count_parameters(plain)
    assert 0 < extra < 0.01 * models.count_parameters(plain)  # a few convolutions, not a second encoder


def test_residual_evidence_is_the_residual_filters_score_with_its_sign():
    """The torch residual the model reads is numpy's ``residual.scores`` before its abs (one home for the filter's
    constants), per image of a batch, from the ImageNet-normalised tensor, with bright and dark marks of opposite
    sign; bf16 autocast does not change it."""
    rng = np.random.default_rng(0)
    pictures = rng.normal(120, 15, (2, 45, 50, 3)).clip(0, 255).astype(np.uint8)
    pictures[0, 10, 5:40] = 250  # a bright scratch
    pictures[1, 5:30, 20] = 5  # a dark hair
    batch = torch.stack([datasets.normalize(picture) for picture in pictures])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        evidence = models.residual_evidence(batch)
    assert evidence.shape == (2, 1, 45, 50) and evidence.dtype == torch.float32
    for picture, found in zip(pictures, evidence[:, 0].numpy()):
        expected = np.minimum(residual.scores(picture), models.RESIDUAL_CLIP)
        np.testing.assert_allclose(np.abs(found), expected, atol=1e-3)
    assert (evidence[0, 0, 10, 8:38] > 5).all() and (evidence[1, 0, 8:28, 20] < -5).all()


def test_residual_input_joins_the_full_resolution_stem_and_is_trained():
    torch.manual_seed(0)
    model = models.build_model("unet", "convnext_tiny", image_size=64, full_resolution_skips=True, residual_input=True)
    first = model.full_stem[0][0]
    assert first.in_channels == 4
    losses.build_loss("dice")(model(torch.randn(2, 3, 64, 64)), torch.randint(0, taxonomy.NUM_CLASSES, (2, 64, 64))
                              ).backward()
    assert first.weight.grad[:, 3].abs().sum() > 0  # the residual channel's weights learn
    with pytest.raises(errors.InputError, match="residual_input: .* needs full_resolution_skips"):
        models.build_model("unet", "convnext_tiny", image_size=64, residual_input=True)


def test_full_resolution_skips_are_refused_where_there_is_no_full_resolution_decoder():
    with pytest.raises(errors.InputError, match="full_resolution_skips: architecture 'hierarchical_upernet'"):
        models.build_model("hierarchical_upernet", "convnext_tiny", image_size=64, full_resolution_skips=True)


def test_hierarchical_model_has_three_heads_on_the_shared_decoder():
    model = models.build_model("hierarchical_upernet", "coatnet_0", image_size=64)
    assert isinstance(model, smp.UPerNet)
    assert not hasattr(model, "segmentation_head")
    heads = {level: head[0] for level, head in model.heads.items()}
    assert {level: (conv.in_channels, conv.out_channels, conv.kernel_size) for level, conv in heads.items()} == {
        "binary": (256, 2, (1, 1)), "coarse": (256, 4, (1, 1)), "fine": (256, 16, (1, 1))}
    assert {key.split(".")[1] for key in model.state_dict() if key.startswith("heads.")} == {"binary", "coarse", "fine"}


def test_same_seed_same_model():
    def build() -> dict[str, torch.Tensor]:
        torch.manual_seed(7)
        return models.build_model("unet", "coatnet_0", image_size=64).state_dict()

    first, second = build(), build()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


def profile_image_sizes() -> dict[str, set[tuple[str, int]]]:
    """encoder -> every (profile, image_size) a POC resolves for it: main configurations and variants."""
    sizes: dict[str, set[tuple[str, int]]] = {}
    for poc in config.available_pocs():
        spec = config.load_poc(poc)
        variants = spec.get("variants") or {}
        for profile in config.PROFILES:
            for variant in [None, *variants]:
                restricted = None if variant is None else (variants[variant] or {}).get("encoders")
                for encoder in restricted or spec["encoders"]:
                    run = config.load_run_config(poc, profile, encoder=encoder, variant=variant)
                    sizes.setdefault(encoder, set()).add((profile, run.image_size))
    return sizes


@pytest.mark.parametrize("encoder", list(registry.ENCODERS))
def test_profile_sizes_are_accepted_and_a_smaller_one_refused(encoder):
    sizes = profile_image_sizes()[encoder]
    assert {profile for profile, _ in sizes} == set(config.PROFILES)  # every encoder is in some POC's plan
    for _, size in sizes:
        assert registry.check_image_size(encoder, size) is None
    spec = registry.ENCODERS[encoder]
    too_small = spec.min_size - registry.SIZE_MULTIPLE  # a multiple of 32 below the encoder's minimum
    with pytest.raises(errors.InputError, match=rf"cannot take image size {too_small}: .*at least {spec.min_size} px"):
        registry.check_image_size(encoder, too_small)
    if too_small > 0:  # a RunConfig refuses it too (0 px is refused earlier, as not positive)
        poc = next(p for p in config.available_pocs() if encoder in config.poc_encoders(p))
        with pytest.raises(config.ConfigError, match=rf"image_size: {too_small} does not suit encoder"):
            config.load_run_config(poc, "smoke", encoder=encoder, overrides={"image_size": too_small})


@pytest.mark.parametrize("encoder", WINDOW_ENCODERS)
def test_window_encoders_run_at_the_full_profile_size(encoder):
    # At 384 px the windows (size/32 = 12 tokens) must tile every stage; 64 px is covered above.
    size = 384
    model = models.build_model("unet", encoder, image_size=size).eval()
    with torch.no_grad():
        features = model.encoder(torch.zeros(1, 3, size, size))
    assert features[-1].shape[-2:] == (size // 32, size // 32)


def test_sizes_are_refused_with_the_reason_and_nearby_sizes():
    with pytest.raises(ValueError, match=r"'swin_tiny' \(Swin-Tiny\) cannot take image size 100: .*multiple of 32"
                                         r".*valid nearby sizes: 96, 128"):
        registry.check_image_size("swin_tiny", 100)
    with pytest.raises(ValueError, match=r"'maxvit_tiny' .* image size 32: .*at least 64 px.*valid nearby sizes: 64$"):
        registry.check_image_size("maxvit_tiny", 32)
    with pytest.raises(ValueError, match="'convnext_tiny' .* image size 48: .*valid nearby sizes: 32, 64"):
        models.build_model("unet", "convnext_tiny", image_size=48)
    with pytest.raises(ValueError, match="must be an integer, got 64.0"):
        registry.check_image_size("mit_b3", 64.0)
    registry.check_image_size("convnext_tiny", 32)


def test_fixed_size_encoders_refuse_other_input_sizes():
    model = models.build_model("unet", "coatnet_0", image_size=64).eval()
    with torch.no_grad(), pytest.raises(ValueError, match=r"'coatnet_0' .* built for 64x64 inputs.*got 96x96"):
        model(torch.zeros(1, 3, 96, 96))


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown encoder 'resnet50'; valid encoders: convnext_tiny, swin_tiny, "
                                         "coatnet_0, maxvit_tiny, mit_b3"):
        models.build_model("unet", "resnet50")
    with pytest.raises(ValueError, match="unknown architecture 'fpn'; valid architectures: unet, hierarchical_upernet"):
        models.build_model("fpn", "convnext_tiny")
    with pytest.raises(ValueError, match="unknown encoder 'vit'"):
        registry.check_image_size("vit", 64)


def test_registry_entries():
    assert {key: spec.family for key, spec in registry.ENCODERS.items()} == {
        "convnext_tiny": "CNN", "swin_tiny": "ViT", "coatnet_0": "hybrid", "maxvit_tiny": "hybrid", "mit_b3": "ViT"}
    assert all(spec.display_name and spec.family in registry.FAMILIES for spec in registry.ENCODERS.values())
    for spec in registry.ENCODERS.values():
        if spec.is_timm:
            assert timm.is_model(spec.smp_name[3:].split(".")[0])
            assert timm.models.get_pretrained_cfg(spec.smp_name[3:]).hf_hub_id  # weights exist for the tag
        else:
            assert spec.smp_name in smp.encoders.get_encoder_names()


def test_pretrained_offline_fails_at_once_with_instructions(monkeypatch, empty_hub_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # huggingface_hub reads the variable at import
    with pytest.raises(pretrained_weights.PretrainedWeightsUnavailable, match=(
            r"encoder 'convnext_tiny' \(timm/convnext_tiny.fb_in1k, model.safetensors\) are not in the Hugging Face "
            r"cache .*HF_HUB_OFFLINE is set.*`python -m heritage weights fetch --encoders convnext_tiny`"
            r".*`hf download timm/convnext_tiny.fb_in1k model.safetensors`.*\$HF_HOME/hub"
            r".*HF_HUB_OFFLINE=1.*TORCH_HOME")):
        models.build_model("unet", "convnext_tiny", image_size=64, pretrained=True)
    with pytest.raises(pretrained_weights.PretrainedWeightsUnavailable,
                       match=r"`hf download smp-hub/mit_b3.imagenet model.safetensors --revision [0-9a-f]{40}`"):
        models.build_model("hierarchical_upernet", "mit_b3", image_size=64, pretrained=True)


def test_pretrained_with_unreachable_hub_fails_at_once(monkeypatch, empty_hub_cache):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    with pytest.raises(pretrained_weights.PretrainedWeightsUnavailable,
                       match=r"http://127.0.0.1:9 unreachable.*hf download"):
        models.build_model("unet", "maxvit_tiny", image_size=64, pretrained=True)


def seed_cache(cache: Path, repo_id: str, revision: str, state_dict: dict[str, torch.Tensor]) -> None:
    """Lay out ``state_dict`` as ``hf download`` would have left it in the Hugging Face cache."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    commit = revision if len(revision) == 40 else "0" * 40
    if commit != revision:
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / revision).write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in state_dict.items()}, snapshot / "model.safetensors")


def test_timm_encoder_weights_load_offline_from_a_seeded_cache(monkeypatch, empty_hub_cache):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    torch.manual_seed(3)
    timm_weights = timm.create_model("convnext_tiny").state_dict()
    seed_cache(empty_hub_cache, "timm/convnext_tiny.fb_in1k", "main", timm_weights)
    model = models.build_model("unet", "convnext_tiny", image_size=64, pretrained=True)
    assert torch.equal(model.encoder.model.stem_0.weight, timm_weights["stem.0.weight"])
    assert torch.equal(model.encoder.model.stages_3.blocks[2].mlp.fc2.weight,
                       timm_weights["stages.3.blocks.2.mlp.fc2.weight"])


def test_smp_native_encoder_weights_load_offline_from_a_seeded_cache(monkeypatch, empty_hub_cache):
    # mit_b3's path (SMP's own Hub repo at a pinned revision), exercised with its small sibling mit_b0.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setitem(registry.ENCODERS, "mit_b0", registry.EncoderSpec("mit_b0", "mit_b0", "ViT", "MiT-B0", 32))
    settings = smp.encoders.encoders["mit_b0"]["pretrained_settings"]["imagenet"]
    torch.manual_seed(3)
    weights = smp.encoders.get_encoder("mit_b0").state_dict()
    seed_cache(empty_hub_cache, settings["repo_id"], settings["revision"], weights)
    model = models.build_model("hierarchical_upernet", "mit_b0", image_size=64, pretrained=True)
    assert all(torch.equal(model.encoder.state_dict()[key], value) for key, value in weights.items())
