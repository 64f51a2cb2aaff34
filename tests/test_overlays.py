"""heritage.inference.overlays (one home for overlays and legends) and the damage-map report drawn with it."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from heritage import fileio, report
from heritage.inference import damage_report, overlays, scans
from heritage.data import taxonomy

DUST, STICKER, LIGHTLEAK = (taxonomy.CLASS_IDS[n] for n in ("Dust", "Sticker", "Lightleak"))


def test_a_light_damage_region_on_a_white_scan_gets_a_dark_rim() -> None:
    white = np.full((9, 9, 3), 255, np.uint8)
    labels = np.zeros((9, 9), np.uint8)
    labels[3:6, 3:6] = LIGHTLEAK
    out = overlays.overlay(white, labels)
    assert out[4, 4].tolist() == overlays.overlay(white, labels, outline=0)[4, 4].tolist()  # interior tinted
    assert out[4, 4].tolist() != [255, 255, 255]
    rim = overlays.outline_mask(labels)
    expected = np.zeros((9, 9), bool)
    expected[2:7, 2:7] = True
    expected[3:6, 3:6] = False  # the rim is outside the region, which keeps its colour
    np.testing.assert_array_equal(rim, expected)
    assert (out[rim] == overlays.OUTLINE_RGB).all()
    assert (out[0, 0] == 255).all()  # Clean away from damage is untouched


def test_two_touching_damage_classes_are_separated_by_one_line_and_background_is_untinted() -> None:
    labels = np.zeros((4, 6), np.uint8)
    labels[:, :3], labels[:, 3:] = DUST, STICKER
    labels[0, 0] = taxonomy.IGNORE_INDEX
    rim = overlays.outline_mask(labels)
    assert rim[:, 2].all() and not rim[:, 3:].any()  # the lower id's column next to the higher id
    assert rim[0, 0]  # Background beside damage gets the rim too (it is untinted)
    assert overlays.overlay(np.zeros((4, 6, 3), np.uint8), labels, outline=0)[0, 0].tolist() == [0, 0, 0]


def test_outlines_of_a_tall_scan_do_not_depend_on_the_row_chunks(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice([0, DUST, STICKER, 255], size=(53, 17)).astype(np.uint8)
    whole = overlays.outline_mask(labels, width=2)
    monkeypatch.setattr(overlays, "ROW_CHUNK", 5)
    np.testing.assert_array_equal(overlays.outline_mask(labels, width=2), whole)


def test_the_legend_lists_clean_as_untinted_and_edges_every_swatch() -> None:
    page = overlays.legend_html([0, DUST, 255])
    assert "Clean (untinted)" in page and "Background (untinted)" in page
    assert "rgb(0, 0, 0)" not in page  # no black Clean swatch
    assert f"rgb{taxonomy.PALETTE[DUST]}" in page
    assert "border: 2px solid" in overlays.LEGEND_CSS
    handles = overlays.legend_handles([0, DUST])
    assert [h.get_label() for h in handles] == ["Clean (untinted)", "Dust"]
    assert handles[0].get_facecolor()[3] == 0  # hollow


# A 5 x 6 scan of one colour with a Dust block, one Sticker pixel and Background, and its overlay worked out by
# hand: the rim (OUTLINE_RGB) is every pixel with a neighbour of higher damage id (Clean and Background count as
# 0), damage pixels off the rim are floor((1 - alpha) scan + alpha colour) per channel, the rest is the scan.
SCAN_RGB = (100, 50, 201)
BLOCK_LABELS = [
    [0, 0, 0, 0, 0, 0],
    [0, DUST, DUST, 0, 0, 0],
    [0, DUST, DUST, 0, STICKER, 255],
    [0, 0, 0, 0, 0, 0],
    [255, 0, 0, 0, 0, 0],
]
BLOCK_RIM = [
    "####..",
    "#..###",
    "#..#.#",
    "######",
    "......",
]
# Dust #FF4A46 = (255, 74, 70), Sticker #8FB0FF = (143, 176, 255) over (100, 50, 201)
BLENDED = {0.5: {DUST: (177, 62, 135), STICKER: (121, 113, 228)},
           0.25: {DUST: (138, 56, 168), STICKER: (110, 81, 214)}}


@pytest.mark.parametrize("draw", [overlays.overlay, report.overlay], ids=["damage report", "report"])
@pytest.mark.parametrize("alpha", [0.5, 0.25])
@pytest.mark.parametrize("row_chunk", [overlays.ROW_CHUNK, 2])
def test_the_overlay_has_the_hand_computed_pixels(draw, alpha, row_chunk, monkeypatch) -> None:
    monkeypatch.setattr(overlays, "ROW_CHUNK", row_chunk)  # the same pixels whatever the row chunks
    labels = np.array(BLOCK_LABELS, np.uint8)
    rgb = np.empty((5, 6, 3), np.uint8)
    rgb[:] = SCAN_RGB
    out = draw(rgb, labels, alpha=alpha)
    for y, x in np.ndindex(labels.shape):
        if BLOCK_RIM[y][x] == "#":
            expected = overlays.OUTLINE_RGB
        else:
            expected = BLENDED[alpha].get(int(labels[y, x]), SCAN_RGB)
        assert tuple(out[y, x]) == expected, (y, x)
    assert (rgb == SCAN_RGB).all()  # the scan itself is not drawn on


def embedded_images(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data)))
            for data in re.findall(r"data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)", page)]


def test_a_small_scan_is_shown_beside_its_overlay_enlarged_with_nearest_neighbour() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (40, 96, 3), dtype=np.uint8)
    labels = np.zeros((40, 96), np.uint8)
    labels[10:20, 10:30] = STICKER
    page = damage_report.render_report("s", "s.png", rgb, labels, damage_report.area_table(labels), {})
    scan, shown = embedded_images(page)
    assert scan.size == shown.size and scan.size[0] >= overlays.DISPLAY_MIN_WIDTH
    factor = scan.size[0] // 96
    np.testing.assert_array_equal(np.asarray(scan), overlays.enlarge(rgb, factor))  # PNG, nearest
    assert "Sticker" in page and "Clean (untinted)" in page
    assert 'class="pair"' in page
    assert f"blended at {overlays.ALPHA:.0%} opacity" in page  # the overlay's own opacity, stated


def test_a_large_scan_is_shown_reduced() -> None:
    rgb = np.zeros((300, 2000, 3), np.uint8)
    labels = np.zeros((300, 2000), np.uint8)
    scan_view, overlay_view, factor = damage_report.display_pair(rgb, labels)
    assert factor == 1 and scan_view.shape[1] == damage_report.PREVIEW_SIDE == overlay_view.shape[1]


def finished_run(tmp_path, miou: float, all_clean: float):
    run = tmp_path / "run"
    metrics = {"poc": "poc59v2_flagship", "encoder": "convnext_tiny", "protocol": "kfold", "fold": "fold0",
               "config_hash": "h", "profile": "smoke", "epochs": 3, "pretrained": False,
               "test": {"miou": miou, "all_clean_miou": all_clean, "per_class": {}}}
    fileio.write_json(run / "metrics.json", metrics)
    return run


@pytest.mark.parametrize("miou, warned", [(0.05, True), (0.5, False)])
def test_the_report_banner_says_in_red_when_the_run_is_below_its_all_clean_baseline(tmp_path, miou, warned):
    paragraph = damage_report.provenance_html(finished_run(tmp_path, miou, all_clean=0.10))
    assert "Provenance: smoke profile" in paragraph and "trained from scratch" in paragraph
    assert ("class='banner warning'" in paragraph) is warned
    assert f"{100 * miou:.2f}%" in paragraph and "10.00%" in paragraph
    assert "warning" in damage_report.provenance_html(tmp_path / "nowhere")  # not evaluated: said, in red


def test_write_outputs_puts_the_banner_in_the_report(tmp_path) -> None:
    scan = scans.Scan(np.full((8, 8, 3), 200, np.uint8), None)
    labels = np.zeros((8, 8), np.uint8)
    report = damage_report.ReportOptions(provenance=damage_report.provenance_html(finished_run(tmp_path, 0.05, 0.1)))
    damage_report.write_outputs(tmp_path / "s", "s", "s.png", scan, labels, report)
    assert "is not above its all-Clean baseline" in (tmp_path / "s" / "report.html").read_text()
    areas = pd.read_csv(tmp_path / "s" / "areas.csv").set_index("class")
    assert areas.loc["Clean", "pixels"] == 64 and areas.loc["Clean", "percent_of_artwork"] == 100
    assert (areas.drop(index="Clean")["pixels"] == 0).all()
