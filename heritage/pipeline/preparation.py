"""The data folder ``heritage paper`` needs: the synthetic stand-in or real data, ingested, augmented
and split, each step only when its output is missing or stale.

Benchmarks and tests make their data the way the paper does by calling :func:`prepare_data`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from heritage import errors
from heritage.config import DEFAULT_DATA_DIRS

# Synthetic stand-in per profile. Smoke: small images, so the whole smoke paper runs in minutes on
# a CPU (its runs train on 32 samples whatever the size of the set), and enough of them that a test
# fold holds ~50 images (holdout ~30) rather than a handful; full: the size of ARTeFACT. The folders
# are config's (DEFAULT_DATA_DIRS, a RunConfig's default data_dir).
SYNTHETIC = {
    "smoke": {"data_dir": DEFAULT_DATA_DIRS["smoke"], "n_images": 160, "longest_side": 96},
    "full": {"data_dir": DEFAULT_DATA_DIRS["full"], "n_images": 417, "longest_side": 512},
}
REAL_DATA_DIR = "data/artefact"


def prepare_data(profile: str, source: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None, synthetic: dict | None = None) -> Path:
    """Make sure a complete data folder exists and return it; every step runs only when its output is missing.

    Without ``source``: the synthetic stand-in of ``profile`` (SYNTHETIC; ``synthetic`` overrides its
    ``n_images``/``longest_side``, e.g. a stand-in stored at 768 px for bench/thin_check.py). With ``source``: a
    data folder already (its ``metadata.csv`` has ``transform``) is used in place, anything else (parquet shards
    or an exported folder) is ingested into ``data_dir`` (default data/artefact).
    """
    from heritage.data import augment, datafolder, ingest, splits, synthetic as synth

    if source is not None and _is_data_folder(Path(source)):
        target = Path(source)
    else:
        default = SYNTHETIC[profile]["data_dir"] if source is None else REAL_DATA_DIR
        target = Path(data_dir or default)
    if not (target / datafolder.METADATA_FILE).is_file():
        if source is None:
            spec = {**SYNTHETIC[profile], **(synthetic or {})}
            shards = target.parent / f".{target.name}-parquet"
            if shards.exists():  # an interrupted earlier attempt: start the shards again
                shutil.rmtree(shards)
            print(f"data: writing the synthetic stand-in ({spec['n_images']} images) into {target}")
            synth.write_parquet(shards, n_images=spec["n_images"], longest_side=spec["longest_side"])
            ingest.ingest(shards, target, longest_side=None)
            shutil.rmtree(shards)
        else:
            print(f"data: ingesting {source} into {target}")
            ingest.ingest(source, target)
    metadata = datafolder.read_metadata(target)
    if (metadata["transform"] == datafolder.IDENTITY).all():
        augment.augment(target)
    outdated = [p for p in splits.ALL_PROTOCOLS if _manifest_outdated(target, p)]  # leaky too: the seeds' table
    if outdated:
        splits.write_manifests(target, outdated)
    return target


def _manifest_outdated(data_dir: Path, protocol: str) -> bool:
    """True when ``protocol``'s manifest is missing, or stale for the data folder as it is now (said)."""
    from heritage.data import splits

    if not splits.manifest_path(data_dir, protocol).is_file():
        return True
    try:
        splits.load_manifest(data_dir, protocol)
    except errors.InputError as err:
        print(f"data: rebuilding the {protocol} manifest: {err}")
        return True
    return False


def _is_data_folder(folder: Path) -> bool:
    from heritage.data import datafolder

    metadata = folder / datafolder.METADATA_FILE
    return metadata.is_file() and "transform" in metadata.read_text(encoding="utf-8").splitlines()[0].split(",")

