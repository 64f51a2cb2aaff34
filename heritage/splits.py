"""Split manifests: holdout, stratified group k-fold, leave-one-content/material-out.

Every protocol assigns *source images* (``source_id``) to parts, never single samples, so the
augmented copies of an artwork can never sit on both sides of a split. Train takes every sample of
its sources (originals and copies); val and test take the originals only. Validation for model
selection is always carved from the training sources of the fold, so test is touched once.

Stratification by material uses one small procedure (:func:`deal`): sources are shuffled within
each material and dealt, material after material, to the part furthest behind its quota. Each part
then receives every material in proportion (within one source), which is what scikit-learn's
StratifiedGroupKFold does for groups of equal size (every source has exactly 1 + 3 samples).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from heritage import errors, fileio, ingest

PROTOCOLS = ("holdout", "kfold", "loco", "lomo")
PARTS = ("train", "val", "test")
DEFAULT_SEED = 42
DEFAULT_K = 3
HOLDOUT_TEST_FRACTION = 0.2
# Share of a fold's non-test sources kept for validation: 70/10/20 for the holdout split.
VAL_FRACTION = 0.125
SPLITS_DIR = "splits"


def deal(materials: Sequence[str], fractions: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Part index for each item, stratified by ``materials`` and proportional to ``fractions``."""
    materials = np.asarray(materials, dtype=object)
    quotas = np.asarray(fractions, dtype=np.float64) / np.sum(fractions)
    names = np.array(sorted(set(materials)), dtype=object)
    order = np.concatenate([rng.permutation(np.flatnonzero(materials == m)) for m in rng.permutation(names)])
    parts = np.empty(len(materials), dtype=np.int64)
    dealt = np.zeros(len(quotas))
    for position, item in enumerate(order):
        part = int(np.argmax(quotas * (position + 1) - dealt))  # the part furthest behind its quota
        parts[item] = part
        dealt[part] += 1
    return parts


def fold_name(label: str) -> str:
    """A path-safe fold name for a content type or material ("Film emulsion" -> "film-emulsion")."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def build_manifest(metadata: pd.DataFrame, protocol: str, k: int = DEFAULT_K, seed: int = DEFAULT_SEED) -> dict:
    """The manifest of ``protocol`` for a data folder's metadata (see ARCHITECTURE.md)."""
    if protocol not in PROTOCOLS:
        raise errors.InputError(f"unknown protocol {protocol!r} (expected one of {PROTOCOLS})")
    sources = metadata[metadata["transform"] == ingest.IDENTITY].sort_values("id").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    folds: list[tuple[str, np.ndarray, dict]] = []  # (name, test mask over sources, extra fields)
    if protocol == "holdout":
        test = deal(sources["material"], (1 - HOLDOUT_TEST_FRACTION, HOLDOUT_TEST_FRACTION), rng) == 1
        folds.append(("holdout", test, {}))
    elif protocol == "kfold":
        if not 2 <= k <= len(sources):
            raise errors.InputError(f"k={k} folds need 2 <= k <= {len(sources)} (the number of source images)")
        assignment = deal(sources["material"], [1.0] * k, rng)
        folds.extend((f"fold{i}", assignment == i, {}) for i in range(k))
    else:
        column = "content" if protocol == "loco" else "material"
        for label in sorted(sources[column].unique()):
            folds.append((fold_name(label), (sources[column] == label).to_numpy(), {"held_out": label}))

    manifest_folds = []
    for name, test, extra in folds:
        rest = sources[~test]
        val = np.zeros(len(sources), dtype=bool)
        val[np.flatnonzero(~test)] = deal(rest["material"], (1 - VAL_FRACTION, VAL_FRACTION), rng) == 1
        train_sources = set(sources.loc[~test & ~val, "id"])
        fold = {
            "name": name,
            **extra,
            "train": sorted(metadata.loc[metadata["source_id"].isin(train_sources), "id"]),
            "val": sorted(sources.loc[val, "id"]),
            "test": sorted(sources.loc[test, "id"]),
        }
        empty = [part for part in PARTS if not fold[part]]
        if empty:
            raise errors.InputError(f"{protocol} fold {name!r}: no samples in {empty} "
                             f"({len(sources)} source images are too few for this protocol)")
        manifest_folds.append(fold)
    manifest = {"protocol": protocol, "seed": seed, "group_by": "source_id", "stratify_by": "material",
                "val_fraction": VAL_FRACTION, "folds": manifest_folds}
    if protocol == "kfold":
        manifest["k"] = k
    check_manifest(manifest, metadata)
    return manifest


def check_manifest(manifest: dict, metadata: pd.DataFrame) -> None:
    """Raise ValueError when a manifest is malformed, stale, or leaks a source across parts."""
    folds = manifest.get("folds")
    if not isinstance(folds, list) or not folds:
        raise errors.InputError(f"manifest {manifest.get('protocol')!r}: no 'folds' list")
    source_of = dict(zip(metadata["id"], metadata["source_id"]))
    originals = set(metadata.loc[metadata["transform"] == ingest.IDENTITY, "id"])
    names = [fold.get("name") for fold in folds]
    if len(set(names)) != len(names):
        raise errors.InputError(f"manifest {manifest.get('protocol')!r}: duplicated fold names {names}")
    problems = []
    for fold in folds:
        missing_parts = [part for part in ("name", *PARTS) if part not in fold]
        if missing_parts:
            raise errors.InputError(f"fold {fold.get('name')!r}: missing key(s) {missing_parts}")
        unknown = sorted({i for part in PARTS for i in fold[part]} - source_of.keys())
        if unknown:
            raise errors.InputError(f"fold {fold['name']!r}: id(s) {unknown[:5]} are not in metadata.csv "
                             "(stale manifest? re-run `python -m heritage data split`)")
        for part in ("val", "test"):
            derived = sorted(set(fold[part]) - originals)
            if derived:
                problems.append(f"fold {fold['name']!r}: {part} holds augmented copies {derived[:5]}")
        sources = {part: {source_of[i] for i in fold[part]} for part in PARTS}
        for index, first in enumerate(PARTS):
            for second in PARTS[index + 1:]:
                leaked = sorted(sources[first] & sources[second])
                if leaked:
                    problems.append(f"fold {fold['name']!r}: source id(s) {leaked[:10]} in both {first} and {second}")
    if problems:
        raise errors.InputError("leaky manifest: " + "; ".join(problems))


def manifest_path(data_dir: str | os.PathLike, protocol: str) -> Path:
    return Path(data_dir) / SPLITS_DIR / f"{protocol}.json"


def write_manifests(data_dir: str | os.PathLike, protocols: Sequence[str],
                    k: int = DEFAULT_K, seed: int = DEFAULT_SEED) -> list[Path]:
    metadata = ingest.read_metadata(data_dir)
    paths = []
    for protocol in protocols:
        path = manifest_path(data_dir, protocol)
        fileio.write_json(path, build_manifest(metadata, protocol, k=k, seed=seed))
        paths.append(path)
    return paths


def load_manifest(data_dir: str | os.PathLike, protocol: str) -> dict:
    """Read and check ``<data>/splits/<protocol>.json`` against the data folder's metadata."""
    if protocol not in PROTOCOLS:
        raise errors.InputError(f"unknown protocol {protocol!r} (expected one of {PROTOCOLS})")
    path = manifest_path(data_dir, protocol)
    if not path.is_file():
        raise errors.MissingInputError(f"{path}: file not found (run `python -m heritage data split "
                                f"--data {data_dir} --protocol {protocol}`)")
    manifest = fileio.read_json(path)
    if manifest.get("protocol") != protocol:
        raise errors.InputError(f"{path}: holds protocol {manifest.get('protocol')!r}, expected {protocol!r}")
    try:
        check_manifest(manifest, ingest.read_metadata(data_dir))
    except ValueError as err:
        raise errors.InputError(f"{path}: {err}") from None
    return manifest


def fold_names(manifest: dict) -> list[str]:
    return [fold["name"] for fold in manifest["folds"]]


def fold_ids(manifest: dict, fold: str) -> tuple[list[str], list[str], list[str]]:
    """(train, val, test) ids of the fold called ``fold``."""
    for entry in manifest["folds"]:
        if entry["name"] == fold:
            return list(entry["train"]), list(entry["val"]), list(entry["test"])
    raise errors.InputError(f"unknown fold {fold!r} in the {manifest.get('protocol')!r} manifest "
                     f"(folds: {fold_names(manifest)})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="data folder (after ingest and augment)")
    parser.add_argument("--protocol", required=True, choices=(*PROTOCOLS, "all"))
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="folds for kfold (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="default: %(default)s")


def main(args: argparse.Namespace) -> int:
    protocols = PROTOCOLS if args.protocol == "all" else (args.protocol,)
    for path in write_manifests(args.data, protocols, k=args.k, seed=args.seed):
        manifest = fileio.read_json(path)
        sizes = ", ".join(f"{f['name']} {len(f['train'])}/{len(f['val'])}/{len(f['test'])}" for f in manifest["folds"])
        print(f"{path}: train/val/test {sizes}")
    return 0
