"""``python -m heritage data synth``: the command line over the shard writer.

Its options map one to one onto :func:`heritage.data.synthetic.shards.write_parquet`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from heritage.data.synthetic.shards import write_parquet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (shards go to OUT/data/)")
    parser.add_argument("--n-images", type=int, default=417, help="number of images (default: 417)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--longest-side", type=int, default=512, help="longest image side in px (default: 512)")
    parser.add_argument("--shard-size", type=int, default=16, help="rows per parquet shard (default: 16)")


def main(args: argparse.Namespace) -> int:
    paths = write_parquet(args.out, args.n_images, args.seed, args.longest_side, args.shard_size)
    print(f"wrote {args.n_images} images in {len(paths)} shards to {Path(args.out) / 'data'}")
    return 0
