"""A run's settings: :class:`RunConfig`, validated on construction, its hash and its run folder.

The fields, their allowed values and types are checked here (:func:`check_keys`, :func:`_check_values`),
with the error naming the key, the value and the source; what is hashed and where a run lives
(:func:`run_dir`) are decided here too. Resolving a POC file into a RunConfig is
:mod:`heritage.config.resolve`; the POC files themselves are :mod:`heritage.config.poc_files`.

The config hash covers what determines a run's results, including the *content* of its data (the
sha256 of ``metadata.csv`` and of the protocol's split manifest, :func:`data_fingerprint`), not where
the data folder lives: a moved or copied data folder keeps the hash, rewritten data changes it. So
hashing needs the data folder; without it :meth:`RunConfig.config_hash` raises
:class:`heritage.errors.MissingInputError` (resolving a config does not need the data).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from heritage import errors, fileio

PROFILES = ("full", "smoke")
AMP_MODES = ("auto", "bf16", "fp16", "off")
CHANNELS_LAST_MODES = ("auto", "on", "off")
SAMPLING_MODES = ("letterbox", "patch")  # heritage.data.datasets: whole images shrunk to image_size, or crops
NATIVE = "native"  # working_resolution: the data folder's stored size
# Where `heritage paper` writes the synthetic stand-in of each profile, and a POC notebook's default data
# folder: the one home of these paths (heritage.pipeline.preparation.SYNTHETIC sizes the stand-in written there).
DEFAULT_DATA_DIRS = {"smoke": "data/synthetic-smoke", "full": "data/synthetic"}
DEFAULT_RUNS_ROOT = "runs"
# Fields that say where things are, how fast data loads or how often state is saved, not what is
# computed: they stay out of the config hash, so changing them does not invalidate finished runs.
# (data_dir is replaced by the fingerprint of the data's content, see RunConfig.config_hash.)
UNHASHED_FIELDS = ("data_dir", "runs_root", "num_workers", "shm", "checkpoint_every", "timing_skip_steps",
                   "cache_dir")
# Fields that pick the run rather than configure it: set by load_run_config's arguments or overrides.
SELECTION_FIELDS = ("poc", "profile", "encoder", "variant", "fold")
# Fields that name a component of the run folder (runs_root/<poc>[-<variant>]/<encoder>/<protocol>-<fold>).
PATH_FIELDS = ("poc", "variant", "encoder", "protocol", "fold")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Keys config.yaml holds besides the fields: derived on writing, dropped on reading.
DERIVED_KEYS = ("data_fingerprint", "config_hash")
# Plausibility of numeric settings (README, "What happens with bad input"). Refused on construction: an
# AdamW learning rate above MAX_LR (every weight moves by about the lr each step: the run diverges), a
# decay lr x weight_decay of 1 or more per step (it zeroes the weights), a seed torch cannot take.
# Warned by `train` (RunConfig.implausible): legal values far outside what segmentation models are trained
# with, so that a typo (lr=1e-1 for 1e-4) is seen before the hours are spent.
MAX_LR = 1.0
MAX_SEED = 2**64 - 1
USUAL_RANGES: dict[str, tuple[float, float, str]] = {
    "lr": (1e-6, 1e-2, "AdamW trains segmentation models at about 1e-5 to 1e-3"),
    "base_lr": (1e-6, 1e-2, "AdamW trains segmentation models at about 1e-5 to 1e-3"),
    "weight_decay": (0.0, 0.5, "AdamW's decoupled decay is usually 1e-4 to 5e-2"),
    "epochs": (1, 1000, "ARTeFACT's 418 images are fitted in tens of epochs"),
    "image_size": (32, 2048, "memory grows with its square"),
    "batch_size": (1, 1024, "larger batches rarely fit in memory and change what the lr means"),
}


class ConfigError(errors.InputError):
    """A configuration value or file is wrong; the message names the key, the value and the source."""


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs, validated on construction.

    ``lr`` is derived from ``base_lr * batch_size / base_batch_size`` when left as None; note that
    :func:`dataclasses.replace` keeps an already derived ``lr`` (pass ``lr=None`` to derive it again).
    ``batch_size`` and ``lr`` are one process's: with N DDP processes the optimizer runs at
    :meth:`lr_for` (N), the rate of the global batch of N x batch_size.
    """

    poc: str
    encoder: str
    architecture: str = "unet"
    # skips at full and half resolution from a small stem on the input into the UNet decoder's last two blocks
    # (heritage.modeling.models.UnetWithInputSkips): what thin damage needs past the encoders' stride-4 stems
    full_resolution_skips: bool = False
    # that stem also reads the residual filter's evidence (heritage.modeling.models.residual_evidence: luminance
    # minus its 5x5 median over the robust sigma), computed inside the model from its input
    residual_input: bool = False
    loss: str = "dice"
    loss_params: dict = field(default_factory=dict)  # extra keyword arguments of losses.build_loss
    class_weights: str | None = None  # a weights method, or None for an unweighted loss
    class_weight_max_ratio: float | None = None  # cap of max/min weight; None = uncapped
    variant: str | None = None
    profile: str = "smoke"
    pretrained: bool = False
    data_dir: str = DEFAULT_DATA_DIRS["smoke"]
    protocol: str = "holdout"
    fold: str = "holdout"
    image_size: int = 64
    epochs: int = 1
    batch_size: int = 8
    base_batch_size: int = 8
    base_lr: float = 1e-3
    lr: float | None = None
    weight_decay: float = 1e-4
    pct_start: float = 0.3  # share of the OneCycle schedule spent warming up
    # auto: bf16 where the GPU supports it, fp16 + GradScaler otherwise, off on CPU. YAML reads a bare
    # off/on as false/true, so booleans are accepted too (false -> "off", true -> "auto").
    amp: str | bool = "auto"
    channels_last: str | bool = "auto"  # auto: on for CNN encoders; true/false -> "on"/"off"
    compile: bool = False
    grad_clip: float | None = None  # max global gradient norm; None = no clipping
    num_workers: int = 0
    preload: bool = False  # decode the whole split into RAM once
    shm: bool = False  # keep the preload cache in /dev/shm, shared by the processes of a node
    seed: int = 42
    max_train_samples: int | None = None  # first N training ids (after sorting); None = all
    eval_every: int = 1  # validate every N epochs (and always after the last)
    # write checkpoint_last.pt every N epochs (and after the last); 0 = only when a signal stops the run
    checkpoint_every: int = 1
    timing_skip_steps: int = 2  # first steps of each epoch left out of the images/s measurement
    n_prediction_panels: int = 6  # the run report shows them
    runs_root: str = DEFAULT_RUNS_ROOT
    # letterbox: train on whole images shrunk into image_size x image_size (the seeds); patch: on random
    # image_size crops of the working resolution, which keeps thin damage at its stored width.
    sampling: str = "letterbox"
    # The resolution crops come from (patch) and val/test are scored at (both modes): "native" (the data
    # folder's stored size) or an int N (longest side at most N px, never enlarged). Float in the type
    # only to refuse scale factors with a clear message.
    working_resolution: str | int | float = NATIVE
    foreground_share: float = 0.33  # patch: share of crops centred on a damage pixel (nnU-Net style)
    cache_dir: str | None = None  # working-resolution .npy files; None = <data_dir>/cache
    # test-time augmentation of the test part's sliding window: none, or flip (the mean of the prediction and
    # its horizontal and vertical flips: 3 forward passes per tile); validation stays without it
    tta: str = "none"
    # the test part (and predict) with the thin classes' probabilities divided by a factor chosen on the validation
    # part after training, as the residual filter's k (heritage.modeling.thin_prior; metrics.json's thin_factor)
    calibrate_thin: bool = False

    def __post_init__(self) -> None:
        _check_types(self)
        if isinstance(self.amp, bool):
            object.__setattr__(self, "amp", "auto" if self.amp else "off")
        if isinstance(self.channels_last, bool):
            object.__setattr__(self, "channels_last", "on" if self.channels_last else "off")
        if self.lr is None:
            object.__setattr__(self, "lr", self.base_lr * self.batch_size / self.base_batch_size)
        _check_values(self)

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (YAML/JSON friendly)."""
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Stable 16-hex-digit hash of what determines the results: the fields (not
        :data:`UNHASHED_FIELDS`) and the data's :func:`data_fingerprint`, which needs the data folder."""
        return self._hash(data_fingerprint(self.data_dir, self.protocol))

    def _hash(self, fingerprint: Mapping[str, str]) -> str:
        content = {k: v for k, v in self.to_dict().items() if k not in UNHASHED_FIELDS}
        content["data"] = dict(fingerprint)
        blob = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        """The resolved config plus its data fingerprint and ``config_hash``, as written to a run
        folder's ``config.yaml``."""
        fingerprint = data_fingerprint(self.data_dir, self.protocol)
        return yaml.safe_dump({**self.to_dict(), "data_fingerprint": fingerprint,
                               "config_hash": self._hash(fingerprint)}, sort_keys=False)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "config") -> RunConfig:
        """Build from a mapping of field values; unknown keys are an error naming ``source``."""
        values = dict(values)
        check_keys(values, source)
        for name in ("poc", "encoder"):
            if name not in values:
                raise ConfigError(f"{source}: missing required key '{name}'")
        try:
            return cls(**values)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> RunConfig:
        """Read a resolved config (e.g. a run folder's ``config.yaml``); its derived keys are dropped."""
        values = {k: v for k, v in read_yaml_mapping(Path(path)).items() if k not in DERIVED_KEYS}
        return cls.from_dict(values, source=str(path))

    # -- derived facts -------------------------------------------------------------------------

    def implausible(self) -> list[str]:
        """A message per numeric setting outside its usual range (:data:`USUAL_RANGES`): legal, but
        probably a typo; ``train`` prints them as warnings."""
        messages = []
        for name, (low, high, usual) in USUAL_RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                messages.append(f"{name}={value:g} is outside the usual range [{low:g}, {high:g}] ({usual}): "
                                "check it is meant")
        return messages

    @property
    def hierarchical(self) -> bool:
        return self.architecture == "hierarchical_upernet"

    @property
    def poc_key(self) -> str:
        """``<poc>`` or ``<poc>-<variant>``: the first level of the run folder."""
        return self.poc if self.variant is None else f"{self.poc}-{self.variant}"

    @property
    def split_name(self) -> str:
        return f"{self.protocol}-{self.fold}"

    def lr_for(self, world_size: int) -> float:
        """The learning rate of ``world_size`` DDP processes: their global batch is ``batch_size x world_size``,
        and the linear scaling rule (``base_lr * global batch / base_batch_size``) scales ``lr`` with it,
        whether ``lr`` was derived or given."""
        return self.lr * world_size


def data_fingerprint(data_dir: str | os.PathLike, protocol: str) -> dict[str, str]:
    """sha256 of ``<data_dir>/metadata.csv`` and of the protocol's split manifest: what a run's
    results depend on of its data folder, whatever its path. Raises MissingInputError without them."""
    from heritage.data import datafolder, splits

    folder = Path(data_dir)
    why = "the config hash fingerprints the data a run uses"
    if not folder.is_dir():
        raise errors.MissingInputError(
            f"data_dir: {folder} does not exist ({why}; make the data folder with `python -m heritage data "
            f"ingest` or `python -m heritage paper --prepare-data-only`, or point data_dir/--data at it)")
    metadata = datafolder.metadata_fingerprint(folder)  # raises naming metadata.csv and `data ingest`
    manifest = splits.manifest_path(folder, protocol)
    if not manifest.is_file():
        raise errors.MissingInputError(
            f"{manifest}: file not found ({why}; run `python -m heritage data split --data {folder} "
            f"--protocol {protocol}`)")
    return {"metadata": metadata, "manifest": hashlib.sha256(manifest.read_bytes()).hexdigest()}


def run_dir(config: RunConfig) -> Path:
    """``runs_root/<poc>[-<variant>]/<encoder>/<protocol>-<fold>/`` (see ARCHITECTURE.md)."""
    return Path(config.runs_root) / config.poc_key / config.encoder / config.split_name


# -- validation --------------------------------------------------------------------------------

_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def check_keys(values: Mapping[str, Any], source: str) -> None:
    for key in values:
        if key not in _FIELDS:
            raise ConfigError(f"{source}: unknown key {key!r}{did_you_mean(key, list(_FIELDS))}")


def _check_types(config: RunConfig) -> None:
    hints = typing.get_type_hints(RunConfig)
    for name in _FIELDS:
        value = getattr(config, name)
        expected = hints[name]
        if not _is_instance(value, expected):
            raise ConfigError(f"{name}: expected {_type_name(expected)}, got {value!r} "
                              f"({type(value).__name__})")
        if expected in (float, float | None) and isinstance(value, int):
            object.__setattr__(config, name, float(value))


def _is_instance(value: Any, expected: Any) -> bool:
    if isinstance(expected, types.UnionType):
        return any(_is_instance(value, arm) for arm in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is float:  # an int is a fine float; a bool is not a number here
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _type_name(expected: Any) -> str:
    if isinstance(expected, types.UnionType):
        return " or ".join(_type_name(arm) for arm in typing.get_args(expected))
    return "null" if expected is type(None) else expected.__name__


def _check_values(config: RunConfig) -> None:
    from heritage.modeling import registry
    from heritage.data import splits, weights

    for name in PATH_FIELDS:  # they become folder names: no separators, no "..", nothing hidden
        value = getattr(config, name)
        if value is not None and not SAFE_NAME.fullmatch(value):
            raise ConfigError(f"{name}: {value!r} cannot name a run folder; use letters, digits, '.', '_' "
                              "and '-', starting with a letter or digit")
    require_choice("architecture", config.architecture, registry.ARCHITECTURES)
    if config.full_resolution_skips and config.architecture not in registry.FULL_RESOLUTION_ARCHITECTURES:
        raise ConfigError(f"full_resolution_skips: architecture {config.architecture!r} has no decoder blocks at full "
                          f"resolution to take them; they exist for {', '.join(registry.FULL_RESOLUTION_ARCHITECTURES)}")
    if config.residual_input and not config.full_resolution_skips:
        raise ConfigError("residual_input: the residual evidence enters through the full-resolution input stem; set "
                          "full_resolution_skips: true with it")
    require_choice("tta", config.tta, registry.TTA_MODES)
    require_choice("encoder", config.encoder, list(registry.ENCODERS))
    require_choice("loss", config.loss, registry.LOSSES)
    if config.class_weights is not None:
        require_choice("class_weights", config.class_weights, weights.METHODS)
    require_choice("protocol", config.protocol, splits.ALL_PROTOCOLS)
    require_choice("profile", config.profile, PROFILES)
    require_choice("amp", config.amp, AMP_MODES)
    require_choice("channels_last", config.channels_last, CHANNELS_LAST_MODES)
    for name in ("image_size", "epochs", "batch_size", "base_batch_size", "eval_every"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name}: must be positive, got {getattr(config, name)!r}")
    for name in ("base_lr", "lr"):
        value = getattr(config, name)
        if not 0 < value <= MAX_LR:  # not NaN either
            raise ConfigError(f"{name}: must be positive, got {value!r}" if not value > 0 else
                              f"{name}: {value!r} is above {MAX_LR:g}, where AdamW moves every weight by about "
                              f"the learning rate each step and the run diverges (usual: 1e-5 to 1e-3)")
    if config.lr * config.weight_decay >= 1:
        raise ConfigError(f"weight_decay: lr x weight_decay = {config.lr * config.weight_decay:g} >= 1 would zero "
                          f"every weight each step (AdamW multiplies them by 1 - lr x weight_decay); usual "
                          f"weight_decay: 1e-4 to 5e-2")
    if config.seed > MAX_SEED:
        raise ConfigError(f"seed: {config.seed} is above {MAX_SEED} (torch's seeds are 64-bit)")
    for name in ("grad_clip", "class_weight_max_ratio", "max_train_samples"):
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ConfigError(f"{name}: must be positive or null, got {value!r}")
    if config.class_weight_max_ratio is not None and config.class_weight_max_ratio < 1:
        raise ConfigError(f"class_weight_max_ratio: a max/min ratio is at least 1, got "
                          f"{config.class_weight_max_ratio!r}")
    for name in ("seed", "weight_decay", "num_workers", "timing_skip_steps", "n_prediction_panels",
                 "checkpoint_every"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{name}: must be >= 0, got {getattr(config, name)!r}")
    if not 0 < config.pct_start < 1:
        raise ConfigError(f"pct_start: must be in (0, 1), got {config.pct_start!r}")
    try:
        registry.check_image_size(config.encoder, config.image_size)
    except ValueError as err:
        raise ConfigError(f"image_size: {config.image_size} does not suit encoder "
                          f"{config.encoder!r}: {err}") from None
    try:  # what losses.build_loss would refuse, without building one (no torch here)
        registry.check_loss_params(config.loss, config.loss_params)
    except ValueError as err:
        raise ConfigError(f"loss_params: {config.loss_params!r} do not suit loss {config.loss!r}: {err}") from None
    require_choice("sampling", config.sampling, SAMPLING_MODES)
    resolution = config.working_resolution
    if isinstance(resolution, float):
        raise ConfigError(f"working_resolution: {resolution!r} looks like a scale factor; give {NATIVE!r} (the data "
                          "folder's stored size) or a longest side in whole pixels, e.g. 1024")
    if isinstance(resolution, str) and resolution != NATIVE:
        raise ConfigError(f"working_resolution: unknown value {resolution!r}; give {NATIVE!r} (the data folder's "
                          "stored size) or a longest side in pixels, e.g. 1024")
    if isinstance(resolution, int) and resolution <= 0:
        raise ConfigError(f"working_resolution: a longest side must be a positive number of pixels, got {resolution}")
    if config.sampling == "patch" and isinstance(resolution, int) and resolution < config.image_size:
        raise ConfigError(f"working_resolution: {resolution} px is below image_size {config.image_size}: every "
                          "patch would be mostly padding; raise it or use sampling: letterbox")
    if not 0.0 <= config.foreground_share <= 1.0:
        raise ConfigError(f"foreground_share: a share of crops is in [0, 1], got {config.foreground_share!r}")
    if config.hierarchical != (config.loss == "hierarchical"):
        raise ConfigError(f"loss: {config.loss!r} does not fit architecture {config.architecture!r} "
                          "(the hierarchical model needs loss 'hierarchical' and only it)")
    if config.calibrate_thin and config.hierarchical:
        raise ConfigError("calibrate_thin: the hierarchical model's heads are scored together; the thin factor is "
                          "for a flat model's fine classes")


def require_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{name}: unknown value {value!r}{did_you_mean(str(value), [str(c) for c in choices])}; "
                          f"choose one of {', '.join(str(c) for c in choices)}")


def did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(str(word), candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    content = fileio.read_yaml(path, invalid=ConfigError, missing=ConfigError)
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(content).__name__}")
    return content
