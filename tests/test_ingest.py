"""heritage.data.ingest: parquet shards and exported folders -> data folder, and every bad input."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import N_SYNTHETIC_IMAGES, PARQUET_SCHEMA, SYNTHETIC_LONGEST_SIDE, make_row, write_rows
from PIL import Image, ImageOps
from PIL.JpegImagePlugin import JpegImageFile

from heritage import cli, fileio, locks
from heritage.data import datafolder, decoding, ingest, synthetic as synth, taxonomy, vocabulary


def shard_rows(synthetic_parquet: Path) -> dict[str, dict]:
    rows = {}
    for shard in ingest.find_shards(synthetic_parquet):
        for row in pq.read_table(shard).to_pylist():
            rows[row["id"]] = row
    return rows


def folder_snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def good_rows(n: int = 3) -> list[dict]:
    return [make_row(f"s{i}", seed=i) for i in range(n)]


# --- the parquet route ---------------------------------------------------------------------------


def test_ingest_resizes_to_the_longest_side_and_writes_the_data_folder(synthetic_parquet, tmp_path):
    metadata = ingest.ingest(synthetic_parquet, tmp_path / "data", longest_side=48)
    assert list(metadata.columns) == [*datafolder.METADATA_COLUMNS, *datafolder.ORIGINAL_SIZE_COLUMNS]
    assert len(metadata) == N_SYNTHETIC_IMAGES
    assert (metadata["source_id"] == metadata["id"]).all()
    assert (metadata["transform"] == "identity").all()
    assert (np.maximum(metadata["width"], metadata["height"]) == 48).all()
    pd.testing.assert_frame_equal(datafolder.read_metadata(tmp_path / "data"), metadata)
    originals = shard_rows(synthetic_parquet)
    for row in metadata.itertuples():
        image = fileio.read_rgb(datafolder.image_path(tmp_path / "data", row.id))
        mask = fileio.read_mask(datafolder.annotation_path(tmp_path / "data", row.id))
        assert image.shape == (row.height, row.width, 3) and mask.shape == (row.height, row.width)
        original_mask = fileio.read_mask(originals[row.id]["annotation"]["bytes"])
        # nearest neighbour: the resized mask only holds ids of the original, never blends
        assert set(np.unique(mask)) <= set(np.unique(original_mask))
        assert row.material == originals[row.id]["material"] and row.content == originals[row.id]["content"]


def test_ingest_never_upscales_and_keeps_pixels_when_no_resize_is_needed(synthetic_parquet, tmp_path):
    metadata = ingest.ingest(synthetic_parquet, tmp_path / "data", longest_side=SYNTHETIC_LONGEST_SIDE * 4)
    row = shard_rows(synthetic_parquet)[metadata["id"][0]]
    np.testing.assert_array_equal(fileio.read_rgb(datafolder.image_path(tmp_path / "data", row["id"])),
                                  fileio.read_rgb(row["image"]["bytes"]))
    np.testing.assert_array_equal(fileio.read_mask(datafolder.annotation_path(tmp_path / "data", row["id"])),
                                  fileio.read_mask(row["annotation"]["bytes"]))


def test_ingest_reads_a_single_parquet_file_and_ignores_extra_columns(tmp_path):
    rows = [{**row, "type": "scan", "llava_description": "a test"} for row in good_rows()]
    schema = PARQUET_SCHEMA.append(pa.field("llava_description", pa.string()))
    shard = write_rows(tmp_path / "one.parquet", rows, schema)
    metadata = ingest.ingest(shard, tmp_path / "data", longest_side=None)
    assert metadata["id"].tolist() == ["s0", "s1", "s2"]
    assert (metadata["width"] == 48).all() and (metadata["height"] == 32).all()


def test_rerunning_ingest_over_its_output_is_safe(synthetic_parquet, tmp_path):
    ingest.ingest(synthetic_parquet, tmp_path / "data", longest_side=40)
    first = folder_snapshot(tmp_path / "data")
    ingest.ingest(synthetic_parquet, tmp_path / "data", longest_side=40)
    assert folder_snapshot(tmp_path / "data") == first
    assert not list((tmp_path / "data").glob(".*"))  # no staging folder or temporary file left


def test_cli_ingest(synthetic_parquet, tmp_path, capsys):
    assert cli.main(["data", "ingest", "--source", str(synthetic_parquet), "--out", str(tmp_path / "d"),
                     "--longest-side", "32"]) == 0
    assert f"ingested {N_SYNTHETIC_IMAGES} samples" in capsys.readouterr().out
    assert datafolder.read_metadata(tmp_path / "d")["width"].max() == 32


# --- the folder route ----------------------------------------------------------------------------


def test_ingest_from_an_exported_folder_keeps_originals_only(data_dir, tmp_path):
    metadata = ingest.ingest(data_dir, tmp_path / "again", longest_side=None)  # data_dir is augmented
    assert len(metadata) == N_SYNTHETIC_IMAGES
    assert not metadata["id"].str.contains("__").any()
    sample = metadata["id"][5]
    assert (datafolder.image_path(tmp_path / "again", sample).read_bytes()
            == datafolder.image_path(data_dir, sample).read_bytes())


def test_ingest_from_an_export_with_path_columns(tmp_path):
    """The layout of the published ARTeFACT export: metadata.csv with image_path/annotation_path."""
    export = tmp_path / "export"
    rows = good_rows(2)
    for row in rows:
        fileio.write_bytes(export / "imgs" / f"{row['id']}.png", row["image"]["bytes"])
        fileio.write_bytes(export / "masks" / f"{row['id']}.png", row["annotation"]["bytes"])
    pd.DataFrame({
        "id": [r["id"] for r in rows], "material": "Canvas", "content": "Line art",
        "image_path": [f"imgs/{r['id']}.png" for r in rows], "annotation_path": [f"masks/{r['id']}.png" for r in rows],
    }).to_csv(export / "metadata.csv", index=False)
    metadata = ingest.ingest(export, tmp_path / "data", longest_side=24)
    assert metadata["id"].tolist() == ["s0", "s1"]
    assert (metadata["width"] == 24).all() and (metadata["height"] == 16).all()


def export_folder(tmp_path: Path, rows: list[dict]) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    for row in rows:
        fileio.write_bytes(datafolder.image_path(folder, row["id"]), row["image"]["bytes"])
        fileio.write_bytes(datafolder.annotation_path(folder, row["id"]), row["annotation"]["bytes"])
    pd.DataFrame({"id": [r["id"] for r in rows], "material": "Paper", "content": "Line art"}).to_csv(
        folder / "metadata.csv", index=False)
    return folder


def test_export_missing_column(tmp_path):
    folder = export_folder(tmp_path, good_rows(1))
    pd.read_csv(folder / "metadata.csv").drop(columns="content").to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"metadata\.csv: missing column\(s\) \['content'\]"):
        ingest.ingest(folder, tmp_path / "data")


def test_export_missing_file(tmp_path):
    folder = export_folder(tmp_path, good_rows(2))
    datafolder.annotation_path(folder, "s1").unlink()
    with pytest.raises(FileNotFoundError, match=r"annotations/s1\.png"):
        ingest.ingest(folder, tmp_path / "data")


def test_export_bad_mask_values_name_the_file(tmp_path):
    folder = export_folder(tmp_path, good_rows(2))
    fileio.write_png(datafolder.annotation_path(folder, "s1"), np.full((32, 48), 42, np.uint8))
    with pytest.raises(ValueError, match=r"annotations/s1\.png: mask values \[42\]"):
        ingest.ingest(folder, tmp_path / "data")


def test_export_size_mismatch(tmp_path):
    folder = export_folder(tmp_path, good_rows(1))
    fileio.write_png(datafolder.annotation_path(folder, "s0"), np.zeros((30, 48), np.uint8))
    with pytest.raises(ValueError, match=r"id 's0'.*image is 48x32 but annotation is 48x30"):
        ingest.ingest(folder, tmp_path / "data")


def test_export_empty_dataset(tmp_path):
    folder = export_folder(tmp_path, [])
    with pytest.raises(ValueError, match=r"metadata\.csv: empty dataset"):
        ingest.ingest(folder, tmp_path / "data")


# --- bad parquet input ---------------------------------------------------------------------------


def ingest_rows(tmp_path: Path, rows: list[dict], schema: pa.Schema = PARQUET_SCHEMA) -> pd.DataFrame:
    write_rows(tmp_path / "src" / "data" / "train-00000-of-00001.parquet", rows, schema)
    return ingest.ingest(tmp_path / "src", tmp_path / "data", longest_side=None)


def with_image(row: dict, column: str, data: bytes | None) -> dict:
    return {**row, column: {"bytes": data, "path": "x.png"}}


def test_corrupt_image_bytes_name_shard_row_and_id(tmp_path):
    rows = good_rows()
    rows[1] = with_image(rows[1], "image", b"this is not a png")
    with pytest.raises(ValueError, match=r"train-00000-of-00001\.parquet: row 1 \(id 's1'\): image: cannot read image"):
        ingest_rows(tmp_path, rows)


def test_truncated_mask_bytes(tmp_path):
    rows = good_rows()
    truncated = rows[2]["annotation"]["bytes"]
    rows[2] = with_image(rows[2], "annotation", truncated[: len(truncated) // 2])
    with pytest.raises(ValueError, match=r"row 2 \(id 's2'\): annotation: cannot read image"):
        ingest_rows(tmp_path, rows)


def test_missing_image_bytes(tmp_path):
    rows = good_rows()
    rows[0] = with_image(rows[0], "image", None)
    with pytest.raises(ValueError, match=r"row 0 \(id 's0'\): column 'image' holds no embedded image bytes"):
        ingest_rows(tmp_path, rows)


def test_mask_values_outside_the_taxonomy(tmp_path):
    mask = np.zeros((32, 48), np.uint8)
    mask[3, 4] = 16
    rows = [*good_rows(2), make_row("bad", mask=mask)]
    with pytest.raises(ValueError, match=r"id 'bad'\): annotation: mask values \[16\].*--binary-mask-class"):
        ingest_rows(tmp_path, rows)


def test_colour_mask_is_refused(tmp_path):
    rows = good_rows(1)
    rgb = taxonomy.mask_to_rgb(fileio.read_mask(rows[0]["annotation"]["bytes"]))
    rows[0] = with_image(rows[0], "annotation", fileio.encode_png(rgb))
    with pytest.raises(ValueError, match="single-channel 8-bit, got mode RGB .*pass --rgb-masks.*--binary-mask-class"):
        ingest_rows(tmp_path, rows)


def test_image_mask_size_mismatch(tmp_path):
    rows = good_rows(1)
    rows[0] = with_image(rows[0], "annotation", fileio.encode_png(np.zeros((32, 40), np.uint8)))
    with pytest.raises(ValueError, match=r"id 's0'\): image is 48x32 but annotation is 40x32"):
        ingest_rows(tmp_path, rows)


def test_parquet_missing_column(tmp_path):
    schema = pa.schema([f for f in PARQUET_SCHEMA if f.name != "material"])
    with pytest.raises(ValueError, match=r"train-00000-of-00001\.parquet: missing column\(s\) \['material'\]"):
        ingest_rows(tmp_path, good_rows(), schema)


def test_empty_parquet(tmp_path):
    with pytest.raises(ValueError, match="empty dataset"):
        ingest_rows(tmp_path, [])


def test_folder_without_shards(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match=r"nothing: no parquet shards"):
        ingest.ingest(tmp_path / "nothing", tmp_path / "data")


def test_duplicated_and_unsafe_ids(tmp_path):
    with pytest.raises(ValueError, match=r"row 1 \(id 's0'\): duplicated id, first seen at .*row 0"):
        ingest_rows(tmp_path, [make_row("s0"), make_row("s0", seed=1)])
    for bad_id in ("../escape", "a__hflip"):
        with pytest.raises(ValueError, match="is not usable as a file name"):
            ingest_rows(tmp_path, [make_row(bad_id)])


def test_empty_material(tmp_path):
    with pytest.raises(ValueError, match=r"id 's0'\): column 'material' is empty"):
        ingest_rows(tmp_path, [make_row("s0", material="")])


def test_bad_longest_side(tmp_path):
    with pytest.raises(ValueError, match="longest_side must be a positive number"):
        ingest.ingest(tmp_path, tmp_path / "data", longest_side=-5)


def test_failed_ingest_leaves_earlier_outputs_intact_and_no_temporary_files(tmp_path):
    ingest_rows(tmp_path, good_rows(3))
    before = folder_snapshot(tmp_path / "data")
    rows = [make_row(f"s{i}", seed=10 + i) for i in range(4)]  # new pixels for the same ids ...
    rows[3] = with_image(rows[3], "image", b"garbage")  # ... but the last row is broken
    with pytest.raises(ValueError, match=r"row 3 \(id 's3'\).*the 3 row\(s\) converted before it are kept"):
        ingest_rows(tmp_path, rows)
    resume = tmp_path / "data" / ingest.RESUME_DIR
    after = {name: data for name, data in folder_snapshot(tmp_path / "data").items()
             if not name.startswith(ingest.RESUME_DIR)}
    assert after == before  # the finished data folder is untouched; rows 0-2 wait in the staging folder
    assert sorted(p.name for p in (resume / "images").iterdir()) == ["s0.png", "s1.png", "s2.png"]
    assert [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".")] == [ingest.RESUME_DIR]
    assert not [p for p in (tmp_path / "data").rglob("*") if p.name.endswith(".tmp")]


def test_read_metadata_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"metadata\.csv: file not found \(run `python -m heritage data"):
        datafolder.read_metadata(tmp_path)
    ingest_rows(tmp_path, good_rows(2))
    table = pd.read_csv(tmp_path / "data" / "metadata.csv")
    table.drop(columns="source_id").to_csv(tmp_path / "data" / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['source_id'\]"):
        datafolder.read_metadata(tmp_path / "data")
    table.assign(width=[48, -1]).to_csv(tmp_path / "data" / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"column 'width' is not a positive integer for id\(s\) \['s1'\]"):
        datafolder.read_metadata(tmp_path / "data")
    table.assign(source_id=["s0", "gone"]).to_csv(tmp_path / "data" / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"source_id\(s\) \['gone'\] have no original"):
        datafolder.read_metadata(tmp_path / "data")
    table.assign(original_height=[32, 0]).to_csv(tmp_path / "data" / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"column 'original_height' is not a positive integer for id\(s\) \['s1'\]"):
        datafolder.read_metadata(tmp_path / "data")


def test_cli_help_of_the_data_steps_does_not_import_torch():
    import subprocess
    import sys

    code = ("import contextlib, io, sys; from heritage import cli\n"
            "for step in ('ingest', 'augment', 'split', 'weights', 'stats'):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        cli.main(['data', step, '--help'])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "cli.main(['data', 'ingest', '--help'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--longest-side" in result.stdout


def test_copy_of_shards_with_data_subfolder_is_found(synthetic_parquet, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for shard in ingest.find_shards(synthetic_parquet):
        shutil.copy(shard, flat / shard.name)
    assert [p.name for p in ingest.find_shards(flat)] == [p.name for p in ingest.find_shards(synthetic_parquet)]


# --- decompression bombs and large scans (issue 10, item 3) ---------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height greyscale pixels whose pixel data is cut short.

    Enough for a header read; decoding it would fail ("truncated"), so a refusal naming the size proves
    the check ran before any decoding.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1) * 4)) + chunk(b"IEND", b""))


def test_a_decompression_bomb_below_pils_hard_limit_is_refused_from_its_header(tmp_path):
    rows = good_rows(2)
    # 441 Mpx: over the default limit, under PIL's hard limit (2 x 400 Mpx), as in the report
    rows[1] = with_image(rows[1], "image", png_header_only(21000, 21000))
    with pytest.raises(ValueError, match=r"row 1 \(id 's1'\): image: 21000x21000 = 441,000,000 pixels is above the "
                                         r"limit of 250,000,000 .*--max-pixels"):
        ingest_rows(tmp_path, rows)
    assert not (tmp_path / "data" / "metadata.csv").exists()


def test_max_pixels_is_configurable_and_checks_annotations_too(tmp_path):
    write_rows(tmp_path / "src" / "data" / "train-00000-of-00001.parquet", good_rows(2))
    with pytest.raises(ValueError, match=r"row 0 \(id 's0'\): image: 48x32 = 1,536 pixels is above the limit of 1,000"):
        ingest.ingest(tmp_path / "src", tmp_path / "data", max_pixels=1000)
    rows = good_rows(1)
    rows[0] = with_image(rows[0], "annotation", png_header_only(4000, 3000))
    write_rows(tmp_path / "src2" / "x.parquet", rows)
    with pytest.raises(ValueError, match=r"id 's0'\): annotation: 4000x3000 = 12,000,000 pixels is above the limit"):
        ingest.ingest(tmp_path / "src2", tmp_path / "data", max_pixels=2000)
    assert len(ingest.ingest(tmp_path / "src", tmp_path / "data", max_pixels=1536)) == 2


def test_cli_max_pixels_refusal_is_one_line_naming_the_row(tmp_path, capsys):
    write_rows(tmp_path / "src" / "data" / "train-00000-of-00001.parquet", good_rows(2))
    code = cli.main(["data", "ingest", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "d"),
                     "--max-pixels", "1000"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("heritage")]
    assert code == 2 and len(lines) == 1  # (the rest is tqdm's progress bar)
    assert lines[0].startswith("heritage data ingest: ") and "row 0 (id 's0'): image: 48x32" in lines[0]


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def split_sample(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Dark left part / bright right part, and a mask with Dust exactly under the bright part."""
    image = np.full((height, width, 3), 20, np.uint8)
    image[:, width * 5 // 8:] = 235
    mask = np.zeros((height, width), np.uint8)
    mask[:, width * 5 // 8:] = taxonomy.CLASS_IDS["Dust"]
    return image, mask


def test_a_large_jpeg_is_decoded_reduced_and_stays_aligned_with_its_mask(tmp_path, monkeypatch):
    image, mask = split_sample(2048, 1024)
    row = {**make_row("big"), "image": {"bytes": encode(Image.fromarray(image), "JPEG", quality=95), "path": "big.jpg"},
           "annotation": {"bytes": fileio.encode_png(mask), "path": "big.png"}}
    write_rows(tmp_path / "src" / "x.parquet", [row])
    decoded_sizes = []
    original_load = JpegImageFile.load

    def recording_load(self):  # the real decoder; records the size it decodes at
        decoded_sizes.append(self.size)
        return original_load(self)

    monkeypatch.setattr(JpegImageFile, "load", recording_load)
    metadata = ingest.ingest(tmp_path / "src", tmp_path / "data", longest_side=128)
    assert decoded_sizes and max(decoded_sizes) == (256, 128)  # libjpeg's 1/8 scale, not 2048x1024
    assert (metadata["width"][0], metadata["height"][0]) == (128, 64)
    out_image = fileio.read_rgb(datafolder.image_path(tmp_path / "data", "big"))
    out_mask = fileio.read_mask(datafolder.annotation_path(tmp_path / "data", "big"))
    bright = out_image[..., 0] > 128
    assert (bright == (out_mask == taxonomy.CLASS_IDS["Dust"])).mean() > 0.99  # aligned, at most a seam column
    assert set(np.unique(out_mask)) == {0, taxonomy.CLASS_IDS["Dust"]}  # nearest neighbour: no blended ids


# --- real annotation formats (issue 10, item 12) --------------------------------------------------


def block_mask(width: int = 64, height: int = 48, classes: tuple[int, ...] = (0, 3, 7, 255)) -> np.ndarray:
    """Class rectangles aligned on 16-pixel blocks, so JPEG's 8x8 DCT and chroma subsampling keep them apart."""
    mask = np.zeros((height, width), np.uint8)
    for i, class_id in enumerate(classes):
        mask[:, i * 16: (i + 1) * 16] = class_id
    return mask


def row_with_mask(sample_id: str, annotation: bytes, size: tuple[int, int] = (64, 48)) -> dict:
    return with_image(make_row(sample_id, size=size), "annotation", annotation)


def test_binary_masks_need_the_opt_in_and_map_to_the_named_class(tmp_path):
    truth = np.zeros((48, 64), np.uint8)
    truth[13:35, 11:47] = 1  # edges inside JPEG blocks: ringing
    png = encode(Image.fromarray(truth * 255).convert("1"), "PNG")
    jpeg = encode(Image.fromarray(truth * 255), "JPEG", quality=75)  # lossy: ringing around the square
    assert len(np.unique(np.asarray(Image.open(io.BytesIO(jpeg))))) > 2
    write_rows(tmp_path / "src" / "x.parquet", [row_with_mask("png", png), row_with_mask("jpeg", jpeg)])
    with pytest.raises(ValueError, match=r"id 'png'\): annotation: a class-id mask must be single-channel 8-bit, "
                                         r"got mode 1 .*--binary-mask-class"):
        ingest.ingest(tmp_path / "src", tmp_path / "data")
    masks = decoding.MaskFormat(binary_class="Dust", binary_threshold=128)
    ingest.ingest(tmp_path / "src", tmp_path / "data", longest_side=None, masks=masks)
    for sample_id in ("png", "jpeg"):
        mask = fileio.read_mask(datafolder.annotation_path(tmp_path / "data", sample_id))
        np.testing.assert_array_equal(mask, truth * taxonomy.CLASS_IDS["Dust"])


def test_binary_mask_options_are_checked():
    with pytest.raises(ValueError, match="--binary-mask-class 'dust' is not a damage class"):
        decoding.MaskFormat(binary_class="dust")
    with pytest.raises(ValueError, match="--binary-threshold must be in 1..255, got 0"):
        decoding.MaskFormat(binary_class="Dust", binary_threshold=0)
    with pytest.raises(ValueError, match="exclude each other"):
        decoding.MaskFormat(binary_class="Dust", rgb=True)
    with pytest.raises(ValueError, match="apply to --rgb-masks only"):
        decoding.MaskFormat(unmatched_background=True)


def random_mask(seed: int = 0, size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(20):
        y, x = rng.integers(0, size - 20, 2)
        h, w = rng.integers(5, 30, 2)
        mask[y: y + h, x: x + w] = rng.choice([*range(taxonomy.NUM_CLASSES), taxonomy.IGNORE_INDEX])
    return mask


def test_rgb_masks_are_mapped_through_the_palette_even_as_lossy_jpeg(tmp_path):
    truth = random_mask()
    rgb = taxonomy.mask_to_rgb(truth)
    jpeg = encode(Image.fromarray(rgb), "JPEG", quality=90, subsampling=0)
    assert not np.array_equal(np.asarray(Image.open(io.BytesIO(jpeg))), rgb)  # really lossy
    rows = [row_with_mask("png", fileio.encode_png(rgb), (128, 128)), row_with_mask("jpeg", jpeg, (128, 128))]
    write_rows(tmp_path / "src" / "x.parquet", rows)
    ingest.ingest(tmp_path / "src", tmp_path / "data", longest_side=None, masks=decoding.MaskFormat(rgb=True))
    for sample_id in ("png", "jpeg"):
        np.testing.assert_array_equal(fileio.read_mask(datafolder.annotation_path(tmp_path / "data", sample_id)), truth)


def test_chroma_subsampled_jpeg_edges_are_refused_or_ignored_as_background_when_asked(tmp_path):
    truth = random_mask(1)
    jpeg = encode(Image.fromarray(taxonomy.mask_to_rgb(truth)), "JPEG", quality=90)  # PIL's default 4:2:0
    write_rows(tmp_path / "src" / "x.parquet", [row_with_mask("s0", jpeg, (128, 128))])
    with pytest.raises(ValueError, match=r"is not an ARTeFACT palette colour .*--unmatched-as-background"):
        ingest.ingest(tmp_path / "src", tmp_path / "data", longest_side=None, masks=decoding.MaskFormat(rgb=True))
    masks = decoding.MaskFormat(rgb=True, unmatched_background=True)
    ingest.ingest(tmp_path / "src", tmp_path / "data", longest_side=None, masks=masks)
    mask = fileio.read_mask(datafolder.annotation_path(tmp_path / "data", "s0"))
    ignored = (mask == taxonomy.IGNORE_INDEX) & (truth != taxonomy.IGNORE_INDEX)
    assert 0 < ignored.mean() < decoding.MAX_UNMATCHED_SHARE  # the far edge pixels are ignored ...
    wrong = (mask != truth) & ~ignored
    assert wrong.mean() < 0.01  # ... and only a few, less smeared edge pixels land nearer another class


def test_a_mask_in_another_palette_is_refused_even_with_unmatched_as_background(tmp_path):
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, 32:] = far_from_the_palette()
    write_rows(tmp_path / "src" / "x.parquet", [row_with_mask("s0", fileio.encode_png(rgb))])
    with pytest.raises(ValueError, match=r"1536 pixels \(50%\) are that far, .*another palette"):
        ingest.ingest(tmp_path / "src", tmp_path / "data",
                      masks=decoding.MaskFormat(rgb=True, unmatched_background=True))


def far_from_the_palette() -> tuple[int, int, int]:
    palette = taxonomy.palette_array()[[*range(taxonomy.NUM_CLASSES), taxonomy.IGNORE_INDEX]].astype(float)
    grid = np.stack(np.meshgrid(*[np.arange(0, 256, 15)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(float)
    distance = np.linalg.norm(grid[:, None] - palette[None], axis=2).min(axis=1)
    return tuple(int(v) for v in grid[distance.argmax()])


def test_an_rgb_mask_colour_outside_the_palette_is_refused_naming_colour_and_pixel(tmp_path):
    rgb = taxonomy.mask_to_rgb(block_mask())
    colour = far_from_the_palette()
    rgb[3, 5] = colour
    write_rows(tmp_path / "src" / "x.parquet", [row_with_mask("s0", fileio.encode_png(rgb))])
    with pytest.raises(ValueError, match=rf"id 's0'\): annotation: colour \{re.escape(str(colour))[1:-2]}\) "
                                         rf"at \(x=5, y=3\) is not an ARTeFACT palette colour .*--palette-tolerance"):
        ingest.ingest(tmp_path / "src", tmp_path / "data", longest_side=None, masks=decoding.MaskFormat(rgb=True))


def test_same_aspect_size_mismatch_is_resized_with_nearest_neighbour_only_when_asked(tmp_path):
    small = block_mask(32, 24, classes=(0, 5))
    rows = [row_with_mask("s0", fileio.encode_png(small))]
    write_rows(tmp_path / "src" / "x.parquet", rows)
    with pytest.raises(ValueError, match=r"image is 64x48 but annotation is 32x24 \(width x height\): same aspect "
                                         r"ratio; pass --resize-masks"):
        ingest.ingest(tmp_path / "src", tmp_path / "data", longest_side=None)
    ingest.ingest(tmp_path / "src", tmp_path / "data", longest_side=None, masks=decoding.MaskFormat(resize=True))
    mask = fileio.read_mask(datafolder.annotation_path(tmp_path / "data", "s0"))
    np.testing.assert_array_equal(mask, np.kron(small, np.ones((2, 2), np.uint8)))  # exact 2x nearest


def test_a_different_aspect_ratio_is_refused_even_with_resize_masks(tmp_path):
    write_rows(tmp_path / "src" / "x.parquet", [row_with_mask("s0", fileio.encode_png(np.zeros((48, 48), np.uint8)))])
    with pytest.raises(ValueError, match=r"image is 64x48 but annotation is 48x48 .*aspect ratios differ"):
        ingest.ingest(tmp_path / "src", tmp_path / "data", masks=decoding.MaskFormat(resize=True))


def camera_jpeg(stored: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif)


def test_exif_orientation_is_applied_and_the_mask_compared_with_the_upright_size(tmp_path):
    stored = np.zeros((48, 64, 3), np.uint8)  # stored landscape 64x48; orientation 6 shows it portrait
    stored[:, :16] = 255
    jpeg = camera_jpeg(stored, 6)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(jpeg))).convert("RGB"))
    assert upright.shape == (64, 48, 3)
    mask = np.zeros((64, 48), np.uint8)
    mask[:16] = taxonomy.CLASS_IDS["Stamp"]  # the stored left band is the upright top band
    row = {**make_row("cam"), "image": {"bytes": jpeg, "path": "cam.jpg"},
           "annotation": {"bytes": fileio.encode_png(mask), "path": "cam.png"}}
    write_rows(tmp_path / "src" / "x.parquet", [row])
    ingest.ingest(tmp_path / "src", tmp_path / "data", longest_side=None)
    np.testing.assert_array_equal(fileio.read_rgb(datafolder.image_path(tmp_path / "data", "cam")), upright)
    assert (upright[:16, :, 0] > 200).all() and (upright[20:, :, 0] < 50).all()
    metadata = ingest.ingest(tmp_path / "src", tmp_path / "small", longest_side=32)
    assert (metadata["width"][0], metadata["height"][0]) == (24, 32)
    image = fileio.read_rgb(datafolder.image_path(tmp_path / "small", "cam"))
    small_mask = fileio.read_mask(datafolder.annotation_path(tmp_path / "small", "cam"))
    assert ((image[..., 0] > 128) == (small_mask == taxonomy.CLASS_IDS["Stamp"])).all()


def test_a_mask_of_the_unrotated_pixels_is_refused_naming_the_exif_orientation(tmp_path):
    row = {**make_row("cam"), "image": {"bytes": camera_jpeg(np.zeros((48, 64, 3), np.uint8), 6), "path": "c.jpg"},
           "annotation": {"bytes": fileio.encode_png(np.zeros((48, 64), np.uint8)), "path": "c.png"}}
    write_rows(tmp_path / "src" / "x.parquet", [row])
    with pytest.raises(ValueError, match=r"image is 48x64 but annotation is 64x48 .*EXIF orientation 6"):
        ingest.ingest(tmp_path / "src", tmp_path / "data")


def test_cli_mask_format_flags(tmp_path, capsys):
    truth = block_mask()
    write_rows(tmp_path / "src" / "x.parquet", [row_with_mask("s0", fileio.encode_png(taxonomy.mask_to_rgb(truth)))])
    base = ["data", "ingest", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "d"), "--longest-side", "0"]
    assert cli.main(base) == 2
    assert "--rgb-masks" in capsys.readouterr().err
    assert cli.main([*base, "--rgb-masks", "--palette-tolerance", "10"]) == 0
    np.testing.assert_array_equal(fileio.read_mask(datafolder.annotation_path(tmp_path / "d", "s0")), truth)
    assert cli.main([*base, "--binary-mask-class", "Dust", "--binary-threshold", "1"]) == 0
    assert set(np.unique(fileio.read_mask(datafolder.annotation_path(tmp_path / "d", "s0")))) == {0, 3}


# --- vocabulary (issue 10, item 13) ----------------------------------------------------------------


def test_names_outside_artefacts_vocabulary_warn_once_with_the_nearest_name(tmp_path):
    rows = [make_row("s0", material="film"), make_row("s1", seed=1, material="film", content="Photographic"),
            make_row("s2", seed=2)]
    with pytest.warns(vocabulary.VocabularyWarning) as caught:
        metadata = ingest_rows(tmp_path, rows)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert "material 'film' is not in ARTeFACT's vocabulary (did you mean 'Film emulsion'?)" in messages[0]
    assert "2 row(s), first " in messages[0]
    assert "row 0 (id 's0')" in messages[0] and "--strict" in messages[0]
    assert ("content 'Photographic' is not in ARTeFACT's vocabulary (did you mean 'Photographic depiction'?)"
            in messages[1])
    assert metadata["material"].tolist() == ["film", "film", "Paper"]  # warned, not rewritten


def test_strict_refuses_names_outside_the_vocabulary_naming_the_row(tmp_path):
    write_rows(tmp_path / "src" / "x.parquet", [make_row("s0"), make_row("s1", seed=1, material="canvas")])
    with pytest.raises(ValueError, match=r"row 1 \(id 's1'\): material 'canvas' is not in ARTeFACT's vocabulary "
                                         r"\(did you mean 'Canvas'\?\)"):
        ingest.ingest(tmp_path / "src", tmp_path / "data", checks=ingest.RowChecks(strict=True))
    assert not (tmp_path / "data" / "metadata.csv").exists()


def test_cli_prints_vocabulary_warnings_as_lines_and_strict_exits_2(tmp_path, capsys):
    write_rows(tmp_path / "src" / "x.parquet", [make_row("s0", material="Vellum")])
    base = ["data", "ingest", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "d")]
    assert cli.main(base) == 0
    err = capsys.readouterr().err
    assert "heritage data ingest: warning: material 'Vellum' is not in ARTeFACT's vocabulary" in err
    assert cli.main([*base, "--strict"]) == 2
    assert "heritage data ingest: " in capsys.readouterr().err


def test_the_vocabulary_has_one_home_used_by_synth():
    assert synth.MATERIALS is vocabulary.MATERIALS and synth.CONTENTS is vocabulary.CONTENTS
    assert {m for m, _ in synth.REFERENCE_PAIR_COUNTS} == set(vocabulary.MATERIALS)
    assert {c for _, c in synth.REFERENCE_PAIR_COUNTS} == set(vocabulary.CONTENTS)


# --- leftovers of killed runs (issue 10, item 7) --------------------------------------------------

KILL_ON_FIFTH_WRITE = """
import os, signal, sys
from heritage import fileio
from heritage.data import ingest
real, calls = fileio.write_png, []
def write_png(path, array, **options):
    calls.append(path)
    if len(calls) == 5:  # the third row's image: rows s0 and s1 are converted
        with fileio.atomic_path(path) as tmp:  # killed mid-write: the temporary stays too
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    real(path, array, **options)
fileio.write_png = write_png
ingest.ingest(sys.argv[1], sys.argv[2], longest_side=None)
"""


def test_a_killed_ingest_is_resumed_by_the_next_one_and_its_junk_removed(tmp_path):
    src = write_rows(tmp_path / "src" / "x.parquet", good_rows(3)).parent
    out = tmp_path / "data"
    result = subprocess.run([sys.executable, "-c", KILL_ON_FIFTH_WRITE, str(src), str(out)], capture_output=True)
    assert result.returncode == -signal.SIGKILL
    resume = out / ingest.RESUME_DIR
    assert list(resume.rglob("*.tmp")) and (out / locks.LOCK_FILE).is_file()  # the junk of a kill -9
    assert len((resume / ingest.JOURNAL_FILE).read_text().splitlines()) == 2
    with pytest.warns(ingest.ResumeNote, match="left 2 converted row"):
        ingest.ingest(src, out, longest_side=None)
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]
    ingest.ingest(src, tmp_path / "uninterrupted", longest_side=None)
    assert folder_snapshot(out) == folder_snapshot(tmp_path / "uninterrupted")


def test_a_running_ingests_staging_folder_is_kept(tmp_path):
    src = write_rows(tmp_path / "src" / "x.parquet", good_rows(1)).parent
    out = tmp_path / "data"
    out.mkdir()
    # a staging folder owned by this (live) process, e.g. an ingest running in another thread
    alive = Path(tempfile.mkdtemp(prefix=f"{ingest.STAGING_PREFIX}{fileio.owner_tag()}-", dir=out))
    # one from another host (shared file system): kept while recent, removed once stale
    recent = out / ".ingest-123@elsewhere.example-abcd1234"
    stale = out / ".ingest-456@elsewhere.example-efgh5678"
    legacy = out / ".ingest-ijkl9012"  # written before owners were recorded
    unrelated = out / ".ingest-notes"
    # a live pid whose folder nobody touched for hours: the dead owner's pid was reused
    reused = out / f".ingest-{fileio.owner_tag()}-mnop3456"
    for folder in (recent, stale, legacy, unrelated, reused):
        (folder / "images").mkdir(parents=True)
    old = time.time() - fileio.STALE_AFTER_S - 60
    for folder in (stale, legacy, reused):
        for path in (folder / "images", folder):
            os.utime(path, (old, old))
    ingest.ingest(src, out, longest_side=None)
    assert alive.is_dir() and recent.is_dir() and unrelated.is_dir()
    assert not stale.exists() and not legacy.exists() and not reused.exists()


def test_indexed_masks_read_class_ids_from_a_colour_palette_and_grey_levels_from_a_grey_one(tmp_path):
    truth = block_mask(classes=(0, 3, 7, 255))
    voc = Image.fromarray(truth, mode="L").convert("P")  # index = class id, colour palette (VOC style)
    voc.putpalette(taxonomy.palette_array().ravel().tolist())
    order = [255, 7, 3, 0]  # a grey palette in another order, as PNG optimisers write greyscale
    grey = Image.fromarray(np.select([truth == v for v in order], [0, 1, 2, 3]).astype(np.uint8), mode="L").convert("P")
    grey.putpalette([c for v in order for c in (v, v, v)])
    write_rows(tmp_path / "src" / "x.parquet", [row_with_mask("voc", encode(voc, "PNG")),
                                                 row_with_mask("grey", encode(grey, "PNG"))])
    for sample_id in ("voc", "grey"):
        assert Image.open(io.BytesIO(shard_rows(tmp_path / "src")[sample_id]["annotation"]["bytes"])).mode == "P"
    ingest.ingest(tmp_path / "src", tmp_path / "data", longest_side=None)
    for sample_id in ("voc", "grey"):
        np.testing.assert_array_equal(fileio.read_mask(datafolder.annotation_path(tmp_path / "data", sample_id)), truth)


def test_a_pyramidal_tiff_is_read_from_its_smallest_sufficient_level(tmp_path):
    import tifffile

    export = tmp_path / "export"
    (export / "images").mkdir(parents=True)
    full = np.full((1024, 2048, 3), 40, np.uint8)
    # the levels are told apart by their grey: which one ingest read shows in its output
    with tifffile.TiffWriter(export / "images" / "scan.tif") as tiff:
        tiff.write(full, subifds=2, photometric="rgb", tile=(256, 256))
        tiff.write(np.full((512, 1024, 3), 120, np.uint8), subfiletype=1, photometric="rgb", tile=(256, 256))
        tiff.write(np.full((256, 512, 3), 200, np.uint8), subfiletype=1, photometric="rgb", tile=(256, 256))
    fileio.write_png(datafolder.annotation_path(export, "scan"), np.zeros((1024, 2048), np.uint8))
    pd.DataFrame({"id": ["scan"], "material": ["Paper"], "content": ["Line art"],
                  "image_path": ["images/scan.tif"]}).to_csv(export / "metadata.csv", index=False)
    for longest_side, grey in ((512, 200), (600, 120), (None, 40)):
        out = tmp_path / f"data{longest_side}"
        metadata = ingest.ingest(export, out, longest_side=longest_side)
        image = fileio.read_rgb(datafolder.image_path(out, "scan"))
        assert image.shape == (metadata["height"][0], metadata["width"][0], 3)
        assert (image == grey).all(), longest_side


OUT_OF_MEMORY = """
import resource, sys
from heritage.data import ingest
vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (300 << 20), resource.RLIM_INFINITY))  # 300 MB more
try:
    ingest.ingest(sys.argv[1], sys.argv[2], longest_side=None)
except ValueError as err:
    print(err)
"""


def valid_png(width: int, height: int, bit_depth: int = 1) -> bytes:
    """A valid all-black greyscale PNG, streamed: a few kB for any size (decoding it is what costs)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width * bit_depth + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_running_out_of_memory_on_an_admitted_scan_names_the_row(tmp_path):
    # 144 Mpx passes the default limit; as RGB it needs 432 MB, more than the child may allocate
    row = with_image(make_row("huge"), "image", valid_png(12000, 12000))
    row = with_image(row, "annotation", valid_png(12000, 12000, bit_depth=8))
    src = write_rows(tmp_path / "src" / "x.parquet", [make_row("s0"), row]).parent
    result = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY, str(src), str(tmp_path / "data")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "row 1 (id 'huge'): not enough memory to decode its 12000x12000 = 144,000,000 pixel image" in result.stdout
    assert "--max-pixels" in result.stdout
