"""heritage.data.augment: three copies per original, source ids kept, rotation borders are Background."""

from __future__ import annotations

import signal
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from heritage.data import augment, datafolder, taxonomy
from heritage import cli, fileio


def outside(shape: tuple[int, int], angle: float, margin: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose pre-image under the rotation is clearly outside / clearly inside the original."""
    height, width = shape
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
    inverse = cv2.invertAffineTransform(matrix)
    ys, xs = np.mgrid[0:height, 0:width]
    src_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    src_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    distance_out = np.maximum.reduce([-src_x, src_x - (width - 1), -src_y, src_y - (height - 1)])
    return distance_out > margin, distance_out < -margin


def test_every_original_gets_three_copies_with_its_source_id(data_dir):
    metadata = datafolder.read_metadata(data_dir)
    originals = metadata[metadata["transform"] == "identity"].set_index("id")
    assert len(metadata) == 4 * len(originals)
    derived = metadata[metadata["transform"] != "identity"]
    assert sorted(derived["transform"].unique()) == sorted(augment.TRANSFORMS)
    for row in derived.itertuples():
        source = originals.loc[row.source_id]
        assert row.id == f"{row.source_id}__{row.transform}"
        assert (row.material, row.content, row.width, row.height) == (
            source.material, source.content, source.width, source.height)
        assert datafolder.image_path(data_dir, row.id).is_file()
        assert datafolder.annotation_path(data_dir, row.id).is_file()


def test_flips_are_exact(data_dir):
    sample = datafolder.read_metadata(data_dir)["id"][0]
    image = fileio.read_rgb(datafolder.image_path(data_dir, sample))
    mask = fileio.read_mask(datafolder.annotation_path(data_dir, sample))
    for transform, flip in (("hflip", np.fliplr), ("vflip", np.flipud)):
        new_id = augment.derived_id(sample, transform)
        np.testing.assert_array_equal(fileio.read_rgb(datafolder.image_path(data_dir, new_id)), flip(image))
        np.testing.assert_array_equal(fileio.read_mask(datafolder.annotation_path(data_dir, new_id)), flip(mask))


def test_rotation_fills_uncovered_pixels_with_background_never_clean():
    image = np.full((40, 64, 3), 200, np.uint8)
    mask = np.zeros((40, 64), np.uint8)  # all Clean: any 0 outside would come from a 0 fill
    rotated_image, rotated_mask = augment.rotate(image, mask, 30.0)
    out, inside = outside(mask.shape, 30.0)
    assert out.sum() > 200  # the corners really are uncovered
    assert (rotated_mask[out] == taxonomy.IGNORE_INDEX).all()
    assert (rotated_mask[inside] == 0).all()
    assert (rotated_image[out] == augment.FILL_RGB).all()
    assert (rotated_image[inside] == 200).all()
    assert set(np.unique(rotated_mask)) == {0, taxonomy.IGNORE_INDEX}  # nearest neighbour: no blended ids


def test_rotated_copies_in_the_data_folder_have_background_borders(data_dir):
    metadata = datafolder.read_metadata(data_dir)
    for sample in metadata.loc[metadata["transform"] == "identity", "id"]:
        rotated = fileio.read_mask(datafolder.annotation_path(data_dir, augment.derived_id(sample, "rot")))
        original = fileio.read_mask(datafolder.annotation_path(data_dir, sample))
        out, _ = outside(rotated.shape, augment.rotation_angle(sample, 42))
        assert (rotated[out] == taxonomy.IGNORE_INDEX).all(), sample
        assert set(np.unique(rotated)) <= set(np.unique(original)) | {taxonomy.IGNORE_INDEX}


def test_rotation_angle_is_seeded_per_sample():
    angles = [augment.rotation_angle(f"id{i}", 42) for i in range(50)]
    assert angles == [augment.rotation_angle(f"id{i}", 42) for i in range(50)]
    assert all(-augment.MAX_ROTATION_DEG <= a <= augment.MAX_ROTATION_DEG for a in angles)
    assert len(set(angles)) == 50
    assert augment.rotation_angle("id0", 43) != angles[0]


def test_augment_is_idempotent_and_deterministic(copy_data_dir, data_dir):
    folder = copy_data_dir()
    table = augment.augment(folder, seed=42)
    pd.testing.assert_frame_equal(table, datafolder.read_metadata(data_dir))
    rot = augment.derived_id(table["id"][0], "rot")
    assert datafolder.image_path(folder, rot).read_bytes() == datafolder.image_path(data_dir, rot).read_bytes()
    augment.augment(folder, seed=7)  # another seed: other angles, same rows
    assert len(datafolder.read_metadata(folder)) == len(table)
    assert (datafolder.annotation_path(folder, rot).read_bytes()
            != datafolder.annotation_path(data_dir, rot).read_bytes())


def test_unknown_transform_and_missing_data_folder(tmp_path):
    with pytest.raises(ValueError, match="unknown transform 'shear'"):
        augment.apply_transform(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), "shear")
    with pytest.raises(FileNotFoundError, match=r"metadata\.csv: file not found"):
        augment.augment(tmp_path)


def test_cli_augment(copy_data_dir, capsys):
    folder = copy_data_dir()
    assert cli.main(["data", "augment", "--data", str(folder), "--seed", "42"]) == 0
    assert "24 originals + 72 augmented copies" in capsys.readouterr().out


KILL_DURING_AUGMENT = """
import os, signal, sys
from heritage.data import augment
from heritage import fileio
real, calls = fileio.write_png, []
def write_png(path, array):
    calls.append(path)
    if len(calls) == 5:
        with fileio.atomic_path(path) as tmp:  # kill -9 mid-write: the temporary stays
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    real(path, array)
fileio.write_png = write_png
augment.augment(sys.argv[1])
"""


def test_temporaries_of_a_killed_augment_are_removed_by_the_next_run(copy_data_dir):
    folder = copy_data_dir()
    result = subprocess.run([sys.executable, "-c", KILL_DURING_AUGMENT, str(folder)], capture_output=True)
    assert result.returncode == -signal.SIGKILL
    junk = list(folder.rglob("*.tmp"))
    assert len(junk) == 1 and fileio.TEMP_FILE_PATTERN.fullmatch(junk[0].name)
    augment.augment(folder)
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
