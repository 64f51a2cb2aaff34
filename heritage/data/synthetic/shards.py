"""Writing the synthetic dataset as HF-style parquet shards (the schema, the rows, atomic shards).

The only module of the package that touches the file system; the rows carry PNG bytes of the image,
the id mask and its RGB rendering.
"""

from __future__ import annotations

import json
import math
import os
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from heritage import errors, fileio
from heritage.data import taxonomy
from heritage.data.synthetic.metadata import damage_description, object_type
from heritage.data.synthetic.plan import SamplePlan, _check_positive, plan_dataset
from heritage.data.synthetic.render import render_plan

_IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PARQUET_SCHEMA = pa.schema([
    ("id", pa.string()), ("image", _IMAGE_STRUCT), ("annotation", _IMAGE_STRUCT),
    ("annotation_rgb", _IMAGE_STRUCT), ("material", pa.string()), ("content", pa.string()),
    ("type", pa.string()), ("damage_description", pa.string()),
]).with_metadata({"huggingface": json.dumps({"info": {"features": {
    "id": {"dtype": "string", "_type": "Value"}, "image": {"_type": "Image"},
    "annotation": {"_type": "Image"}, "annotation_rgb": {"_type": "Image"},
    "material": {"dtype": "string", "_type": "Value"}, "content": {"dtype": "string", "_type": "Value"},
    "type": {"dtype": "string", "_type": "Value"},
    "damage_description": {"dtype": "string", "_type": "Value"},
}}})})


def _row(plan: SamplePlan, seed: int) -> dict[str, object]:
    image, mask = render_plan(plan, seed)
    present = [taxonomy.CLASS_NAMES[i] for i in np.unique(mask) if 0 < i < taxonomy.NUM_CLASSES]
    kind = object_type(plan.material, plan.content)
    # Fast zlib level: encoding is half the generation time at the default level, and PNG stays lossless.
    encode = partial(fileio.encode_png, compress_level=1)
    return {
        "id": plan.id,
        "image": {"bytes": encode(image), "path": f"images/{plan.id}.png"},
        "annotation": {"bytes": encode(mask), "path": f"annotations/{plan.id}.png"},
        "annotation_rgb": {"bytes": encode(taxonomy.mask_to_rgb(mask)),
                           "path": f"annotations_rgb/{plan.id}.png"},
        "material": plan.material,
        "content": plan.content,
        "type": kind,
        "damage_description": damage_description(kind, present),
    }


def write_parquet(out_dir: str | os.PathLike, n_images: int = 417, seed: int = 0,
                  longest_side: int = 512, shard_size: int = 16, progress: bool = True) -> list[Path]:
    """Write the synthetic dataset as HF-style shards ``out_dir/data/train-*.parquet``.

    One shard's rows are held in memory at a time and each shard is written atomically. Shards of a
    different earlier write in the same folder are refused rather than mixed in.
    """
    _check_positive(n_images=n_images, longest_side=longest_side, shard_size=shard_size)
    if longest_side < 32:
        raise errors.InputError(f"longest_side must be at least 32 px, got {longest_side}")
    plans = plan_dataset(n_images, seed, longest_side)
    n_shards = math.ceil(n_images / shard_size)
    data_dir = Path(out_dir) / "data"
    try:  # before generating anything: --out may be a file or not writable
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise errors.OutputError(f"{data_dir}: cannot create the output folder ({err.strerror or err})") from None
    paths = [data_dir / f"train-{i:05d}-of-{n_shards:05d}.parquet" for i in range(n_shards)]
    foreign = sorted(p.name for p in data_dir.glob("*.parquet") if p not in paths)
    if foreign:
        raise errors.OutputExistsError(f"{data_dir}: holds other parquet shards ({', '.join(foreign[:3])}...); "
                              "write into an empty folder so datasets are not mixed")
    with tqdm(total=n_images, desc="synth", unit="img", disable=not progress) as bar:
        for shard_index, path in enumerate(paths):
            rows = []
            for plan in plans[shard_index * shard_size:(shard_index + 1) * shard_size]:
                rows.append(_row(plan, seed))
                bar.update(1)
            table = pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA)
            with fileio.atomic_path(path) as tmp:
                pq.write_table(table, tmp)
    return paths
