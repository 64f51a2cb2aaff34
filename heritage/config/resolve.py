"""Resolving runs: one POC file + a profile + an encoder (+ a variant, a fold, overrides) -> a RunConfig
(:func:`load_run_config`), and every run a profile plans (:func:`plan`).

See :mod:`heritage.config` for the order of the layers and the selection fields.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

import yaml

from heritage.config.poc_files import available_pocs, load_poc, poc_path, variant_encoders
from heritage.config.run_config import (DEFAULT_DATA_DIRS, PROFILES, SELECTION_FIELDS, ConfigError, RunConfig,
                                        check_keys, did_you_mean, require_choice)

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def load_run_config(
    poc: str,
    profile: str | None = None,
    encoder: str | None = None,
    fold: str | None = None,
    variant: str | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
) -> RunConfig:
    """Resolve one run of a POC (see the module docstring for the layer order).

    ``profile`` defaults to smoke, ``encoder`` to the POC's first encoder, ``fold`` to the first fold
    of the protocol (from the data folder's manifest when it exists). ``overrides`` is a dict of field
    values or a list of ``"key=value"`` strings whose values are parsed as YAML (``epochs=3``,
    ``grad_clip=null``); an override of a selection field (``fold=fold2``) counts as that argument,
    and contradicting the argument is an error. Asking for the POC's ``main_variant`` gives the main
    configuration (variant None).
    """
    values = _resolve(poc, profile, encoder, fold, variant, overrides)
    fold = values.pop("fold")
    poc, profile = values["poc"], values["profile"]
    source = str(poc_path(poc))
    values.setdefault("data_dir", DEFAULT_DATA_DIRS[profile])
    protocol = values.get("protocol", RunConfig.protocol)
    from heritage.data import splits

    try:
        require_choice("protocol", protocol, splits.ALL_PROTOCOLS)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    folds = manifest_folds(values["data_dir"], protocol, required=False)
    if fold is None:
        fold = folds[0] if folds else _default_fold(protocol, source)
    elif folds and fold not in folds:
        raise ConfigError(f"{source}: unknown fold {fold!r} for protocol {protocol!r}; "
                          f"the manifest has {', '.join(folds)}")
    values["fold"] = fold
    return RunConfig.from_dict(values, source=f"{source} (profile {profile})")


def _resolve(poc: str, profile: str | None, encoder: str | None, fold: str | None, variant: str | None,
             overrides: Mapping[str, Any] | Iterable[str] | None) -> dict[str, Any]:
    """The field values of one run from the POC file's layers and the overrides, checked key by key, with
    ``fold`` as chosen (None when neither the argument nor an override gives one); reads no data folder."""
    overrides = parse_overrides(overrides)
    chosen = {"poc": poc, "profile": profile, "encoder": encoder, "variant": variant, "fold": fold}
    for name in SELECTION_FIELDS:
        if name in overrides:
            value = overrides.pop(name)
            if chosen[name] is not None and value != chosen[name]:
                raise ConfigError(f"{name} given twice with different values: {chosen[name]!r} (--{name}) "
                                  f"and {value!r} (override {name}={value}); give it once")
            chosen[name] = value
    poc, encoder, variant, fold = chosen["poc"], chosen["encoder"], chosen["variant"], chosen["fold"]
    profile = "smoke" if chosen["profile"] is None else chosen["profile"]
    spec = load_poc(poc)
    source = str(poc_path(poc))
    if profile not in PROFILES:
        raise ConfigError(f"{source}: unknown profile {profile!r}; profiles: {', '.join(PROFILES)}")
    prof = spec["profiles"].get(profile) or {}
    encoders = spec["encoders"]
    encoder = encoder if encoder is not None else next(iter(encoders))
    if encoder not in encoders:
        raise ConfigError(f"{source}: encoder {encoder!r} is not one of this POC's encoders "
                          f"({', '.join(encoders)}){did_you_mean(encoder, list(encoders))}")
    if variant is not None and variant == spec.get("main_variant"):
        variant = None
    variants = spec.get("variants") or {}
    if variant is not None and variant not in variants:
        raise ConfigError(f"{source}: unknown variant {variant!r}{did_you_mean(variant, list(variants))}; "
                          f"variants: {', '.join(variants) or 'none'}")
    if variant is not None:
        allowed = variant_encoders(spec, variant)
        if encoder not in allowed:
            raise ConfigError(f"{source}: variant {variant!r} runs only on encoders {', '.join(allowed)}, "
                              f"not {encoder!r}")

    layers: list[tuple[str, Mapping[str, Any]]] = [
        ("settings", spec.get("settings") or {}),
        (f"profiles.{profile}.settings", prof.get("settings") or {}),
        (f"encoders.{encoder}", encoders.get(encoder) or {}),
        (f"profiles.{profile}.encoders.{encoder}", (prof.get("encoders") or {}).get(encoder) or {}),
    ]
    if variant is not None:
        layers += [
            (f"variants.{variant}", _without(variants[variant] or {}, "encoders")),
            (f"profiles.{profile}.variants.{variant}", (prof.get("variants") or {}).get(variant) or {}),
        ]
    for where, layer in layers:
        selecting = [key for key in layer if key in SELECTION_FIELDS]
        if selecting:  # the arguments would overwrite it: refuse rather than drop it
            raise ConfigError(f"{source}: {where}: {selecting[0]!r} selects the run and cannot be set in a "
                              f"POC file; pass it as --{selecting[0]} or {selecting[0]}=...")
    layers.append(("overrides", overrides))

    values: dict[str, Any] = {}
    for where, layer in layers:
        check_keys(layer, f"{source}: {where}")
        values.update(layer)
    values.update(poc=poc, encoder=encoder, variant=variant, profile=profile, fold=fold)
    return values


def parse_overrides(overrides: Mapping[str, Any] | Iterable[str] | None) -> dict[str, Any]:
    """``{"key": value}`` or ``["key=value", ...]`` (values parsed as YAML) -> dict."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
        if isinstance(value, str) and _FLOAT.fullmatch(value):
            value = float(value)  # YAML 1.1 reads "5e-3" (no dot) as a string
        parsed[key.strip()] = value
    return parsed


def plan(profile: str = "smoke", pocs: Iterable[str] | None = None,
         data_dir: str | os.PathLike | None = None,
         overrides: Mapping[str, Any] | Iterable[str] | None = None) -> list[RunConfig]:
    """Every (poc, variant, encoder, fold) the profile asks for, in a stable order.

    Order: POCs as given (default: all, sorted), then the main configuration before the variants
    (in file order), then encoders (file order), then folds (manifest order). Folds are read from
    ``<data_dir>/splits/<protocol>.json``, which must exist.
    """
    extra = _plan_overrides(overrides)
    if data_dir is not None:
        extra["data_dir"] = str(data_dir)
    configs: list[RunConfig] = []
    for cell in _planned_cells(profile, pocs):
        base = load_run_config(cell.poc, profile, encoder=cell.encoder, variant=cell.variant, overrides=extra)
        folds = manifest_folds(base.data_dir, base.protocol, required=True)
        for fold in _pick(_plan_folds(cell.folds, base.protocol), folds, f"{cell.poc}: plan.folds"):
            configs.append(dataclasses.replace(base, fold=fold))
    return configs


def plan_settings(profile: str = "smoke", pocs: Iterable[str] | None = None,
                  overrides: Mapping[str, Any] | Iterable[str] | None = None) -> list[RunConfig]:
    """The settings of every (poc, variant, encoder) the profile plans, in :func:`plan`'s order, resolved and
    validated without reading a data folder: what ``paper`` checks before it prepares the data (the
    overrides' keys and values, the encoders that need pretrained weights).

    Their ``fold`` and ``data_dir`` are RunConfig's defaults, not the plan's: the runs are :func:`plan`'s.
    """
    extra = _plan_overrides(overrides)
    settings = []
    for cell in _planned_cells(profile, pocs):
        values = _resolve(cell.poc, profile, cell.encoder, None, cell.variant, extra)
        del values["fold"]
        settings.append(RunConfig.from_dict(values, source=f"{poc_path(cell.poc)} (profile {profile})"))
    return settings


class _Cell(NamedTuple):
    """One (poc, variant, encoder) of a plan, with the POC's ``plan.folds`` entry."""

    poc: str
    variant: str | None
    encoder: str
    folds: Any


def _planned_cells(profile: str, pocs: Iterable[str] | None) -> Iterator[_Cell]:
    """The plan's cells in its order: POCs as given (default: all), main configuration then variants, encoders."""
    for poc in (list(pocs) if pocs is not None else available_pocs()):
        spec = load_poc(poc)
        wanted = (spec["profiles"].get(profile) or {}).get("plan") or {}
        encoders = _pick(wanted.get("encoders", "all"), list(spec["encoders"]), f"{poc}: plan.encoders")
        variants = _pick(wanted.get("variants", []), list(spec.get("variants") or {}), f"{poc}: plan.variants")
        for variant in [None, *variants]:
            allowed = list(spec["encoders"]) if variant is None else variant_encoders(spec, variant)
            for encoder in [e for e in encoders if e in allowed]:
                yield _Cell(poc, variant, encoder, wanted.get("folds", "all"))


def _plan_overrides(overrides: Mapping[str, Any] | Iterable[str] | None) -> dict[str, Any]:
    """A plan's overrides, refusing the fields the plan picks itself (they would be replaced)."""
    extra = parse_overrides(overrides)
    selecting = [key for key in extra if key in SELECTION_FIELDS]
    if selecting:
        raise ConfigError(f"plan: override {selecting[0]!r} cannot be used: the plan picks poc, profile, "
                          "encoder, variant and fold itself (profiles.<profile>.plan in the POC file)")
    return extra


def manifest_folds(data_dir: str | os.PathLike, protocol: str, required: bool) -> list[str]:
    """Fold names of ``<data_dir>/splits/<protocol>.json``; [] when it is missing and not required."""
    from heritage.data import splits

    if not splits.manifest_path(data_dir, protocol).exists() and not required:
        return []
    try:
        return splits.fold_names(splits.load_manifest(data_dir, protocol))
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from None


def _without(mapping: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


def _pick(wanted: Any, available: list[str], where: str) -> list[str]:
    """``all`` -> every available name; a list -> those names, checked, in the order of ``available``."""
    if wanted == "all":
        return list(available)
    if not isinstance(wanted, list):
        raise ConfigError(f"{where}: expected a list or 'all', got {wanted!r}")
    unknown = [w for w in wanted if w not in available]
    if unknown:
        raise ConfigError(f"{where}: unknown {unknown}; available: {', '.join(available) or 'none'}")
    return [a for a in available if a in wanted]


def _plan_folds(wanted: Any, protocol: str) -> Any:
    """A plan's ``folds`` for one protocol: the list or ``all`` itself, or its entry in a protocol mapping."""
    if not isinstance(wanted, dict):
        return wanted
    from heritage.data import splits

    unknown = [key for key in wanted if key not in splits.ALL_PROTOCOLS]
    if unknown:
        raise ConfigError(f"plan.folds: unknown protocol(s) {unknown}; choose among {', '.join(splits.ALL_PROTOCOLS)}")
    return wanted.get(protocol, "all")


def _default_fold(protocol: str, source: str) -> str:
    defaults = {"holdout": "holdout", "kfold": "fold0", "leaky": "leaky"}
    if protocol not in defaults:
        raise ConfigError(f"{source}: no split manifest found for protocol {protocol!r}; "
                          "pass the fold explicitly")
    return defaults[protocol]
