"""The POC files, ``heritage/configs/<poc>.yaml``: which exist, their content, their structure checked.

See :mod:`heritage.config` for the file format and the order in which its layers resolve.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from heritage.config.run_config import PROFILES, ConfigError, did_you_mean, read_yaml_mapping

_TOP_KEYS = {"title", "description", "main_variant", "settings", "encoders", "variants", "profiles"}
_PROFILE_KEYS = {"settings", "encoders", "variants", "plan"}
_PLAN_KEYS = {"encoders", "folds", "variants"}


def available_pocs() -> list[str]:
    """POC keys with a YAML file in ``heritage/configs``, sorted."""
    folder = resources.files("heritage") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def poc_path(poc: str) -> Path:
    known = available_pocs()
    if poc not in known:
        raise ConfigError(f"unknown POC {poc!r}{did_you_mean(poc, known)}; known POCs: {', '.join(known)}")
    return Path(str(resources.files("heritage") / "configs" / f"{poc}.yaml"))


def load_poc(poc: str) -> dict[str, Any]:
    """The raw, structure-checked content of ``configs/<poc>.yaml`` (for notebooks and reports)."""
    path = poc_path(poc)
    spec = read_yaml_mapping(path)
    _check_poc_structure(spec, path)
    return spec


def poc_encoders(poc: str) -> list[str]:
    return list(load_poc(poc)["encoders"])


def _check_poc_structure(spec: dict[str, Any], path: Path) -> None:
    def mapping(value: Any, where: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {where} must be a mapping, got {value!r}")
        return value

    _check_section_keys(spec, _TOP_KEYS, path, "top level")
    if not mapping(spec.get("encoders"), "encoders"):
        raise ConfigError(f"{path}: 'encoders' must list at least one encoder")
    for name, value in mapping(spec.get("variants"), "variants").items():
        restricted = mapping(value, f"variants.{name}").get("encoders")
        if restricted is not None:
            unknown = [e for e in restricted if e not in spec["encoders"]]
            if not isinstance(restricted, list) or unknown:
                raise ConfigError(f"{path}: variants.{name}.encoders must list encoders of this POC, "
                                  f"got {restricted!r}")
    profiles = mapping(spec.get("profiles"), "profiles")
    for name, prof in profiles.items():
        if name not in PROFILES:
            raise ConfigError(f"{path}: unknown profile {name!r}; profiles: {', '.join(PROFILES)}")
        prof = mapping(prof, f"profiles.{name}")
        _check_section_keys(prof, _PROFILE_KEYS, path, f"profiles.{name}")
        _check_section_keys(mapping(prof.get("plan"), f"profiles.{name}.plan"), _PLAN_KEYS, path,
                            f"profiles.{name}.plan")
        for section, known in (("encoders", spec["encoders"]), ("variants", spec.get("variants") or {})):
            for key in mapping(prof.get(section), f"profiles.{name}.{section}"):
                if key not in known:
                    raise ConfigError(f"{path}: profiles.{name}.{section}.{key} names no {section[:-1]} "
                                      f"of this POC{did_you_mean(key, list(known))}")
    spec.setdefault("profiles", profiles)


def _check_section_keys(section: Mapping[str, Any], known: set[str], path: Path, where: str) -> None:
    for key in section:
        if key not in known:
            raise ConfigError(f"{path}: {where}: unknown key {key!r}{did_you_mean(key, sorted(known))}; "
                              f"expected {', '.join(sorted(known))}")


def variant_encoders(spec: dict[str, Any], variant: str) -> list[str]:
    restricted = (spec["variants"][variant] or {}).get("encoders")
    return list(spec["encoders"]) if restricted is None else list(restricted)
