"""Split manifests: holdout, stratified group k-fold, leave-one-content/material-out.

Every protocol assigns *source images* (``source_id``) to parts, never single samples, so the
augmented copies of an artwork can never sit on both sides of a split. Train takes every sample of
its sources (originals and copies); val and test take the originals only. Validation for model
selection is always carved from the training sources of the fold, so test is touched once.

Stratification by material uses one small procedure (:func:`deal`): sources are shuffled within
each material and dealt, material after material, to the part furthest behind its quota. Each part
then receives every material in proportion (within one source), which is what scikit-learn's
StratifiedGroupKFold does for groups of equal size (every source has exactly 1 + 3 samples).

One protocol breaks all of this on purpose: ``leaky`` reproduces the seeds' split, so that the paper can
measure what it inflates. It permutes *every sample*, augmented copies included, with the seeds'
``np.random.seed(seed); np.random.permutation`` over the sorted ids and keeps the first 80 % for
training; the other 20 % is both val and test, because the seeds selected the best epoch on the very
part they reported (d4v7d/HeritageArt-CNN-ViT-Hybrid, experiments/artefact-poc59-v2/src/
preload_dataset.py and train.py). Its manifest says ``"leaky": true``, the only thing that lets
:func:`check_manifest` skip the leak refusal, and only for this protocol.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from heritage import errors, fileio, locks
from heritage.data import datafolder

PROTOCOLS = ("holdout", "kfold", "loco", "lomo")  # the honest ones: grouped by source_id, no leak
LEAKY = "leaky"  # the seeds' random split over the augmented copies (to measure the leak), one fold of that name
ALL_PROTOCOLS = (*PROTOCOLS, LEAKY)
LEAKY_TRAIN_FRACTION = 0.8  # the seeds' split: int(0.8 * n) samples train, the rest is val and test
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


def min_sources_for_share(fraction: float) -> int:
    """The fewest items :func:`deal` needs before a part of share ``fraction`` (< 0.5) gets one.

    Item ``p`` (1-based) goes to the minority part once ``fraction * p`` exceeds the majority's lead
    ``(1 - fraction) * p - (p - 1)``, i.e. once ``p > 1 / (2 * fraction)`` (ties go to the majority).
    """
    return math.floor(1 / (2 * fraction)) + 1


def fewest_sources(protocol: str, k: int = DEFAULT_K) -> int:
    """The fewest source images holdout or kfold (``k`` folds) can be built on (every part non-empty)."""
    needed_rest = min_sources_for_share(VAL_FRACTION)
    rng = np.random.default_rng(0)  # part sizes depend on the number of items only, not on the order
    n = 1
    while True:
        if protocol == "holdout":
            tests = [int(np.sum(deal(["m"] * n, (1 - HOLDOUT_TEST_FRACTION, HOLDOUT_TEST_FRACTION), rng) == 1))]
        else:
            assignment = deal(["m"] * n, [1.0] * k, rng)
            tests = [int(np.sum(assignment == i)) for i in range(k)]
        if min(tests) >= 1 and n - max(tests) >= needed_rest:
            return n
        n += 1


def build_manifest(metadata: pd.DataFrame, protocol: str, k: int = DEFAULT_K, seed: int = DEFAULT_SEED,
                   fingerprint: str | None = None) -> dict:
    """The manifest of ``protocol`` for a data folder's metadata (see ARCHITECTURE.md).

    ``fingerprint`` (:func:`heritage.data.datafolder.metadata_fingerprint` of the folder) is recorded as
    ``metadata_sha256`` so :func:`load_manifest` can refuse the manifest once ``metadata.csv`` changes.
    Raises :class:`~heritage.errors.InputError` saying what the set lacks when the protocol cannot be
    built on it (one material for lomo, too few source images for a part, ...).
    """
    if protocol not in ALL_PROTOCOLS:
        raise errors.InputError(f"unknown protocol {protocol!r} (expected one of {ALL_PROTOCOLS})")
    if protocol == LEAKY:
        return build_leaky_manifest(metadata, seed=seed, fingerprint=fingerprint)
    sources = metadata[metadata["transform"] == datafolder.IDENTITY].sort_values("id").reset_index(drop=True)
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
        labels = sorted(sources[column].unique())
        if len(labels) < 2:  # one group: its fold would train on nothing
            plural = "content types" if protocol == "loco" else "materials"
            raise errors.InputError(f"{protocol} needs >= 2 {plural}; this set has {len(labels)}: "
                                    f"{', '.join(labels)}")
        for label in labels:
            folds.append((fold_name(label), (sources[column] == label).to_numpy(), {"held_out": label}))

    needed_rest = min_sources_for_share(VAL_FRACTION)
    manifest_folds = []
    for name, test, extra in folds:
        rest = sources[~test]
        if len(rest) < needed_rest:
            if extra:
                raise errors.InputError(
                    f"{protocol} fold {name!r}: only {len(rest)} source image(s) outside {extra['held_out']!r}, "
                    f"too few to train on and carve a validation part ({VAL_FRACTION:.1%} of them needs "
                    f">= {needed_rest})")
            raise errors.InputError(f"{protocol} needs >= {fewest_sources(protocol, k)} source images (a test "
                                    f"part, then a {VAL_FRACTION:.1%} validation part of the rest); "
                                    f"this set has {len(sources)}")
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
        if empty:  # guarded above; kept so no manifest with an empty part is ever written
            raise errors.InputError(f"{protocol} fold {name!r}: no samples in {empty} "
                                    f"({len(sources)} source images are too few for this protocol)")
        manifest_folds.append(fold)
    manifest = {"protocol": protocol, "seed": seed, "group_by": "source_id", "stratify_by": "material",
                "val_fraction": VAL_FRACTION, "metadata_sha256": fingerprint, "folds": manifest_folds}
    if protocol == "kfold":
        manifest["k"] = k
    check_manifest(manifest, metadata)
    return manifest


def build_leaky_manifest(metadata: pd.DataFrame, seed: int = DEFAULT_SEED, fingerprint: str | None = None) -> dict:
    """The seeds' split, marked ``"leaky": true``: a seeded permutation of every sample (copies included),
    the first 80 % train, the rest both val and test (the seeds selected and reported on one part)."""
    ids = sorted(metadata["id"])
    n_train = int(len(ids) * LEAKY_TRAIN_FRACTION)
    if n_train == 0 or n_train == len(ids):
        raise errors.InputError(f"{LEAKY} needs >= 2 samples (a training part and a held-out part); "
                                f"this set has {len(ids)}")
    order = np.random.RandomState(seed).permutation(len(ids))  # the seeds' np.random.seed + permutation
    held_out = sorted(ids[i] for i in order[n_train:])
    fold = {"name": LEAKY, "train": sorted(ids[i] for i in order[:n_train]), "val": held_out, "test": list(held_out)}
    manifest = {"protocol": LEAKY, "leaky": True, "seed": seed, "group_by": None, "stratify_by": None,
                "train_fraction": LEAKY_TRAIN_FRACTION, "metadata_sha256": fingerprint, "folds": [fold]}
    check_manifest(manifest, metadata)
    return manifest


def is_leaky(manifest: dict) -> bool:
    """Whether ``manifest`` is the leaky protocol's, which shares sources (and val/test) across parts knowingly."""
    return manifest.get("protocol") == LEAKY and manifest.get("leaky") is True


class StaleManifest(errors.InputError):
    """The manifest was built from another ``metadata.csv`` (samples added, removed or augmented since)."""


def check_manifest(manifest: dict, metadata: pd.DataFrame) -> None:
    """Raise InputError (a ValueError) when a manifest is malformed, stale, or leaks a source across parts.

    Stale (:class:`StaleManifest`): an id is not in ``metadata``, a fold does not cover every source
    image of ``metadata``, or train lacks a sample (an augmented copy) of one of its sources. This is
    what catches manifests without ``metadata_sha256`` (written before it was recorded).
    """
    folds = manifest.get("folds")
    if not isinstance(folds, list) or not folds:
        raise errors.InputError(f"manifest {manifest.get('protocol')!r}: no 'folds' list")
    leaky = is_leaky(manifest)
    if (manifest.get("protocol") == LEAKY) != ("leaky" in manifest) or (manifest.get("leaky") not in (None, True)):
        raise errors.InputError(f"manifest {manifest.get('protocol')!r}: only the {LEAKY!r} protocol is marked "
                                f"\"leaky\": true, and it must be (found leaky={manifest.get('leaky')!r})")
    if not all(isinstance(fold, dict) for fold in folds):
        raise errors.InputError(f"manifest {manifest.get('protocol')!r}: every fold must be a JSON object")
    source_of = dict(zip(metadata["id"], metadata["source_id"]))
    originals = set(metadata.loc[metadata["transform"] == datafolder.IDENTITY, "id"])
    samples_of: dict[str, list[str]] = metadata.groupby("source_id")["id"].apply(list).to_dict()
    names = [fold.get("name") for fold in folds]
    if len(set(names)) != len(names):
        raise errors.InputError(f"manifest {manifest.get('protocol')!r}: duplicated fold names {names}")
    for fold in folds:  # structure and staleness first: a stale manifest's "leaks" are only symptoms
        missing_parts = [part for part in ("name", *PARTS) if part not in fold]
        if missing_parts:
            raise errors.InputError(f"fold {fold.get('name')!r}: missing key(s) {missing_parts}")
        not_lists = [part for part in PARTS if not isinstance(fold[part], list)]
        if not_lists:
            raise errors.InputError(f"fold {fold['name']!r}: {not_lists} must be lists of sample ids")
        unknown = sorted({i for part in PARTS for i in fold[part]} - source_of.keys())
        if unknown:
            raise StaleManifest(f"fold {fold['name']!r}: id(s) {unknown[:5]} are not in metadata.csv")
        covered = {source_of[i] for part in PARTS for i in fold[part]}
        if covered != originals:
            n_samples = sum(len(samples_of[source]) for source in covered)
            raise StaleManifest(f"fold {fold['name']!r} covers {len(covered)} of {len(originals)} source images "
                                f"({n_samples} of {len(metadata)} samples) of metadata.csv; missing e.g. "
                                f"{sorted(originals - covered)[:5]}")
        if leaky:  # samples, not sources, are split: every sample must be in train or in the held-out part
            missing = sorted(source_of.keys() - {i for part in PARTS for i in fold[part]})
            if missing:
                raise StaleManifest(f"fold {fold['name']!r} lacks {len(missing)} sample(s) of metadata.csv, e.g. "
                                    f"{missing[:5]} (augmented after the split?)")
            continue
        train = set(fold["train"])
        held = {source_of[i] for part in ("val", "test") for i in fold[part]}  # a leak, reported below
        lacking = sorted(i for source in {source_of[i] for i in train} - held for i in samples_of[source]
                         if i not in train)
        if lacking:
            raise StaleManifest(f"fold {fold['name']!r}: train lacks {len(lacking)} sample(s) of its source images "
                                f"in metadata.csv, e.g. {lacking[:5]} (augmented after the split?)")
    if leaky:  # the seeds' protocol, reproduced to measure the inflation: its leaks are the point
        return
    problems = []
    for fold in folds:
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


def split_command(data_dir: str | os.PathLike, protocol: str, k: int = DEFAULT_K, seed: int = DEFAULT_SEED) -> str:
    """The command line that (re)writes one manifest, with the non-default k and seed it was built with."""
    command = f"python -m heritage data split --data {shlex.quote(str(data_dir))} --protocol {protocol}"
    if protocol == "kfold" and k != DEFAULT_K:
        command += f" --k {k}"
    if seed != DEFAULT_SEED:
        command += f" --seed {seed}"
    return command


def build_and_write(data_dir: str | os.PathLike, protocols: Sequence[str], k: int = DEFAULT_K,
                    seed: int = DEFAULT_SEED) -> tuple[list[Path], dict[str, str]]:
    """Write every manifest of ``protocols`` that can be built: (paths written, protocol -> why not)."""
    metadata = datafolder.read_metadata(data_dir)
    fingerprint = datafolder.metadata_fingerprint(data_dir)
    written, failed = [], {}
    with locks.hold(data_dir, "heritage data split"):  # one writer per data folder
        for protocol in protocols:
            try:
                manifest = build_manifest(metadata, protocol, k=k, seed=seed, fingerprint=fingerprint)
            except errors.InputError as err:
                failed[protocol] = str(err)
                continue
            path = manifest_path(data_dir, protocol)
            fileio.write_json(path, manifest, durable=True)
            written.append(path)
    return written, failed


def build_failure(written: Sequence[Path], failed: dict[str, str]) -> errors.HeritageError:
    """InputError when nothing could be built; CommandFailed (exit 1) when only some protocols could."""
    reasons = "; ".join(failed.values())
    if not written:
        return errors.InputError(reasons if len(failed) == 1 else f"no manifest could be built: {reasons}")
    return errors.CommandFailed(f"wrote {', '.join(p.stem for p in written)}; could not build "
                                f"{', '.join(failed)}: {reasons}")


def write_manifests(data_dir: str | os.PathLike, protocols: Sequence[str],
                    k: int = DEFAULT_K, seed: int = DEFAULT_SEED) -> list[Path]:
    """Write the manifests of ``protocols``; raise :func:`build_failure`'s error after writing the others."""
    written, failed = build_and_write(data_dir, protocols, k=k, seed=seed)
    if failed:
        raise build_failure(written, failed)
    return written


def load_manifest(data_dir: str | os.PathLike, protocol: str) -> dict:
    """Read and check ``<data>/splits/<protocol>.json`` against the data folder's metadata.

    A manifest whose ``metadata_sha256`` differs from ``metadata.csv``'s, or (without the field) that
    fails :func:`check_manifest`'s coverage check, is refused as stale with the command to re-run.
    """
    if protocol not in ALL_PROTOCOLS:
        raise errors.InputError(f"unknown protocol {protocol!r} (expected one of {ALL_PROTOCOLS})")
    path = manifest_path(data_dir, protocol)
    if not path.is_file():
        raise errors.MissingInputError(f"{path}: file not found (run `{split_command(data_dir, protocol)}`)")
    manifest = fileio.read_json(path)
    if not isinstance(manifest, dict):
        raise errors.InputError(f"{path}: not a split manifest (expected a JSON object, found "
                                f"{type(manifest).__name__}); re-run `{split_command(data_dir, protocol)}`")
    if manifest.get("protocol") != protocol:
        raise errors.InputError(f"{path}: holds protocol {manifest.get('protocol')!r}, expected {protocol!r}")
    metadata = datafolder.read_metadata(data_dir)
    k, seed = manifest.get("k", DEFAULT_K), manifest.get("seed", DEFAULT_SEED)
    advice = f"re-run `{split_command(data_dir, protocol, k=k, seed=seed)}`"
    recorded = manifest.get("metadata_sha256")
    if recorded is not None and recorded != (current := datafolder.metadata_fingerprint(data_dir)):
        raise errors.InputError(f"{path}: stale manifest: built from another metadata.csv (sha256 {recorded[:12]}..., "
                                f"now {current[:12]}...; samples were added, removed or relabelled since); {advice}")
    try:
        check_manifest(manifest, metadata)
    except StaleManifest as err:
        raise errors.InputError(f"{path}: stale manifest: {err}; {advice}") from None
    except ValueError as err:
        raise errors.InputError(f"{path}: {err}") from None
    return manifest


def fold_names(manifest: dict) -> list[str]:
    return [fold["name"] for fold in manifest["folds"]]


class FoldIds(NamedTuple):
    """The sample ids of one fold's parts."""

    train: list[str]
    val: list[str]
    test: list[str]


def fold_ids(manifest: dict, fold: str) -> FoldIds:
    """(train, val, test) ids of the fold called ``fold``."""
    for entry in manifest["folds"]:
        if entry["name"] == fold:
            return FoldIds(list(entry["train"]), list(entry["val"]), list(entry["test"]))
    raise errors.InputError(f"unknown fold {fold!r} in the {manifest.get('protocol')!r} manifest "
                     f"(folds: {fold_names(manifest)})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="data folder (after ingest and augment)")
    parser.add_argument("--protocol", required=True, choices=(*ALL_PROTOCOLS, "all"),
                        help=f"'{LEAKY}' is the seeds' random split over the augmented copies (leaks on purpose)")
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="folds for kfold (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="default: %(default)s")


def main(args: argparse.Namespace) -> int:
    """Write what can be built and print its sizes; then fail (exit 1, or 2 if nothing was built) naming the rest."""
    protocols = ALL_PROTOCOLS if args.protocol == "all" else (args.protocol,)
    written, failed = build_and_write(args.data, protocols, k=args.k, seed=args.seed)
    for path in written:
        manifest = fileio.read_json(path)
        sizes = ", ".join(f"{f['name']} {len(f['train'])}/{len(f['val'])}/{len(f['test'])}" for f in manifest["folds"])
        print(f"{path}: train/val/test {sizes}")
    if failed:
        raise build_failure(written, failed)
    return 0
