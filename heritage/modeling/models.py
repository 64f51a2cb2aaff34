"""The two segmentation models, SMP's UNet and the hierarchical UPerNet, over the encoder registry
(:mod:`heritage.modeling.registry`: names, families and size rules, importable without torch).

Every encoder comes from segmentation-models-pytorch: SegFormer's Mix Transformer is SMP's own
``mit_b3``, the others are timm models behind SMP's universal ``tu-`` encoder, which already turns
timm's channels-last transformer features into the NCHW pyramid the decoders expect. All timm names
carry their pretrained tag, so every encoder starts from ImageNet-1k weights (which file each loads, and
fetching them ahead of time: :mod:`heritage.modeling.pretrained_weights`).

Window-attention encoders (Swin, MaxViT, CoAtNet) fix their attention geometry from ``img_size``
when they are built; they then take inputs of exactly that size. The window is ``image_size // 32``
(timm's rule for MaxViT, which we also apply to Swin: its stage grids are ``image_size / 4 ... / 32``,
so windows tile every stage without padding; 224 px gives Swin's native window of 7, 384 px the
window 12 Swin used for 384 px fine-tuning). Measured on timm 1.0.31 / SMP 0.6.0 (forward and
backward, see tests/test_models.py): every multiple of 32 works from 32 px for ConvNeXt and MiT and
from 64 px for the window-attention encoders; at 32 px their deepest stage is a single token
(MaxViT then fails in training at batch 1: BatchNorm over one value per channel).

:class:`UnetWithInputSkips` (``full_resolution_skips``) gives the UNet decoder what the encoders' stride-4
stems never pass on: a small convolutional stem on the input feeds skips at full and half resolution into
the decoder's last two blocks (SMP's UNet has none there for these encoders: the stride-2 level is an empty
placeholder and the last block upsamples without a skip), so a 1 px speck can reach the output without
surviving a 4x4 patchify. It is the high-resolution path crack and vessel segmenters keep (HrSegNet, nnU-Net's
full-resolution first stage), a few convolutions at full resolution.

With ``residual_input`` that stem also reads the residual filter's evidence (:func:`residual_evidence`: the
luminance minus its 5x5 median over the robust sigma, :mod:`heritage.modeling.residual`'s detector before its
threshold), computed from the input tensor inside ``forward``, so training, evaluation, tiling and predict all
get it without a change to the data. It is the field's high-pass input channel: image forensics feeds its
detectors fixed residual filters (SRM), film restoration detects dust on a median residual. A model that sees
the filter's evidence at full resolution has the filter's answer to start from, and context (the picture's
edges against isolated marks) and class shape to do better.

UPerNet's pyramid pooling has a BatchNorm after a 1x1 pooled map, so the hierarchical model trains
only with batches of at least 2 samples (train loaders should drop a last batch of 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import safetensors.torch
import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
from segmentation_models_pytorch.base.modules import Conv2dReLU
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoderBlock
from torch import nn

from heritage import errors
from heritage.modeling import pretrained_weights, registry, residual
from heritage.data import datasets, taxonomy

# UPerNet fuses its pyramid at 1/4 of the input; the heads upsample back to full resolution.
UPERNET_OUTPUT_STRIDE = 4
# Channels of UnetWithInputSkips' input stem at full and half resolution.
INPUT_SKIP_CHANNELS = (16, 32)
# |r| / sigma beyond the filter's largest threshold says nothing more: clipped there, so a few stark marks do not
# set the input stem's BatchNorm statistics
RESIDUAL_CLIP = max(residual.K_GRID)


def residual_evidence(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) signed residual over the robust sigma, ``r / sigma`` clipped to +-RESIDUAL_CLIP, of
    ImageNet-normalised (B, 3, H, W) ``images``: :func:`heritage.modeling.residual.scores` before its ``abs``
    (the sign keeps the polarity: bright marks on negatives, dark ones on prints), each image with its own sigma.

    In float32 whatever the autocast; the median's borders replicated, as ``cv2.medianBlur``'s."""
    with torch.autocast(device_type=images.device.type, enabled=False):
        mean = torch.tensor(datasets.IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(datasets.IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
        weights = torch.tensor(residual.LUMA_WEIGHTS, device=images.device).view(1, 3, 1, 1)
        luma = ((images.float() * std + mean) * 255.0 * weights).sum(dim=1, keepdim=True)
        half = residual.MEDIAN_WINDOW // 2
        padded = nn.functional.pad(luma, (half, half, half, half), mode="replicate")
        windows = nn.functional.unfold(padded, residual.MEDIAN_WINDOW)  # (B, window^2, H*W)
        r = luma.flatten(1) - windows.median(dim=1).values  # an odd window: median is exact
        deviation = (r - _median(r)).abs_()
        sigma = (residual.MAD_TO_SIGMA * _median(deviation)).clamp_min(residual.SIGMA_FLOOR)
        return (r / sigma).clamp_(-RESIDUAL_CLIP, RESIDUAL_CLIP).view_as(luma)


def _median(values: torch.Tensor) -> torch.Tensor:
    """(B, 1) median of each row of (B, N) ``values``, numpy's (the mean of the two middle ones when N is even)."""
    ordered = values.sort(dim=1).values
    n = values.shape[1]
    return (ordered[:, (n - 1) // 2] + ordered[:, n // 2]).unsqueeze(1) / 2


class HierarchicalUPerNet(smp.UPerNet):
    """POC-5.5's model: SMP's UPerNet decoder shared by three 1x1 heads (binary, coarse, fine).

    ``forward`` returns ``{"binary": (B, 2, H, W), "coarse": (B, 4, H, W), "fine": (B, C, H, W)}``
    logits at input resolution, the level names and sizes following ``heritage.data.taxonomy``.
    """

    def __init__(self, encoder_name: str, encoder_weights: str | bool | None, num_classes: int,
                 decoder_channels: int = 256, **encoder_kwargs: Any) -> None:
        super().__init__(encoder_name=encoder_name, encoder_weights=encoder_weights, classes=num_classes,
                         decoder_channels=decoder_channels, upsampling=UPERNET_OUTPUT_STRIDE, **encoder_kwargs)
        level_classes = {"binary": len(taxonomy.BINARY_NAMES), "coarse": len(taxonomy.COARSE_NAMES),
                         "fine": num_classes}
        self.heads = nn.ModuleDict({
            level: SegmentationHead(decoder_channels, classes, kernel_size=1, upsampling=UPERNET_OUTPUT_STRIDE)
            for level, classes in level_classes.items()
        })
        for head in self.heads.values():
            initialize_head(head)
        # SMP's single head is replaced by the three above.
        del self.segmentation_head
        self.name = f"hierarchical-upernet-{encoder_name}"

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_input_shape(x)
        decoded = self.decoder(self.encoder(x))
        return {level: head(decoded) for level, head in self.heads.items()}


class UnetWithInputSkips(smp.Unet):
    """SMP's UNet with skips at full and half resolution from a convolutional stem on the input.

    The stem is two 3x3 conv-BN-ReLU at full resolution (``INPUT_SKIP_CHANNELS[0]`` channels), then a
    stride-2 one and a 3x3 one at half resolution (``[1]``); the decoder's last two blocks are rebuilt to
    take them (the half-resolution one beside whatever the encoder gives at stride 2, nothing for the
    flagship encoders). With ``residual_input`` the stem's input is the image and its
    :func:`residual_evidence` (4 channels). Everything else is SMP's UNet; ``forward`` returns logits
    ``(B, C, H, W)``.
    """

    def __init__(self, encoder_name: str, encoder_weights: str | bool | None, num_classes: int,
                 residual_input: bool = False, **encoder_kwargs: Any) -> None:
        super().__init__(encoder_name=encoder_name, encoder_weights=encoder_weights, classes=num_classes,
                         **encoder_kwargs)
        full, half = INPUT_SKIP_CHANNELS
        self.residual_input = residual_input
        stem_channels = 3 + int(residual_input)
        self.full_stem = nn.Sequential(Conv2dReLU(stem_channels, full, 3, padding=1),
                                       Conv2dReLU(full, full, 3, padding=1))
        self.half_stem = nn.Sequential(Conv2dReLU(full, half, 3, padding=1, stride=2),
                                       Conv2dReLU(half, half, 3, padding=1))
        blocks = self.decoder.blocks
        stride2_channels = self.encoder.out_channels[1]
        # (block, its skip channels now, what SMP gave it: the encoder's stride-2 features, none for the last)
        for index, skip, smp_skip in ((-2, stride2_channels + half, stride2_channels), (-1, full, 0)):
            old = blocks[index]
            blocks[index] = UnetDecoderBlock(old.conv1[0].in_channels - smp_skip, skip, old.conv2[0].out_channels,
                                             interpolation_mode=old.interpolation_mode)
        initialize_decoder(self.full_stem)
        initialize_decoder(self.half_stem)
        initialize_decoder(blocks[-2:])
        self.name = f"unet-input-skips-{encoder_name}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        features = self.encoder(x)  # [input, stride 2, 4, 8, 16, 32]
        full = self.full_stem(torch.cat([x, residual_evidence(x).to(x.dtype)], dim=1) if self.residual_input else x)
        half = torch.cat([features[1], self.half_stem(full)], dim=1)
        skips = [*features[2:-1][::-1], half, full]  # deepest first, as the decoder's blocks go
        shapes = [f.shape[2:] for f in (*features[2:-1][::-1], half, full)]
        decoded = self.decoder.center(features[-1])
        for block, skip, (height, width) in zip(self.decoder.blocks, skips, shapes):
            decoded = block(decoded, height, width, skip_connection=skip)
        return self.segmentation_head(decoded)


def build_run_model(settings: Mapping[str, Any], pretrained: bool = False) -> nn.Module:
    """:func:`build_model` of a run's settings (``RunConfig.to_dict()``, or the config a checkpoint holds): its
    architecture, encoder, image size and stem options (absent from runs made before them: off), randomly
    initialised unless ``pretrained``."""
    return build_model(settings["architecture"], settings["encoder"], image_size=settings["image_size"],
                       pretrained=pretrained, full_resolution_skips=settings.get("full_resolution_skips", False),
                       residual_input=settings.get("residual_input", False))


def build_model(architecture: str, encoder: str, num_classes: int = taxonomy.NUM_CLASSES,
                image_size: int = 384, pretrained: bool = False, full_resolution_skips: bool = False,
                residual_input: bool = False) -> nn.Module:
    """A randomly initialised (or ImageNet-initialised) segmentation model.

    ``unet`` returns logits ``(B, num_classes, H, W)`` (with ``full_resolution_skips``, a
    :class:`UnetWithInputSkips`, whose input stem also reads :func:`residual_evidence` with ``residual_input``);
    ``hierarchical_upernet`` returns the dict of :class:`HierarchicalUPerNet`.
    Encoders with a fixed input size refuse other sizes at forward.
    """
    if architecture not in registry.ARCHITECTURES:
        raise errors.InputError(f"unknown architecture {architecture!r}; valid architectures: "
                                f"{', '.join(registry.ARCHITECTURES)}")
    if full_resolution_skips and architecture not in registry.FULL_RESOLUTION_ARCHITECTURES:
        raise errors.InputError(f"full_resolution_skips: architecture {architecture!r} has no decoder blocks at full "
                                f"resolution; they exist for {', '.join(registry.FULL_RESOLUTION_ARCHITECTURES)}")
    if residual_input and not full_resolution_skips:
        raise errors.InputError("residual_input: the residual evidence enters through the full-resolution input stem; "
                                "it needs full_resolution_skips")
    spec = registry.encoder_spec(encoder)
    registry.check_image_size(encoder, image_size)
    if num_classes < 2:
        raise errors.InputError(f"num_classes must be at least 2, got {num_classes}")
    weights_path = pretrained_weights.require_pretrained_weights(encoder) if pretrained else None
    kwargs = spec.encoder_kwargs(image_size)
    timm_weights: bool | None = None  # SMP's switch for ``tu-`` encoders
    if weights_path is not None and spec.is_timm:
        timm_weights = True
        # Point timm at the resolved file so that building never touches the network again.
        kwargs["pretrained_cfg_overlay"] = {"file": weights_path}
    if architecture == "unet" and full_resolution_skips:
        model: nn.Module = UnetWithInputSkips(spec.smp_name, timm_weights, num_classes, residual_input, **kwargs)
    elif architecture == "unet":
        model = smp.Unet(encoder_name=spec.smp_name, encoder_weights=timm_weights, classes=num_classes, **kwargs)
    else:
        model = HierarchicalUPerNet(spec.smp_name, timm_weights, num_classes, **kwargs)
    if weights_path is not None and not spec.is_timm:
        _load_encoder_weights(model, weights_path)
    if spec.fixed_input_size:
        model.register_forward_pre_hook(_input_size_guard(spec, image_size))
    return model


def fine_logits(outputs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    """The 16-class logits of a model output: a UNet's tensor, or the hierarchical model's ``fine`` head."""
    return outputs["fine"] if isinstance(outputs, dict) else outputs


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(parameter.numel() for parameter in model.parameters())


def _input_size_guard(spec: registry.EncoderSpec, image_size: int) -> Callable[[nn.Module, tuple], None]:
    """A forward pre-hook turning timm's shape assertions into an error that says what to do."""

    def check(_module: nn.Module, args: tuple) -> None:
        height, width = args[0].shape[-2:]
        if (height, width) != (image_size, image_size):
            raise errors.InputError(
                f"encoder {spec.key!r} ({spec.display_name}) was built for {image_size}x{image_size} inputs "
                f"(its attention windows are fixed at build time), got {height}x{width}; use tiles of "
                f"{image_size} px or build the model with image_size={height}"
            )

    return check


def _load_encoder_weights(model: nn.Module, path: str) -> None:
    """Load SMP's MiT weights from a resolved file (SMP would call the Hub again to find it)."""
    model.encoder.load_state_dict(safetensors.torch.load_file(path, device="cpu"))
