"""heritage.data.taxonomy: ids, palette round trips, coarse/binary mappings, bad values."""

from __future__ import annotations

import numpy as np
import pytest

from heritage.data import taxonomy


def all_values_mask() -> np.ndarray:
    """A 4 x 17 mask holding every valid value (0..15 and 255) in every row."""
    row = np.array([*range(taxonomy.NUM_CLASSES), taxonomy.IGNORE_INDEX], dtype=np.uint8)
    return np.tile(row, (4, 1))


def test_class_table_is_the_artefact_one():
    assert taxonomy.NUM_CLASSES == 16
    assert taxonomy.CLASS_NAMES[0] == "Clean"
    assert taxonomy.CLASS_IDS["Lightleak"] == 15
    assert len(set(taxonomy.CLASS_NAMES)) == 16
    assert taxonomy.VALID_MASK_VALUES == frozenset([*range(16), 255])


def test_palette_is_the_one_of_the_seeds_download_script():
    # hex colours of the script, converted by hand
    assert taxonomy.PALETTE[taxonomy.CLASS_IDS["Clean"]] == (0, 0, 0)
    assert taxonomy.PALETTE[taxonomy.CLASS_IDS["Material loss"]] == (28, 230, 255)  # #1CE6FF
    assert taxonomy.PALETTE[taxonomy.CLASS_IDS["Fold"]] == (255, 165, 0)  # #FFA500
    assert taxonomy.PALETTE[taxonomy.CLASS_IDS["Puncture"]] == (153, 125, 135)  # #997D87
    assert taxonomy.PALETTE[taxonomy.CLASS_IDS["Lightleak"]] == (246, 255, 27)  # #F6FF1B
    assert taxonomy.BACKGROUND_RGB == (90, 0, 7)  # #5A0007
    assert list(taxonomy.PALETTE_HEX) == [*taxonomy.CLASS_NAMES, taxonomy.BACKGROUND_NAME]
    with pytest.raises(ValueError, match="#RRGGBB"):
        taxonomy.hex_to_rgb("1CE6FF")


def test_palette_colours_are_distinct_and_background_is_not_a_class_colour():
    colours = set(taxonomy.PALETTE)
    assert len(colours) == taxonomy.NUM_CLASSES
    assert taxonomy.BACKGROUND_RGB not in colours


def test_mask_rgb_round_trip_covers_every_id():
    mask = all_values_mask()
    rgb = taxonomy.mask_to_rgb(mask)
    assert rgb.shape == (*mask.shape, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 3]) == taxonomy.PALETTE[3]
    assert tuple(rgb[0, -1]) == taxonomy.BACKGROUND_RGB
    np.testing.assert_array_equal(taxonomy.rgb_to_mask(rgb), mask)


def test_rgb_to_mask_ignores_an_alpha_channel():
    rgb = taxonomy.mask_to_rgb(all_values_mask())
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(taxonomy.rgb_to_mask(rgba), all_values_mask())


def test_rgb_to_mask_names_an_unknown_colour_and_its_position():
    rgb = taxonomy.mask_to_rgb(all_values_mask())
    rgb[2, 5] = (1, 2, 3)
    with pytest.raises(ValueError, match=r"my_mask\.png: colour \(1, 2, 3\) at \(x=5, y=2\)"):
        taxonomy.rgb_to_mask(rgb, source="my_mask.png")


def test_rgb_to_mask_refuses_a_single_channel_image():
    with pytest.raises(ValueError, match=r"expected an RGB image, got shape \(4, 17\)"):
        taxonomy.rgb_to_mask(all_values_mask())


def test_palette_from_pairs_recovers_the_palette_and_detects_disagreement():
    mask = all_values_mask()
    rgb = taxonomy.mask_to_rgb(mask)
    found = taxonomy.palette_from_pairs(mask, rgb)
    assert found[7] == taxonomy.PALETTE[7]
    assert found[255] == taxonomy.BACKGROUND_RGB
    rgb[1, 7] = (9, 9, 9)  # id 7 drawn in two colours
    with pytest.raises(ValueError, match="class id 7 is drawn in 2 colours"):
        taxonomy.palette_from_pairs(mask, rgb)


def test_binary_mapping():
    binary = taxonomy.FINE_TO_BINARY[all_values_mask()][0]  # as losses and metrics index it
    assert binary[0] == 0  # Clean
    assert (binary[1:16] == 1).all()  # every damage class
    assert binary[16] == taxonomy.IGNORE_INDEX  # Background stays ignored
    assert taxonomy.FINE_TO_BINARY[16] == taxonomy.IGNORE_INDEX  # invalid ids are not silently Clean


# The coarse grouping written out by hand, one fine class per line: the seeds' POC-5.5 has a 4-class coarse head
# (their design notes name no grouping); ours is by the physical nature of the damage (taxonomy's docstring).
COARSE_BY_HAND = {
    "Material loss": "Substrate loss",
    "Peel": "Substrate loss",
    "Dust": "Deposits and additions",
    "Scratch": "Mechanical",
    "Hair": "Deposits and additions",
    "Dirt": "Deposits and additions",
    "Fold": "Mechanical",
    "Writing": "Deposits and additions",
    "Cracks": "Mechanical",
    "Staining": "Chromatic alteration",
    "Stamp": "Deposits and additions",
    "Sticker": "Deposits and additions",
    "Puncture": "Substrate loss",
    "Burn marks": "Substrate loss",
    "Lightleak": "Chromatic alteration",
}


def test_coarse_mapping():
    assert taxonomy.COARSE_NAMES == ("Substrate loss", "Mechanical", "Deposits and additions", "Chromatic alteration")
    # fine id -> coarse id, by hand: 0 Substrate loss, 1 Mechanical, 2 Deposits and additions, 3 Chromatic alteration
    expected = [255, 0, 0, 2, 1, 2, 2, 1, 2, 1, 3, 2, 2, 0, 0, 3]
    assert [COARSE_BY_HAND.get(name) for name in taxonomy.CLASS_NAMES] == [
        None if i == 255 else taxonomy.COARSE_NAMES[i] for i in expected]  # the two tables agree
    coarse = taxonomy.FINE_TO_COARSE[all_values_mask()][0]  # as losses and metrics index it
    assert coarse.tolist() == [*expected, taxonomy.IGNORE_INDEX]  # Clean and Background: no coarse group
    assert (taxonomy.FINE_TO_COARSE[taxonomy.NUM_CLASSES:] == taxonomy.IGNORE_INDEX).all()  # invalid ids ignored
    assert taxonomy.COARSE_OF_FINE == COARSE_BY_HAND


def test_check_mask_values_accepts_valid_and_names_bad_values():
    taxonomy.check_mask_values(all_values_mask(), "ok.png")
    bad = all_values_mask()
    bad[0, 0], bad[1, 1] = 16, 200
    with pytest.raises(ValueError, match=r"bad\.png: mask values \[16, 200\] are not ARTeFACT class ids"):
        taxonomy.check_mask_values(bad, "bad.png")
