"""The names a run configuration may use: architectures (and which take full-resolution skips),
encoders (with their input-size rules), losses and their parameters, test-time augmentations.

This module imports no torch, SMP or timm, so that a ``RunConfig`` validates (``heritage.config``)
without loading the model zoo; :mod:`heritage.modeling.models` and :mod:`heritage.modeling.losses` build from these
entries; callers import the names from here. Why the window-attention
encoders need fixed sizes, and which sizes were checked, is in :mod:`heritage.modeling.models`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from heritage import errors

ARCHITECTURES: tuple[str, ...] = ("unet", "hierarchical_upernet")
# Architectures that take ``full_resolution_skips``: skips at 1/1 and 1/2 of the input from a small
# convolutional stem into the decoder's last two blocks (heritage.modeling.models.UnetWithInputSkips). Every
# flagship encoder starts with a stride-4 stem, so without them a 1 px mark must survive a 4x4 patchify
# before any skip connection sees it; UPerNet fuses at 1/4 and has no such blocks.
FULL_RESOLUTION_ARCHITECTURES: tuple[str, ...] = ("unet",)
FAMILIES: tuple[str, ...] = ("CNN", "ViT", "hybrid")
# Both decoders consume a five-level pyramid down to 1/32 of the input, so sizes are multiples of 32.
SIZE_MULTIPLE = 32


@dataclass(frozen=True)
class EncoderSpec:
    """One registry entry: how SMP builds the encoder and which input sizes it takes."""

    key: str
    smp_name: str  # ``tu-<timm name>.<pretrained tag>`` or an SMP-native encoder name
    family: str  # one of FAMILIES
    display_name: str
    min_size: int
    fixed_input_size: bool = False  # attention geometry is set from image_size at build time
    window_from_size: bool = False  # pass window_size = image_size // 32 to timm (Swin)

    @property
    def is_timm(self) -> bool:
        return self.smp_name.startswith("tu-")

    @property
    def size_rule(self) -> str:
        rule = f"a multiple of {SIZE_MULTIPLE} and at least {self.min_size} px"
        if self.fixed_input_size:
            rule += f" (window attention: the deepest stage, size/{SIZE_MULTIPLE}, needs at least 2x2 tokens)"
        return rule

    def encoder_kwargs(self, image_size: int) -> dict[str, Any]:
        """Keyword arguments SMP forwards to ``timm.create_model`` for this input size."""
        kwargs: dict[str, Any] = {}
        if self.fixed_input_size:
            kwargs["img_size"] = image_size
        if self.window_from_size:
            kwargs["window_size"] = image_size // SIZE_MULTIPLE
        return kwargs


ENCODERS: dict[str, EncoderSpec] = {
    spec.key: spec
    for spec in (
        EncoderSpec("convnext_tiny", "tu-convnext_tiny.fb_in1k", "CNN", "ConvNeXt-Tiny", min_size=32),
        EncoderSpec("swin_tiny", "tu-swin_tiny_patch4_window7_224.ms_in1k", "ViT", "Swin-Tiny", min_size=64,
                    fixed_input_size=True, window_from_size=True),
        EncoderSpec("coatnet_0", "tu-coatnet_0_rw_224.sw_in1k", "hybrid", "CoAtNet-0", min_size=64,
                    fixed_input_size=True),
        EncoderSpec("maxvit_tiny", "tu-maxvit_tiny_rw_224.sw_in1k", "hybrid", "MaxViT-Tiny", min_size=64,
                    fixed_input_size=True),
        EncoderSpec("mit_b3", "mit_b3", "ViT", "SegFormer MiT-B3", min_size=32),
    )
}


def encoder_spec(encoder: str) -> EncoderSpec:
    """The registry entry of ``encoder``; ValueError listing the valid names otherwise."""
    if encoder not in ENCODERS:
        raise errors.InputError(f"unknown encoder {encoder!r}; valid encoders: {', '.join(ENCODERS)}")
    return ENCODERS[encoder]


def check_image_size(encoder: str, size: int) -> None:
    """Raise ValueError naming the encoder, the size, the rule and valid nearby sizes."""
    spec = encoder_spec(encoder)
    if isinstance(size, bool) or not isinstance(size, int):
        raise errors.InputError(f"encoder {encoder!r}: image size must be an integer, got {size!r}")
    if size % SIZE_MULTIPLE == 0 and size >= spec.min_size:
        return
    below = (size // SIZE_MULTIPLE) * SIZE_MULTIPLE
    nearby = sorted({max(below, spec.min_size), max(below + SIZE_MULTIPLE, spec.min_size)} - {size})
    raise errors.InputError(
        f"encoder {encoder!r} ({spec.display_name}) cannot take image size {size}: the size must be "
        f"{spec.size_rule}; valid nearby sizes: {', '.join(map(str, nearby))}"
    )


LOSSES: tuple[str, ...] = ("dice", "focal", "dice_focal", "hierarchical")
LEVEL_LOSSES: tuple[str, ...] = ("dice", "focal", "dice_focal")  # losses usable per hierarchy level
DEFAULT_SMOOTH = 1.0  # POC-5.9-v2's DiceLoss(smooth=1.0)
DEFAULT_GAMMA = 2.0
# The keyword parameters of losses.build_loss (a RunConfig's loss_params) and their defaults.
# skeleton_recall: weight of a Skeleton Recall term on the thin classes (0 = none; fine level only).
LOSS_PARAMETERS: dict[str, Any] = {"smooth": DEFAULT_SMOOTH, "gamma": DEFAULT_GAMMA, "level_loss": "dice",
                                   "skeleton_recall": 0.0}
# Test-time augmentation of the sliding window (heritage.modeling.tiling.SlidingWindow.tta): none, or the
# mean of the prediction and its horizontal and vertical flips.
TTA_MODES: tuple[str, ...] = ("none", "flip")


def check_loss_params(name: str, params: Mapping[str, Any]) -> None:
    """Raise ValueError when ``losses.build_loss(name, **params)`` would refuse them.

    ``name`` must be in LOSSES, every key in LOSS_PARAMETERS, ``smooth``, ``gamma`` and ``skeleton_recall``
    numbers >= 0, ``level_loss`` (used by ``hierarchical``) in LEVEL_LOSSES.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
    unknown = [key for key in params if key not in LOSS_PARAMETERS]
    if unknown:
        raise ValueError(f"unknown loss parameter {unknown[0]!r}; parameters: {', '.join(LOSS_PARAMETERS)}")
    for key in ("smooth", "gamma", "skeleton_recall"):
        value = params.get(key, LOSS_PARAMETERS[key])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{key} must be a number >= 0, got {value!r}")
    level_loss = params.get("level_loss", LOSS_PARAMETERS["level_loss"])
    if level_loss not in LEVEL_LOSSES:
        raise ValueError(f"unknown level_loss {level_loss!r}; valid level losses: {', '.join(LEVEL_LOSSES)}")
