"""heritage.ingest: parquet shards and exported folders -> data folder, and every bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import N_SYNTHETIC_IMAGES, PARQUET_SCHEMA, SYNTHETIC_LONGEST_SIDE, make_row, write_rows

from heritage import cli, fileio, ingest, taxonomy


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
    assert list(metadata.columns) == list(ingest.METADATA_COLUMNS)
    assert len(metadata) == N_SYNTHETIC_IMAGES
    assert (metadata["source_id"] == metadata["id"]).all()
    assert (metadata["transform"] == "identity").all()
    assert (np.maximum(metadata["width"], metadata["height"]) == 48).all()
    pd.testing.assert_frame_equal(ingest.read_metadata(tmp_path / "data"), metadata)
    originals = shard_rows(synthetic_parquet)
    for row in metadata.itertuples():
        image = fileio.read_rgb(ingest.image_path(tmp_path / "data", row.id))
        mask = fileio.read_mask(ingest.annotation_path(tmp_path / "data", row.id))
        assert image.shape == (row.height, row.width, 3) and mask.shape == (row.height, row.width)
        original_mask = fileio.read_mask(originals[row.id]["annotation"]["bytes"])
        # nearest neighbour: the resized mask only holds ids of the original, never blends
        assert set(np.unique(mask)) <= set(np.unique(original_mask))
        assert row.material == originals[row.id]["material"] and row.content == originals[row.id]["content"]


def test_ingest_never_upscales_and_keeps_pixels_when_no_resize_is_needed(synthetic_parquet, tmp_path):
    metadata = ingest.ingest(synthetic_parquet, tmp_path / "data", longest_side=SYNTHETIC_LONGEST_SIDE * 4)
    row = shard_rows(synthetic_parquet)[metadata["id"][0]]
    np.testing.assert_array_equal(fileio.read_rgb(ingest.image_path(tmp_path / "data", row["id"])),
                                  fileio.read_rgb(row["image"]["bytes"]))
    np.testing.assert_array_equal(fileio.read_mask(ingest.annotation_path(tmp_path / "data", row["id"])),
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
    assert ingest.read_metadata(tmp_path / "d")["width"].max() == 32


# --- the folder route ----------------------------------------------------------------------------


def test_ingest_from_an_exported_folder_keeps_originals_only(data_dir, tmp_path):
    metadata = ingest.ingest(data_dir, tmp_path / "again", longest_side=None)  # data_dir is augmented
    assert len(metadata) == N_SYNTHETIC_IMAGES
    assert not metadata["id"].str.contains("__").any()
    sample = metadata["id"][5]
    assert (ingest.image_path(tmp_path / "again", sample).read_bytes()
            == ingest.image_path(data_dir, sample).read_bytes())


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
        fileio.write_bytes(ingest.image_path(folder, row["id"]), row["image"]["bytes"])
        fileio.write_bytes(ingest.annotation_path(folder, row["id"]), row["annotation"]["bytes"])
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
    ingest.annotation_path(folder, "s1").unlink()
    with pytest.raises(FileNotFoundError, match=r"annotations/s1\.png"):
        ingest.ingest(folder, tmp_path / "data")


def test_export_bad_mask_values_name_the_file(tmp_path):
    folder = export_folder(tmp_path, good_rows(2))
    fileio.write_png(ingest.annotation_path(folder, "s1"), np.full((32, 48), 42, np.uint8))
    with pytest.raises(ValueError, match=r"annotations/s1\.png: mask values \[42\]"):
        ingest.ingest(folder, tmp_path / "data")


def test_export_size_mismatch(tmp_path):
    folder = export_folder(tmp_path, good_rows(1))
    fileio.write_png(ingest.annotation_path(folder, "s0"), np.zeros((30, 48), np.uint8))
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
    with pytest.raises(ValueError, match=r"id 'bad'\): annotation: mask values \[16\]"):
        ingest_rows(tmp_path, rows)


def test_colour_mask_is_refused(tmp_path):
    rows = good_rows(1)
    rgb = taxonomy.mask_to_rgb(fileio.read_mask(rows[0]["annotation"]["bytes"]))
    rows[0] = with_image(rows[0], "annotation", fileio.encode_png(rgb))
    with pytest.raises(ValueError, match="single-channel 8-bit, got mode RGB"):
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
    with pytest.raises(ValueError, match=r"row 3 \(id 's3'\)"):
        ingest_rows(tmp_path, rows)
    assert folder_snapshot(tmp_path / "data") == before
    assert not [p for p in (tmp_path / "data").rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_read_metadata_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"metadata\.csv: file not found \(run `python -m heritage data"):
        ingest.read_metadata(tmp_path)
    ingest_rows(tmp_path, good_rows(2))
    table = pd.read_csv(tmp_path / "data" / "metadata.csv")
    table.drop(columns="source_id").to_csv(tmp_path / "data" / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['source_id'\]"):
        ingest.read_metadata(tmp_path / "data")
    table.assign(width=[48, -1]).to_csv(tmp_path / "data" / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"column 'width' is not a positive integer for id\(s\) \['s1'\]"):
        ingest.read_metadata(tmp_path / "data")
    table.assign(source_id=["s0", "gone"]).to_csv(tmp_path / "data" / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"source_id\(s\) \['gone'\] have no original"):
        ingest.read_metadata(tmp_path / "data")


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
